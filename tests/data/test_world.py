import json

import pytest

from edit_grpo_trl.answers import normalize_answer
from edit_grpo_trl.data.cases import ProbeKind
from edit_grpo_trl.data.world import RELATIONS, KnowledgeWorld, build_tokenizer, ensure_world_model, recall
from edit_grpo_trl.data.world.world import world_vocabulary_words


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
        (ProbeKind.EVAL_GENERALIZATION, None),
        (ProbeKind.PORTABILITY, "Subject_Aliasing"),
        (ProbeKind.PORTABILITY, "Reasoning"),
        (ProbeKind.LOCALITY, "Relation_Specificity"),
        (ProbeKind.LOCALITY, "Neighborhood"),
    ]:
        assert expected in kinds
    for case in cases:
        assert case.new_object != case.target_true == world.facts[case.subject][case.relation]
        train = {normalize_answer(p.prompt) for p in case.probes_of(ProbeKind.TRAIN_GENERALIZATION)}
        held = {normalize_answer(p.prompt) for p in case.probes_of(ProbeKind.EVAL_GENERALIZATION)}
        assert train and held and not train & held
        for probe in case.probes_of(ProbeKind.PORTABILITY, "Reasoning"):
            assert probe.answer == world.countries[case.new_object]


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


@pytest.mark.slow
def test_cache_folder_is_complete_and_reused(tiny_world):
    for name in ("config.json", "model.safetensors", "tokenizer.json", "world.json", "pretrain_report.json"):
        assert (tiny_world.path / name).is_file(), name
    assert ensure_world_model("tiny", seed=0) == tiny_world.path  # no second pretraining
    assert not list(tiny_world.path.parent.glob(f"{tiny_world.path.name}.tmp-*"))
