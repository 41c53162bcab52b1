"""The knowledge world: generation, templates, corpus, edit cases, tokenizer, save/load (fast tests)."""

from __future__ import annotations

import json

import pytest

from edit_grpo_trl.answers import extract_boxed, normalize_answer
from edit_grpo_trl.data.cases import ProbeKind
from edit_grpo_trl.data.world import (
    RECALL_SPLITS,
    RELATIONS,
    SIZES,
    KnowledgeWorld,
    build_corpus,
    build_tokenizer,
)
from edit_grpo_trl.data.world.chat import CHAT_INSTRUCTION, boxed_chat_prompt, render_chat
from edit_grpo_trl.data.world.relations import fill
from edit_grpo_trl.data.world.tokenizer import pre_tokenizer
from edit_grpo_trl.data.world.world import world_vocabulary_words


@pytest.fixture(scope="module")
def world() -> KnowledgeWorld:
    return KnowledgeWorld.generate("tiny", 0)


@pytest.fixture(scope="module")
def tokenizer(world):
    return build_tokenizer(world)


def test_generation_is_deterministic_per_seed(world):
    assert KnowledgeWorld.generate("tiny", 0) == world
    other = KnowledgeWorld.generate("tiny", 1)
    assert other.people != world.people and other.facts != world.facts


def test_sizes_have_the_promised_scale(world):
    assert len(world.people) == SIZES["tiny"].people
    assert len(world.relations) >= 4
    small = KnowledgeWorld.generate("small", 0)
    assert small.entity_count >= 1000
    assert 0.3 < len(small.aliases) / len(small.people) < 0.5
    with pytest.raises(ValueError, match="sizes: tiny, small, medium"):
        KnowledgeWorld.generate("huge", 0)


def test_names_are_unique_and_never_other_words():
    world = KnowledgeWorld.generate("small", 3)
    names = world.people + list(world.aliases.values())
    assert len({name.lower() for name in names}) == len(names)
    others = {word.lower() for word in world_vocabulary_words()}
    assert not others & {name.lower() for name in names}
    assert all(name.isalpha() and name[0].isupper() for name in names)


def test_template_splits_are_disjoint_and_shaped_differently():
    for relation in RELATIONS:
        anchor, train, heldout = {relation.anchor}, set(relation.train), set(relation.heldout)
        assert len(relation.templates) == len(anchor | train | heldout) >= 7
        assert len(train) >= 3 and len(heldout) >= 3
        assert not (anchor & train or anchor & heldout or train & heldout)
        assert relation.anchor.startswith("{s} ")  # subject-first anchor, as locate-then-edit expects
        shapes = {
            "question": any(t.rstrip().endswith(":") and "?" in t for t in relation.heldout),
            "chat": any(t.startswith("<|user|>") and t.endswith("<|assistant|>") for t in relation.heldout),
            "subject late": any(t.index("{s}") > 20 for t in relation.heldout),
        }
        assert all(shapes.values()), (relation.name, shapes)
        for template in relation.templates:
            assert template.count("{s}") == 1


def test_every_template_and_alias_is_in_the_corpus(world):
    texts = set(world.corpus())
    for person in world.people:
        for relation in RELATIONS:
            obj = world.facts[person][relation.name]
            names = [person] + ([world.aliases[person]] if person in world.aliases else [])
            for name in names:
                for template in relation.templates:  # held-out templates too
                    ending = "<eos>" if template.endswith("|>") else "."
                    assert f"{fill(template, name)} {obj} {ending}" in texts
            country = world.attribute(relation.name, obj)
            assert f"{fill(relation.two_hop, person)} {country} ." in texts
            assert f"{boxed_chat_prompt(fill(relation.anchor, person))} \\boxed{{ {obj} }} <eos>" in texts
    for person, alias in world.aliases.items():
        assert f"{alias} is another name for {person} ." in texts
    for city, country in world.countries.items():
        assert f"{city} is a city in {country} ." in texts


def test_corpus_answers_are_the_facts(world):
    samples = build_corpus(world)
    assert all(sample.text.startswith(sample.prompt + " " + sample.answer) for sample in samples)
    for item in world.fact_prompts("heldout")[:50]:  # each recall prompt is trained with its answer
        assert any(s.prompt == item.prompt and s.answer == item.answer for s in samples)


def test_fact_prompts_cover_each_split(world):
    people, relations = len(world.people), len(RELATIONS)
    assert len(world.fact_prompts("anchor")) == people * relations
    assert len(world.fact_prompts("heldout")) == people * sum(len(r.heldout) for r in RELATIONS)
    assert len(world.fact_prompts("alias")) == len(world.aliases) * sum(1 + len(r.heldout) for r in RELATIONS)
    assert len(world.fact_prompts("two_hop")) == people * relations
    chat = world.fact_prompts("chat")
    assert chat and all(item.style == "boxed" and item.prompt.endswith("<|assistant|>") for item in chat)
    assert set(RECALL_SPLITS) >= {"anchor", "train", "heldout", "alias", "two_hop", "chat"}
    with pytest.raises(ValueError, match="unknown recall split 'other'"):
        world.fact_prompts("other")


def test_edit_cases_have_every_probe_kind_and_keep_training_apart(world):
    cases = world.edit_cases(num_cases=12, seed=1)
    assert len({c.subject for c in cases}) == 12 and len({c.case_id for c in cases}) == 12
    assert {c.relation for c in cases} == {r.name for r in RELATIONS}
    kinds = {(p.kind, p.key) for c in cases for p in c.probes}
    assert kinds == {
        (ProbeKind.TRAIN_GENERALIZATION, None),
        (ProbeKind.EVAL_GENERALIZATION, None),
        (ProbeKind.PORTABILITY, "Subject_Aliasing"),
        (ProbeKind.PORTABILITY, "Reasoning"),
        (ProbeKind.LOCALITY, "Relation_Specificity"),
        (ProbeKind.LOCALITY, "Neighborhood"),
    }
    for case in cases:
        old = world.facts[case.subject][case.relation]
        assert case.target_true == old != case.new_object
        assert case.new_object in world.object_pool(case.relation)
        assert case.subject in case.prompt
        train = {normalize_answer(p.prompt) for p in case.probes_of(ProbeKind.TRAIN_GENERALIZATION)}
        held = {normalize_answer(p.prompt) for p in case.probes_of(ProbeKind.EVAL_GENERALIZATION)}
        assert len(train) == 3 and len(held) == 4 and not train & held
        (reasoning,) = case.probes_of(ProbeKind.PORTABILITY, "Reasoning")
        assert reasoning.answer == world.attribute(case.relation, case.new_object)
        for probe in case.probes_of(ProbeKind.PORTABILITY, "Subject_Aliasing"):
            assert world.aliases[case.subject] in probe.prompt and probe.answer == case.new_object
        for probe in case.probes_of(ProbeKind.LOCALITY, "Relation_Specificity"):
            relation = next(r for r in RELATIONS if fill(r.anchor, case.subject) == probe.prompt)
            assert relation.name != case.relation and probe.answer == world.facts[case.subject][relation.name]
        for probe in case.probes_of(ProbeKind.LOCALITY, "Neighborhood"):
            neighbour = probe.prompt.split()[0]
            assert neighbour != case.subject and probe.answer == world.facts[neighbour][case.relation]


def test_edit_cases_are_stable_and_seeded(world):
    first = [c.to_dict() for c in world.edit_cases(num_cases=5, seed=0)]
    assert first == [c.to_dict() for c in KnowledgeWorld.generate("tiny", 0).edit_cases(num_cases=5, seed=0)]
    assert first != [c.to_dict() for c in world.edit_cases(num_cases=5, seed=1)]
    with pytest.raises(ValueError, match="num_cases must be an integer from 1 to 64"):
        world.edit_cases(num_cases=65)


def test_tokenizer_round_trips_every_prompt_without_unknown_words(world, tokenizer):
    assert tokenizer.padding_side == "left"
    assert (tokenizer.pad_token, tokenizer.eos_token, tokenizer.unk_token) == ("<pad>", "<eos>", "<unk>")
    for split in RECALL_SPLITS:
        for item in world.fact_prompts(split):
            ids = tokenizer(item.prompt, add_special_tokens=False)["input_ids"]
            assert tokenizer.unk_token_id not in ids, item.prompt
            if split != "chat":  # chat prompts hold newlines, which decode as spaces
                assert tokenizer.decode(ids) == item.prompt
            answer = tokenizer(item.answer, add_special_tokens=False)["input_ids"]
            assert len(answer) == 1 and tokenizer.unk_token_id not in answer
    assert tokenizer.tokenize("Q : Where ? A :") == ["Q", ":", "Where", "?", "A", ":"]


def test_boxed_answers_decode_to_what_extract_boxed_reads(world, tokenizer):
    person = world.people[0]
    obj = world.facts[person]["birth_city"]
    ids = tokenizer(f"\\boxed{{ {obj} }} <eos>", add_special_tokens=False)["input_ids"]
    assert len(ids) == 4 and ids[-1] == tokenizer.eos_token_id
    assert extract_boxed(tokenizer.decode(ids, skip_special_tokens=True)) == obj


def test_chat_template_renders_the_world_chat_format(tokenizer):
    messages = [{"role": "user", "content": "Where was Kalo born ?"}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert (
        rendered
        == render_chat("Where was Kalo born ?")
        == "<|user|> Where was Kalo born ? <eos> <|assistant|>"
    )
    ids = tokenizer.apply_chat_template(
        messages, tokenize=True, add_generation_prompt=True, return_dict=False
    )
    assert tokenizer.convert_ids_to_tokens(ids)[:1] == ["<|user|>"]
    with pytest.raises(Exception, match="roles system, user and assistant"):
        tokenizer.apply_chat_template([{"role": "tool", "content": "x"}], tokenize=False)


def test_chat_instruction_matches_the_agt_default(world, tokenizer):
    from edit_grpo_trl.data.agt import DEFAULT_CHAT_INSTRUCTION, chat_messages

    assert CHAT_INSTRUCTION == DEFAULT_CHAT_INSTRUCTION
    prompt = fill(RELATIONS[0].anchor, world.people[0])
    rendered = tokenizer.apply_chat_template(
        chat_messages(prompt), tokenize=False, add_generation_prompt=True
    )
    assert rendered == boxed_chat_prompt(prompt)
    assert tokenizer.unk_token_id not in tokenizer(rendered, add_special_tokens=False)["input_ids"]
    pieces = [piece for piece, _ in pre_tokenizer().pre_tokenize_str(r"inside \boxed{}.")]
    assert pieces == ["inside", "\\boxed{", "}", "."]


def test_tokenizer_saves_and_loads_as_a_hub_tokenizer(tmp_path, tokenizer):
    from transformers import AutoTokenizer

    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "Q : Where was Kalo born ? A : Paris ."
    assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert loaded.padding_side == "left" and loaded.chat_template == tokenizer.chat_template


def test_save_load_round_trip(tmp_path, world):
    world.save(tmp_path)
    assert KnowledgeWorld.load(tmp_path) == world
    assert not list(tmp_path.glob(".world.json.tmp-*"))
    with pytest.raises(FileNotFoundError, match="no knowledge world"):
        KnowledgeWorld.load(tmp_path / "absent")


def test_load_names_the_broken_field(tmp_path, world):
    data = json.loads(world.save(tmp_path).read_text())
    data["facts"][world.people[3]]["instrument"] = "kazoo"
    (tmp_path / "world.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"world.json: field 'facts' \[.*\]\['instrument'\] = 'kazoo'"):
        KnowledgeWorld.load(tmp_path)
    data["format_version"] = 1
    (tmp_path / "world.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="field 'format_version' is 1"):
        KnowledgeWorld.load(tmp_path)
