"""The real-fact bank, the cases drawn from it, and the filter that keeps the facts a model knows."""

from __future__ import annotations

import re

import pytest
import torch
from tokenizers import pre_tokenizers
from transformers import PreTrainedTokenizerFast

from edit_grpo_trl.answers import contains_match, normalize_answer
from edit_grpo_trl.data import agt
from edit_grpo_trl.data.agt_config import AGTDataConfig
from edit_grpo_trl.data.cases import ProbeKind
from edit_grpo_trl.data.facts import (
    BankError,
    editable_facts,
    fact_cases,
    filter_known_cases,
    load_bank,
    max_cases,
    parse_facts_spec,
    recall,
    true_answers,
)
from edit_grpo_trl.data.facts.__main__ import main as facts_main
from edit_grpo_trl.data.facts.bank import parse_bank
from edit_grpo_trl.data.facts.recall import _slots
from edit_grpo_trl.data.formats import load_edit_cases
from edit_grpo_trl.testing import train_word_tokenizer

from .conftest import build_tiny_lm

BANK = load_bank("real")
ALL = fact_cases("real", seed=0)


def _key(text: str) -> str:
    return normalize_answer(text.replace("{s}", " xsubject "))


def _edited_anchors(cases) -> set[str]:
    return {case.prompt for case in cases}


# ------------------------------------------------------------------------------------------------ the bank
def test_bank_is_big_enough_for_150_cases():
    assert len(BANK.relations) >= 8
    assert max_cases(BANK) == len(ALL) >= 150
    for name, relation in BANK.relations.items():
        assert len(relation.facts) >= 30, name
        assert len(relation.objects()) >= 3, name


def test_every_relation_has_three_train_and_three_heldout_templates_apart_from_the_anchor():
    for name, relation in BANK.relations.items():
        assert len(relation.train) >= 3 and len(relation.heldout) >= 3, name
        train, heldout = {_key(t) for t in relation.train}, {_key(t) for t in relation.heldout}
        assert not train & heldout and _key(relation.anchor) not in train | heldout, name
        for template in relation.heldout:
            assert not _key(template).endswith(_key(relation.anchor)), (name, template)


def test_heldout_templates_take_several_shapes():
    for name, relation in BANK.relations.items():
        assert any(t.rstrip().endswith(("A:", "A: The", "A: In")) for t in relation.heldout), name  # question
        assert any("\nAssistant:" in t for t in relation.heldout), name  # chat turn
        assert any(not t.startswith(("Q:", "User:")) for t in relation.heldout), name  # statement


def test_aliases_of_subjects_and_objects_are_listed():
    assert {"USA", "United States of America"} <= set(BANK.answers("city_country", "New York City"))
    assert "the USA" in BANK.entity("United States").subject_aliases
    assert "UK" in BANK.answers("city_country", "London")
    assert "NYC" in BANK.object_answers("landmark_city", "New York City")
    # Relation-level aliases win over entities: the language "Chinese" is not the nationality.
    assert "Mandarin" in BANK.answers("country_language", "China")
    assert "Mandarin" not in BANK.answers("person_nationality", "Confucius")


def test_a_subject_written_with_the_is_capitalised_at_the_start():
    assert BANK.prompt("{s} is located on the continent of", "United States").startswith("The United States")
    assert BANK.prompt("The capital of {s} is", "United States") == "The capital of the United States is"
    assert BANK.prompt("{s}'s capital is", "Netherlands") == "The Netherlands' capital is"


def _bank_data(**relation_changes) -> dict:
    relation = {
        "anchor": "The capital of {s} is",
        "train": ["The capital city of {s} is", "{s}'s capital is", "Q: capital of {s}? A:"],
        "heldout": ["Q: What is the capital of {s}? A:", "{s} has its capital in", "Name {s}'s capital:"],
        "facts": {"France": "Paris", "Italy": "Rome", "Peru": "Lima"},
    }
    return {"relations": {"capital": relation | relation_changes}}


def test_bad_banks_are_refused_with_the_reason():
    parse_bank("ok", _bank_data())
    with pytest.raises(BankError, match="ends with the anchor"):
        parse_bank("bad", _bank_data(heldout=["Q: x {s}?", "So, the capital of {s} is", "{s} -"]))
    with pytest.raises(BankError, match="at least 3 training"):
        parse_bank("bad", _bank_data(train=["{s} a", "{s} b"]))
    with pytest.raises(BankError, match="contains its own answer"):
        parse_bank("bad", _bank_data(facts={"Mexico City": "Mexico City", "Italy": "Rome"}))
    with pytest.raises(BankError, match="two_hop via 'country'"):
        parse_bank("bad", _bank_data(two_hop={"template": "{s} is in", "via": "country"}))
    with pytest.raises(BankError, match="unknown keys"):
        parse_bank("bad", _bank_data(tempaltes=[]))
    with pytest.raises(BankError, match="unknown fact bank 'fake'; banks: real"):
        load_bank("fake")


# ------------------------------------------------------------------------------------------------ the cases
def test_every_probe_family_appears_with_the_right_answers():
    cases = fact_cases("real", seed=0, limit=60)
    families = {(p.kind, p.key) for case in cases for p in case.probes}
    for family in [
        (ProbeKind.TRAIN_GENERALIZATION, None),
        (ProbeKind.EVAL_GENERALIZATION, None),
        (ProbeKind.PORTABILITY, "Subject_Aliasing"),
        (ProbeKind.PORTABILITY, "Reasoning"),
        (ProbeKind.LOCALITY, "Relation_Specificity"),
        (ProbeKind.LOCALITY, "neighborhood"),
    ]:
        assert family in families
    for case in cases:
        relation = BANK.relations[case.relation]
        assert case.target_true == relation.facts[case.subject][0]
        assert case.new_object in relation.objects() and case.new_object != case.target_true
        assert not any(contains_match(a, true_answers(case)) for a in case.target_new)
        assert len(case.probes_of(ProbeKind.TRAIN_GENERALIZATION)) == len(relation.train)
        assert len(case.probes_of(ProbeKind.EVAL_GENERALIZATION)) == len(relation.heldout)
        assert len(case.probes_of(ProbeKind.LOCALITY, "neighborhood")) == 2
        for probe in case.probes_of(ProbeKind.PORTABILITY, "Subject_Aliasing"):
            assert case.subject not in probe.prompt and probe.answers == case.target_new


def test_two_hop_answers_follow_the_new_object_and_differ_from_the_old_one():
    checked = 0
    for case in ALL:
        relation = BANK.relations[case.relation]
        probes = case.probes_of(ProbeKind.PORTABILITY, "Reasoning")
        assert len(probes) == (relation.two_hop is not None)
        for probe in probes:
            assert probe.answers == BANK.answers(relation.two_hop.via, case.new_object)
            old = case.metadata["two_hop_true"]
            assert not any(contains_match(a, old) for a in probe.answers)
            assert not any(contains_match(a, probe.answers) for a in old)
            checked += 1
    assert checked >= 100


@pytest.mark.parametrize("limit", [20, 150, None])
def test_locality_never_asks_about_a_fact_edited_in_the_same_draw(limit):
    cases = fact_cases("real", seed=4, limit=limit)
    edited = _edited_anchors(cases)
    edited_facts = {(case.relation, case.subject) for case in cases}
    for case in cases:
        for probe in case.probes_of(ProbeKind.LOCALITY) + case.probes_of(ProbeKind.TRAIN_LOCALITY):
            assert probe.prompt not in edited, (case.case_id, probe.prompt)
        hop = BANK.relations[case.relation].two_hop
        if hop is not None:  # nor does a two-hop question go through an edited fact
            assert (hop.via, case.new_object) not in edited_facts
    assert all(case.probes_of(ProbeKind.LOCALITY, "neighborhood") for case in cases)


@pytest.mark.parametrize("seed", [0, 3])
def test_no_case_trains_to_keep_a_fact_that_any_case_evaluates(seed):
    cases = fact_cases("real", seed=seed, limit=150)
    evaluated = {p.prompt for case in cases for p in case.probes_of(ProbeKind.LOCALITY)}
    trained = {p.prompt for case in cases for p in case.probes_of(ProbeKind.TRAIN_LOCALITY)}
    assert evaluated and trained
    assert not evaluated & trained
    assert sum(bool(case.probes_of(ProbeKind.TRAIN_LOCALITY, "neighborhood")) for case in cases) >= 140


def test_cases_are_deterministic_by_seed_and_ids_are_unique_and_stable():
    first, again = fact_cases("real", seed=1, limit=40), fact_cases("real", seed=1, limit=40)
    assert [c.to_dict() for c in first] == [c.to_dict() for c in again]
    other = fact_cases("real", seed=2, limit=40)
    assert [c.case_id for c in other] != [c.case_id for c in first]
    ids = [case.case_id for case in ALL]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"facts-real-0-[a-z_]+-[a-z0-9-]+", i) for i in ids)
    # A smaller draw is the start of a larger one: same ids, and the same new objects where no two-hop
    # question rules one out (only a draw's own edits can do that).
    small = fact_cases("real", seed=0, limit=50)
    assert [c.case_id for c in small] == [c.case_id for c in ALL[:50]]
    without_hop = [i for i, c in enumerate(small) if BANK.relations[c.relation].two_hop is None]
    assert without_hop and all(small[i].target_new == ALL[i].target_new for i in without_hop)


def test_limit_spreads_over_relations_and_is_checked():
    cases = fact_cases("real", seed=0, limit=len(BANK.relations))
    assert {c.relation for c in cases} == set(BANK.relations)
    assert len(editable_facts(BANK, 0)) == len(ALL)
    for bad in (0, -3, len(ALL) + 1, 2.5, True):
        with pytest.raises(ValueError, match=f"limit must be an integer from 1 to {len(ALL)}"):
            fact_cases("real", limit=bad)
    for bad in (-1, "3", 1.0):
        with pytest.raises(ValueError, match="seed must be a non-negative integer"):
            fact_cases("real", seed=bad)


def test_load_edit_cases_reads_facts_names():
    loaded = load_edit_cases("facts:real", limit=20)
    assert loaded.format == "facts" and len(loaded) == 20
    assert [c.to_dict() for c in loaded] == [c.to_dict() for c in fact_cases("real", seed=0, limit=20)]
    assert load_edit_cases("facts:real:3", limit=5)[0].case_id.startswith("facts-real-3-")
    assert parse_facts_spec("facts:") == ("real", 0)
    with pytest.raises(ValueError, match="seed after the bank name must be an integer, got 'x'"):
        load_edit_cases("facts:real:x", limit=5)
    with pytest.raises(BankError, match="unknown fact bank 'imaginary'"):
        load_edit_cases("facts:imaginary")


# ------------------------------------------------------------------------------------------------ the filter
def _word_tokenizer(texts, vocabulary_filter) -> PreTrainedTokenizerFast:
    words = [word for text in texts for word, _ in pre_tokenizers.Whitespace().pre_tokenize_str(text)]
    kept = " ".join(word for word in words if vocabulary_filter(word))
    return train_word_tokenizer([kept], ["<pad>", "<unk>", "<eos>"])


def _prompts(cases) -> list[str]:
    return [case.prompt for case in cases] + [p.prompt for c in cases for p in c.probes]


def test_a_model_that_knows_nothing_keeps_nothing_and_the_report_counts_every_prompt():
    cases = fact_cases("real", seed=0, limit=27)
    answer_words = {normalize_answer(w) for c in cases for a in true_answers(c) for w in a.split()}
    tokenizer = _word_tokenizer(_prompts(cases), lambda w: normalize_answer(w) not in answer_words)
    model = build_tiny_lm(tokenizer)
    kept, report = filter_known_cases(model, tokenizer, cases, max_new_tokens=3)
    assert kept == [] and report.kept == 0 and report.cases == 27
    assert {name: counts.cases for name, counts in report.relations.items()} == {r: 3 for r in BANK.relations}
    assert len(report.templates) == sum(1 + len(r.heldout) for r in BANK.relations.values())
    for (relation, slot), item in report.templates.items():
        assert item.total == 3 and item.correct == 0
        expected = BANK.relations[relation].anchor if slot == "anchor" else None
        assert expected is None or item.template == expected
    assert "kept 0 of 27 cases" in report.format()


def test_a_model_that_always_says_paris_keeps_exactly_the_paris_facts():
    cases = [c for c in ALL if c.relation in ("country_capital", "landmark_city", "city_country")]
    tokenizer = _word_tokenizer(_prompts(cases) + ["Paris"], lambda w: True)
    model = build_tiny_lm(tokenizer)
    bias = torch.zeros(len(tokenizer))
    bias[tokenizer.convert_tokens_to_ids("Paris")] = 1e4
    hook = model.lm_head.register_forward_hook(lambda module, inputs, output: output + bias)
    try:
        kept, report = filter_known_cases(model, tokenizer, cases, max_new_tokens=2)
    finally:
        hook.remove()
    paris = [c for c in cases if "Paris" in true_answers(c)]
    assert paris and [c.case_id for c in kept] == [c.case_id for c in paris]
    for (relation, _slot), item in report.templates.items():
        assert item.correct == sum(c.relation == relation for c in paris)
        assert item.total == sum(c.relation == relation for c in cases)
    assert report.completions[paris[0].case_id]["anchor"] == "Paris Paris"


def test_heldout_share_sets_how_many_heldout_prompts_must_be_right():
    cases = fact_cases("real", seed=0, limit=9)
    right_prompts = {c.prompt: c.target_true for c in cases}
    for case in cases:  # the first two held-out prompts of every case are answered right, the rest wrong
        for probe in case.probes_of(ProbeKind.EVAL_GENERALIZATION)[:2]:
            right_prompts[probe.prompt] = case.target_true

    def generate(prompts):
        return [right_prompts.get(p, "no idea") for p in prompts]

    assert filter_known_cases(None, None, cases, generate=generate)[0] == []
    assert len(filter_known_cases(None, None, cases, heldout_share=0.5, generate=generate)[0]) == 9
    with pytest.raises(ValueError, match="heldout_share must be between 0 and 1"):
        filter_known_cases(None, None, cases, heldout_share=1.5, generate=generate)


def test_cases_without_an_old_object_are_refused():
    case = fact_cases("real", seed=0, limit=1)[0]
    no_old = case.with_probes(case.probes)
    object.__setattr__(no_old, "target_true", None)
    with pytest.raises(ValueError, match=f"{case.case_id!r} has no target_true"):
        filter_known_cases(None, None, [no_old], generate=lambda prompts: ["x"] * len(prompts))


def test_command_line_prints_the_bank_counts(capsys):
    assert facts_main(["--counts"]) == 0
    printed = capsys.readouterr().out
    assert "country_capital" in printed and f"{len(ALL)} cases" in printed


def test_data_style_asks_chat_prompts_and_reads_answers_as_training_does(tiny_lm, monkeypatch):
    cases = fact_cases("real", seed=0, limit=3)
    plain_chat = AGTDataConfig(prompt_style="chat", chat_answer="plain", chat_instruction="Say: {prompt}")
    boxed_chat = AGTDataConfig(prompt_style="chat")
    prompts = [slot[2] for case in cases for slot in _slots(case)]
    truths = [true_answers(case)[0] for case in cases for _ in _slots(case)]
    asked = []
    reply = {}  # rendered prompt -> the fake model's completion

    def fake_generate(model, tokenizer, texts, max_new_tokens, batch_size, stop_at_sentence_end, **_):
        asked.append((list(texts), max_new_tokens, stop_at_sentence_end))
        return [reply[text] for text in texts]

    monkeypatch.setattr(agt, "greedy_generate", fake_generate)
    for config in (plain_chat, boxed_chat):
        rendered = agt.render_prompts(tiny_lm.tokenizer, prompts, config)
        assert all(text.startswith("<|im_start|>user\n") for text in rendered)
        for template, kept_all in (("It is {}. Yes.", config is plain_chat), (r"\boxed{{{}}}", True)):
            reply.update((text, template.format(truth)) for text, truth in zip(rendered, truths, strict=True))
            asked.clear()
            kept, _ = filter_known_cases(
                tiny_lm.model, tiny_lm.tokenizer, cases, max_new_tokens=7, data=config
            )
            # a stated fact without the box a boxed chat asks for is not known
            assert len(kept) == (3 if kept_all else 0)
            # the chat-rendered prompts, the given budget; a plain answer stops at the sentence end
            assert asked == [(rendered, 7, config is plain_chat)]

    # without data: the plain prompts, as before
    def fake_plain(model, tokenizer, texts, **_):
        asked.append(list(texts))
        return [""] * len(texts)

    monkeypatch.setattr(recall, "greedy_generate", fake_plain)
    filter_known_cases(tiny_lm.model, tiny_lm.tokenizer, cases)
    assert asked[-1] == prompts
