import json

import pytest

from edit_grpo_trl.answers import normalize_answer
from edit_grpo_trl.data.cases import EVALUATION_KINDS, ProbeKind
from edit_grpo_trl.data.facts.cases import NEIGHBORHOOD, REASONING, RELATION_SPECIFICITY, SUBJECT_ALIASING
from edit_grpo_trl.world import (
    RELATIONS,
    KnowledgeWorld,
    alias_recall,
    build_tokenizer,
    cache_key,
    ensure_world_model,
    recall,
)
from edit_grpo_trl.world.model import recall_splits
from edit_grpo_trl.world.world import (
    FORMAT_VERSION,
    HELDOUT_KEYS,
    LOCALITY_PER_CASE,
    RANDOM,
    RELATION_BY_NAME,
    TRAIN_LOCALITY_PER_CASE,
    TWO_HOP,
    world_vocabulary_words,
)


def test_generation_is_deterministic_per_seed():
    a, b = KnowledgeWorld.generate("tiny", 0), KnowledgeWorld.generate("tiny", 0)
    assert a == b
    assert KnowledgeWorld.generate("tiny", 1).facts != a.facts


def test_names_are_unique_and_never_other_words():
    world = KnowledgeWorld.generate("tiny", 3)
    names = world.people + list(world.aliases.values())
    assert len({n.lower() for n in names}) == len(names)
    vocabulary = {w.lower() for w in world_vocabulary_words()}
    assert not vocabulary & {n.lower() for n in names}


def test_template_splits_are_disjoint_and_all_pretrained():
    world = KnowledgeWorld.generate("tiny", 0)
    corpus = set(world.corpus())
    person = world.people[0]
    for relation in RELATIONS:
        assert len(set(relation.templates)) == len(relation.templates) >= 8
        assert relation.anchor not in relation.train and not set(relation.train) & set(relation.heldout)
        for template in relation.templates:  # every template, held-out ones included, is in pretraining
            assert f"{template.replace('{s}', person)} {world.facts[person][relation.name]} ." in corpus


def test_edit_cases_have_every_probe_kind_and_keep_training_apart():
    world = KnowledgeWorld.generate("tiny", 0)
    cases = world.edit_cases(num_cases=12, seed=1)
    assert len({c.subject for c in cases}) == 12 and len({c.case_id for c in cases}) == 12
    kinds = {(p.kind, p.key) for c in cases for p in c.probes}
    for expected in [
        (ProbeKind.TRAIN_GENERALIZATION, None),
        (ProbeKind.EVAL_GENERALIZATION, "reply"),
        (ProbeKind.PORTABILITY, SUBJECT_ALIASING),
        (ProbeKind.PORTABILITY, REASONING),
        (ProbeKind.LOCALITY, RELATION_SPECIFICITY),
        (ProbeKind.LOCALITY, NEIGHBORHOOD),
        (ProbeKind.LOCALITY, RANDOM),
        (ProbeKind.TRAIN_LOCALITY, NEIGHBORHOOD),
        (ProbeKind.TRAIN_LOCALITY, RANDOM),
    ]:
        assert expected in kinds
    for case in cases:
        assert case.new_object != case.target_true == world.facts[case.subject][case.relation]
        train = {normalize_answer(p.prompt) for p in case.probes_of(ProbeKind.TRAIN_GENERALIZATION)}
        held = {normalize_answer(p.prompt) for p in case.probes_of(ProbeKind.EVAL_GENERALIZATION)}
        assert train and held and not train & held
        for probe in case.probes_of(ProbeKind.PORTABILITY, REASONING):
            assert probe.answer == world.countries[case.new_object]
    assert world.edit_cases(num_cases=12, seed=1) == cases  # deterministic


def _fact_prompts(world, facts) -> set[str]:
    """Every prompt (any template, the alias too) that asks one of these (person, relation) facts."""
    prompts = set()
    for person, relation in facts:
        names = [person] + ([world.aliases[person]] if person in world.aliases else [])
        prompts |= {t.replace("{s}", n) for t in RELATION_BY_NAME[relation].templates for n in names}
    return prompts


# a small draw (locality from people no case edits) and the largest one (every editable person is a subject)
@pytest.mark.parametrize(("num_cases", "seed"), [(12, 1), (56, 2)])
def test_locality_never_asks_an_edited_fact_and_training_locality_is_apart(num_cases, seed):
    world = KnowledgeWorld.generate("tiny", 0)
    cases = world.edit_cases(num_cases=num_cases, seed=seed)
    edited = _fact_prompts(world, [(c.subject, c.relation) for c in cases])
    anchors = {c.prompt for c in cases}
    evaluated = {p.prompt for c in cases for kind in EVALUATION_KINDS for p in c.probes_of(kind)}
    trained = [p for c in cases for p in c.probes_of(ProbeKind.TRAIN_LOCALITY)]
    reserved = set(world.reserved)
    assert reserved and not reserved & {c.subject for c in cases}
    for case in cases:
        assert len(case.probes_of(ProbeKind.TRAIN_LOCALITY)) == TRAIN_LOCALITY_PER_CASE
        for probe in case.probes_of(ProbeKind.LOCALITY) + case.probes_of(ProbeKind.TRAIN_LOCALITY):
            assert probe.prompt not in edited, (case.case_id, probe)  # another case's anchor included
            person = probe.prompt.split()[0]
            relation = next(r for r in RELATIONS if probe.prompt == r.anchor.replace("{s}", person))
            assert probe.answers == (world.facts[person][relation.name],)  # the true, unedited fact
    # the pool the locality loss trains on: reserved people only, in no evaluation probe of any case
    assert {p.prompt.split()[0] for p in trained} <= reserved
    assert not {p.prompt for p in trained} & (evaluated | anchors)
    assert not any(name in prompt.split() for prompt in evaluated | anchors for name in reserved)


@pytest.mark.parametrize(("num_cases", "seed"), [(20, 0), (56, 3)])
def test_each_case_evaluates_twenty_locality_probes_of_three_types(num_cases, seed):
    world = KnowledgeWorld.generate("tiny", 0)
    for case in world.edit_cases(num_cases=num_cases, seed=seed):
        locality = case.probes_of(ProbeKind.LOCALITY)
        assert len(locality) >= LOCALITY_PER_CASE >= 20
        assert len({p.prompt for p in locality}) == len(locality)
        assert {p.key for p in locality} == {NEIGHBORHOOD, RELATION_SPECIFICITY, RANDOM}
        anchor = RELATION_BY_NAME[case.relation].anchor
        for probe in locality:
            person = probe.prompt.split()[0]
            same_relation = probe.prompt == anchor.replace("{s}", person)
            assert (person == case.subject) == (probe.key == RELATION_SPECIFICITY)
            assert same_relation == (probe.key == NEIGHBORHOOD)


def test_heldout_templates_are_keyed_and_most_do_not_end_with_the_anchor():
    world = KnowledgeWorld.generate("tiny", 0)
    for relation in RELATIONS:
        assert list(relation.heldout_by_key) == list(HELDOUT_KEYS)
        ending = relation.ends_with_anchor()
        assert ending == [key for key in HELDOUT_KEYS if key.endswith("_anchor")], relation.name
        assert len(HELDOUT_KEYS) - len(ending) >= 4
    for case in world.edit_cases(num_cases=8, seed=0):
        relation = RELATION_BY_NAME[case.relation]
        keyed = {p.key: p.prompt for p in case.probes_of(ProbeKind.EVAL_GENERALIZATION)}
        assert list(keyed) == list(HELDOUT_KEYS) == case.metadata["heldout_keys"]
        assert list(keyed.values()) == [  # in the order facts/recall.py reads the templates
            t.replace("{s}", case.subject) for t in case.metadata["templates"]["heldout"]
        ]
        for key, prompt in keyed.items():
            assert prompt == relation.heldout_by_key[key].replace("{s}", case.subject)
            assert prompt.endswith(case.prompt) == (key in case.metadata["heldout_ending_with_anchor"])


def test_two_hop_is_stated_for_part_of_the_people_and_probed_only_for_the_rest():
    world = KnowledgeWorld.generate("tiny", 0)
    stated = set(world.two_hop_stated)
    assert 0 < len(stated) < len(world.people)
    corpus = set(world.corpus())
    for person in world.people:
        sentence = f"{TWO_HOP.replace('{s}', person)} {world.country_of_birth(person)} ."
        assert (sentence in corpus) == (person in stated)
    probed = 0
    for seed in range(4):
        for case in world.edit_cases(num_cases=40, seed=seed):
            if case.relation != "birth_city":
                continue
            old_country, new_country = world.countries[case.target_true], world.countries[case.new_object]
            assert new_country != old_country and case.metadata["two_hop_true"] == [old_country]
            reasoning = case.probes_of(ProbeKind.PORTABILITY, REASONING)
            assert len(reasoning) == (case.subject not in stated)
            probed += len(reasoning)
    assert probed >= 30  # birth_city cases go to people whose two-hop fact is unstated
    assert {p for p, _ in world.recall_prompts("two_hop")}.isdisjoint(
        p for p, _ in world.recall_prompts("two_hop_stated")
    )


def test_recall_splits_cover_every_alias_form_and_heldout_key():
    world = KnowledgeWorld.generate("tiny", 0)
    aliased = len(world.aliases) * len(RELATIONS)
    assert world.recall_prompts("alias") == world.recall_prompts("alias:anchor")
    assert len(world.recall_prompts("alias:paraphrase")) == aliased
    assert all(world.aliases[world.people[0]] not in p for p, _ in world.recall_prompts("heldout:reply"))
    case_alias_prompts = {
        p.prompt
        for c in world.edit_cases(20, 0)
        for p in c.probes_of(ProbeKind.PORTABILITY, SUBJECT_ALIASING)
    }
    measured = {
        p for split in recall_splits() if split.startswith("alias:") for p, _ in world.recall_prompts(split)
    }
    assert case_alias_prompts <= measured  # every alias probe form has its pre-edit recall measured
    with pytest.raises(ValueError, match="unknown recall split"):
        world.recall_prompts("heldout:nothing")


def test_cache_key_names_the_format_and_follows_the_corpus(monkeypatch):
    key = cache_key("tiny", 0)
    assert key.startswith(f"tiny-seed0-v{FORMAT_VERSION}-") and key != cache_key("tiny", 1)
    corpus = KnowledgeWorld.corpus
    monkeypatch.setattr(KnowledgeWorld, "corpus", lambda self: [*corpus(self), "one more sentence ."])
    assert cache_key("tiny", 0) != key  # other text, another model


def test_tokenizer_round_trips_prompts_and_renders_chat():
    world = KnowledgeWorld.generate("tiny", 0)
    tokenizer = build_tokenizer(world)
    for sentence in world.corpus()[:50]:
        ids = tokenizer(sentence, add_special_tokens=False)["input_ids"]
        assert tokenizer.unk_token_id not in ids
        assert tokenizer.decode(ids) == sentence
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Where was X born ?"}], tokenize=False, add_generation_prompt=True
    )
    assert rendered.startswith("user : Where was X born ?") and rendered.endswith("assistant :")


def test_save_load_round_trip(tmp_path):
    world = KnowledgeWorld.generate("tiny", 2)
    world.save(tmp_path)
    assert KnowledgeWorld.load(tmp_path) == world
    with pytest.raises(FileNotFoundError, match="no knowledge world"):
        KnowledgeWorld.load(tmp_path / "absent")


def test_unknown_size_is_named():
    with pytest.raises(ValueError, match="sizes: tiny, small, medium"):
        ensure_world_model("huge")


@pytest.mark.slow
def test_tiny_world_recalls_its_facts_through_heldout_templates(tiny_world):
    report = json.loads((tiny_world.path / "pretrain_report.json").read_text())
    assert report["recall"]["heldout"] >= 0.95
    # measured again here, from the saved model, not only trusted from the report
    assert recall(tiny_world.model, tiny_world.tokenizer, tiny_world.world, "heldout") >= 0.95
    assert recall(tiny_world.model, tiny_world.tokenizer, tiny_world.world, "alias") >= 0.9
    measured = alias_recall(tiny_world.model, tiny_world.tokenizer, tiny_world.world)
    assert set(measured) == {"anchor", "paraphrase"} and measured["anchor"] >= 0.9
    assert all(abs(share - report["recall"][f"alias:{form}"]) <= 0.02 for form, share in measured.items())


@pytest.mark.slow
def test_cache_folder_is_complete_and_reused(tiny_world):
    for name in ("config.json", "model.safetensors", "tokenizer.json", "world.json", "pretrain_report.json"):
        assert (tiny_world.path / name).is_file(), name
    assert ensure_world_model("tiny", seed=0) == tiny_world.path  # no second pretraining
    assert not list(tiny_world.path.parent.glob(f"{tiny_world.path.name}.tmp-*"))
