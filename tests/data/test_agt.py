"""The AGT dataset builder: rows match the cases, fixed case size, pre-edit locality answers, chat prompts."""

from __future__ import annotations

import copy
from collections import Counter
from pathlib import Path

import pytest

from edit_grpo_trl.answers import extract_boxed
from edit_grpo_trl.data.agt import (
    AGTDataConfig,
    build_agt_dataset,
    build_agt_records,
    chat_messages,
    render_chat_prompt,
)
from edit_grpo_trl.data.cases import EditCase, Probe, ProbeKind
from edit_grpo_trl.data.formats import load_edit_cases
from edit_grpo_trl.data.pools import FieldPromptSource, TemplatePromptSource, build_training_pools
from edit_grpo_trl.generation import greedy_generate
from edit_grpo_trl.stage2.rewards import anchor_accuracy, old_object_penalty
from edit_grpo_trl.stage2.sampler import cases_per_generation_batch

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
TEMPLATES = ["{subject}, in short:", "Regarding {subject}, the answer is", "About {subject}:"]


def _cases(name: str = "knowedit/wiki_counterfact/test_cf.json", limit: int | None = None) -> list[EditCase]:
    """Fixture cases that have locality probes, with a template training pool."""
    loaded = [case for case in load_edit_cases(FIXTURES / name) if case.probes_of(ProbeKind.LOCALITY)]
    return build_training_pools(loaded[:limit], [TemplatePromptSource(TEMPLATES)]).cases


def _case(n_training: int, n_locality: int, case_id: str = "c") -> EditCase:
    probes = [
        Probe(f"Ida Vale paraphrase {i}", ("Rome",), ProbeKind.TRAIN_GENERALIZATION)
        for i in range(n_training)
    ]
    probes += [
        Probe(f"Other fact {i} is", (f"answer {i}",), ProbeKind.LOCALITY, "neighborhood")
        for i in range(n_locality)
    ]
    probes.append(Probe("Ida Vale's city is", ("Rome",), ProbeKind.EVAL_GENERALIZATION))
    return EditCase(case_id, "Ida Vale", "Ida Vale lives in", ("Rome", "Roma"), "Paris", tuple(probes))


def test_rows_match_the_cases():
    cases = _cases()
    config = AGTDataConfig(num_generalization=2, num_locality=2, locality_answers="dataset")
    dataset = build_agt_dataset(cases, config)
    assert len(dataset) == len(cases) * config.rows_per_case == len(cases) * 5
    assert dataset.column_names == [
        "prompt",
        "case_id",
        "role",
        "answers",
        "old_answers",
        "answer_style",
        "answer_match",
    ]
    for position, case in enumerate(cases):
        rows = dataset.select(range(position * 5, position * 5 + 5)).to_list()
        assert {row["case_id"] for row in rows} == {case.case_id}
        assert [row["role"] for row in rows] == [
            "anchor",
            "generalization",
            "generalization",
            "locality",
            "locality",
        ]
        assert rows[0]["prompt"] == case.prompt
        training = {p.prompt for p in case.probes_of(ProbeKind.TRAIN_GENERALIZATION)}
        assert {row["prompt"] for row in rows[1:3]} <= training and rows[1]["prompt"] != rows[2]["prompt"]
        locality = {p.prompt: list(p.answers) for p in case.probes_of(ProbeKind.LOCALITY)}
        for row in rows[:3]:
            assert row["answers"] == list(case.target_new)
        for row in rows[3:]:
            assert row["answers"] == locality[row["prompt"]]  # ground truth of that very probe
        assert all(row["old_answers"] == [case.target_true] for row in rows)
        assert all(row["answer_style"] == "plain" and row["answer_match"] == "exact" for row in rows)


def test_evaluation_probes_never_become_rows():
    cases = _cases("knowedit/ZsRE/ZsRE-test-all.json")
    dataset = build_agt_dataset(
        cases, AGTDataConfig(num_generalization=3, num_locality=1, locality_answers="dataset")
    )
    held_out = {
        p.prompt
        for case in cases
        for kind in (ProbeKind.EVAL_GENERALIZATION, ProbeKind.PORTABILITY)
        for p in case.probes_of(kind)
    }
    assert not held_out & set(dataset["prompt"])
    # Locality prompts are rows only in the locality role.
    locality = {p.prompt for case in cases for p in case.probes_of(ProbeKind.LOCALITY)}
    assert all(row["role"] == "locality" for row in dataset if row["prompt"] in locality)


def test_fewer_prompts_than_k_cycle_evenly():
    (case,) = [_case(n_training=2, n_locality=1)]
    records = build_agt_records(
        [case], AGTDataConfig(num_generalization=5, num_locality=3, locality_answers="dataset")
    )
    rows = records.rows
    assert len(rows) == 1 + 5 + 3
    counts = Counter(row["prompt"] for row in rows if row["role"] == "generalization")
    assert sorted(counts.values()) == [2, 3]
    assert [row["prompt"] for row in rows if row["role"] == "locality"] == ["Other fact 0 is"] * 3
    assert records.report.cases_cycling_generalization == 1 and records.report.cases_cycling_locality == 1


def test_choice_among_many_prompts_is_seeded():
    case = _case(n_training=8, n_locality=4)

    def pick(seed: int) -> list[str]:
        config = AGTDataConfig(3, 2, locality_answers="dataset", seed=seed)
        return [row["prompt"] for row in build_agt_records([case], config).rows]

    assert pick(0) == pick(0)
    assert len(set(pick(0)[1:4])) == 3
    assert any(pick(0) != pick(seed) for seed in range(1, 6))


def test_every_case_has_the_same_size_and_the_sampler_accepts_it():
    cases = [_case(n, m, f"c{n}{m}") for n, m in ((1, 1), (4, 2), (7, 5))]
    config = AGTDataConfig(num_generalization=3, num_locality=2, locality_answers="dataset")
    dataset = build_agt_dataset(cases, config)
    assert set(Counter(dataset["case_id"]).values()) == {config.rows_per_case}
    assert cases_per_generation_batch(dataset["case_id"], generation_batch_size=6 * 4, num_generations=4) == 1


def test_case_without_training_prompts_errors_or_is_skipped(caplog):
    cases = [_case(2, 1, "good"), _case(0, 1, "bare"), _case(2, 0, "lonely")]
    with pytest.raises(ValueError, match="'bare' has no training generalization prompts"):
        build_agt_records(cases, AGTDataConfig(2, 1, locality_answers="dataset", on_missing="error"))
    records = build_agt_records(cases, AGTDataConfig(2, 1, locality_answers="dataset", on_missing="skip"))
    assert set(records.report.skipped) == {"bare", "lonely"}
    assert {row["case_id"] for row in records.rows} == {"good"}
    assert "skipped 2 of 3 case(s)" in caplog.text
    # Without locality rows, a case without locality probes is fine.
    assert len(build_agt_records(cases[2:], AGTDataConfig(2, 0)).rows) == 3


def test_old_answers_carry_aliases_and_are_empty_without_an_old_object():
    zsre = _cases("knowedit/ZsRE/ZsRE-test-all.json", limit=2)
    recent = _cases("knowedit/wiki_recent/recent_test.json", limit=1)
    dataset = build_agt_dataset(zsre + recent, AGTDataConfig(1, 0))
    by_case = {row["case_id"]: row["old_answers"] for row in dataset}
    assert by_case["ZsRE-test-all-1"] == ["Irish", "Irish Gaelic"]
    assert by_case["recent_test-0"] == []
    assert dataset.features["old_answers"].feature.dtype == "string"


def test_locality_answers_are_the_pre_edit_models_greedy_outputs(tiny_lm):
    cases = _cases()
    config = AGTDataConfig(
        num_generalization=1, num_locality=2, locality_answers="model", locality_max_new_tokens=6
    )
    records = build_agt_records(cases, config, tokenizer=tiny_lm.tokenizer, model=tiny_lm.model)
    rows = [row for row in records.rows if row["role"] == "locality"]
    prompts = [row["prompt"] for row in rows]
    greedy = greedy_generate(tiny_lm.model, tiny_lm.tokenizer, prompts, max_new_tokens=6)
    dataset_answers = {
        p.prompt: list(p.answers) for case in cases for p in case.probes_of(ProbeKind.LOCALITY)
    }
    fallbacks = 0
    for row, completion in zip(rows, greedy, strict=True):
        if completion:
            assert row["answers"] == [completion]
        else:
            assert row["answers"] == dataset_answers[row["prompt"]]
            fallbacks += 1
    assert records.report.locality_fallbacks == fallbacks
    assert sum(bool(c) for c in greedy) > 0  # the comparison above was not all fallbacks
    with pytest.raises(ValueError, match="PRE-EDIT"):
        build_agt_records(cases, config)


def test_chat_prompts_ask_for_a_box_and_render_through_the_chat_template(tiny_lm):
    cases = _cases(limit=2)
    config = AGTDataConfig(
        num_generalization=2, num_locality=1, prompt_style="chat", locality_answers="dataset"
    )
    dataset = build_agt_dataset(cases, config)
    assert set(dataset["answer_style"]) == {"boxed"}
    first = dataset[0]["prompt"]
    assert first == chat_messages(cases[0].prompt)
    assert len(first) == 1 and first[0]["role"] == "user"
    assert cases[0].prompt in first[0]["content"] and r"\boxed{}" in first[0]["content"]
    rendered = render_chat_prompt(tiny_lm.tokenizer, first)
    assert rendered == f"<|im_start|>user\n{first[0]['content']}<|im_end|>\n<|im_start|>assistant\n"
    assert rendered == tiny_lm.tokenizer.apply_chat_template(
        first, tokenize=False, add_generation_prompt=True
    )
    custom = AGTDataConfig(1, 0, prompt_style="chat", chat_instruction="Q: {prompt} -> \\boxed{}")
    assert (
        build_agt_dataset(cases, custom)[0]["prompt"][0]["content"] == f"Q: {cases[0].prompt} -> \\boxed{{}}"
    )


def test_chat_locality_answers_are_read_from_the_pre_edit_models_box(tiny_lm):
    model = copy.deepcopy(tiny_lm.model)
    boxed_id = tiny_lm.tokenizer.convert_tokens_to_ids(r"\boxed{female}")
    model.generation_config.sequence_bias = {(boxed_id,): 100.0}  # this model always answers in a box
    cases = _cases(limit=3)
    config = AGTDataConfig(1, 1, prompt_style="chat", locality_answers="model", locality_max_new_tokens=4)
    records = build_agt_records(cases, config, tokenizer=tiny_lm.tokenizer, model=model)
    rows = [row for row in records.rows if row["role"] == "locality"]
    rendered = [render_chat_prompt(tiny_lm.tokenizer, row["prompt"]) for row in rows]
    completions = greedy_generate(
        model, tiny_lm.tokenizer, rendered, max_new_tokens=4, stop_at_sentence_end=False
    )
    assert [row["answers"] for row in rows] == [[extract_boxed(c)] for c in completions] == [["female"]] * 3
    assert records.report.locality_fallbacks == 0
    # The unbiased random model never boxes its answer: every row falls back to the dataset, counted.
    plain_model = build_agt_records(cases, config, tokenizer=tiny_lm.tokenizer, model=tiny_lm.model)
    assert plain_model.report.locality_fallbacks == 3


def test_chat_style_needs_a_chat_template(tiny_lm):
    tokenizer = copy.deepcopy(tiny_lm.tokenizer)
    tokenizer.chat_template = None
    with pytest.raises(ValueError, match="chat template"):
        render_chat_prompt(tokenizer, chat_messages("x"))


def test_rows_feed_the_reward_functions():
    cases = _cases(limit=1)
    rows = build_agt_records(cases, AGTDataConfig(1, 1, locality_answers="dataset")).rows
    columns = {key: [row[key] for row in rows] for key in ("role", "answers", "old_answers", "answer_style")}
    completions = [f" {cases[0].new_object}.", f" {cases[0].target_true}.", " whatever."]
    assert anchor_accuracy(completions=completions, **columns) == [1.0, None, None]
    assert old_object_penalty(completions=completions, **columns)[:2] == [0.0, -1.0]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_generalization": -1},
        {"num_locality": -2},
        {"prompt_style": "xml"},
        {"locality_answers": "oracle"},
        {"on_missing": "ignore"},
        {"chat_instruction": "no slot"},
        {"locality_max_new_tokens": 0},
        {"chat_answer": "xml"},
    ],
)
def test_config_validation(kwargs):
    with pytest.raises(ValueError):
        AGTDataConfig(**kwargs)


def test_duplicate_case_ids_are_refused():
    with pytest.raises(ValueError, match="appears twice"):
        build_agt_records([_case(1, 1), _case(1, 1)], AGTDataConfig(1, 1, locality_answers="dataset"))


def test_field_pool_to_dataset_end_to_end():
    cases = build_training_pools(
        load_edit_cases(FIXTURES / "easyedit_flat.json"), [FieldPromptSource(("paraphrases",))]
    ).cases
    dataset = build_agt_dataset(cases, AGTDataConfig(2, 1, locality_answers="dataset", on_missing="skip"))
    assert len(dataset) % 4 == 0 and set(Counter(dataset["case_id"]).values()) == {4}


def _with_training_locality(case: EditCase, prompts: list[str]) -> EditCase:
    extra = [Probe(p, ("kept",), ProbeKind.TRAIN_LOCALITY, "neighborhood") for p in prompts]
    return case.with_probes([*case.probes, *extra])


def test_locality_rows_come_from_training_locality_probes_when_a_case_has_them():
    trained = _with_training_locality(_case(2, 3, "a"), ["Kept fact 1 is", "Kept fact 2 is"])
    fallback = _case(2, 3, "b")
    config = AGTDataConfig(num_generalization=1, num_locality=2, locality_answers="dataset")
    records = build_agt_records([trained, fallback], config)
    locality = [row for row in records.rows if row["role"] == "locality"]
    assert {row["prompt"] for row in locality if row["case_id"] == "a"} == {
        "Kept fact 1 is",
        "Kept fact 2 is",
    }
    assert all(row["prompt"].startswith("Other fact") for row in locality if row["case_id"] == "b")
    assert records.report.locality_rows_from_evaluation == 1


def test_locality_pool_leaves_out_what_any_case_evaluates_and_is_capped():
    other = EditCase(
        "b",
        "Max Orr",
        "Max Orr lives in",
        ("Oslo",),
        "Lima",
        (Probe("Max Orr's neighbour lives in", ("Bern",), ProbeKind.LOCALITY),),
    )
    first = _with_training_locality(
        _case(2, 2, "a"), ["Kept fact 1 is", "Max Orr's neighbour lives in", "Max Orr lives in"]
    )
    second = _with_training_locality(other, ["Kept fact 1 is", "Kept fact 3 is"])
    config = AGTDataConfig(num_generalization=0, num_locality=0, locality_answers="dataset")
    records = build_agt_records([first, second], config)
    # the second case evaluates "Max Orr's neighbour lives in" and edits "Max Orr lives in": both left out
    assert sorted(row["prompt"] for row in records.locality_pool) == ["Kept fact 1 is", "Kept fact 3 is"]
    assert records.report.locality_pool_dropped == 2
    assert all(row["answers"] == ["kept"] for row in records.locality_pool)
    capped = build_agt_records([first, second], AGTDataConfig(**{**vars(config), "locality_pool_size": 1}))
    assert len(capped.locality_pool) == capped.report.locality_pool == 1


def test_locality_pool_answers_are_the_pre_edit_models(tiny_lm):
    prompts = [f"Kept fact {i} is" for i in range(6)]
    case = _with_training_locality(_case(2, 1, "a"), prompts)
    config = AGTDataConfig(num_generalization=1, num_locality=0, locality_max_new_tokens=6)
    pool = build_agt_records([case], config, tokenizer=tiny_lm.tokenizer, model=tiny_lm.model).locality_pool
    greedy = dict(
        zip(
            prompts, greedy_generate(tiny_lm.model, tiny_lm.tokenizer, prompts, max_new_tokens=6), strict=True
        )
    )
    assert len(pool) == len(prompts)
    assert any(greedy.values())  # not all fallbacks
    for row in pool:
        assert row["answers"] == ([greedy[row["prompt"]]] if greedy[row["prompt"]] else ["kept"])
    with pytest.raises(ValueError, match="PRE-EDIT"):
        build_agt_records([case], config)


def test_chat_answer_plain_reads_chat_completions_by_their_first_sentence(tiny_lm):
    model = copy.deepcopy(tiny_lm.model)
    boxed_id = tiny_lm.tokenizer.convert_tokens_to_ids(r"\boxed{female}")
    model.generation_config.sequence_bias = {(boxed_id,): 100.0}  # a box, but read as plain text
    cases = _cases(limit=2)
    config = AGTDataConfig(
        1, 1, prompt_style="chat", chat_answer="plain", locality_answers="model", locality_max_new_tokens=3
    )
    assert config.answer_style == "plain" and config.max_new_tokens == 3
    records = build_agt_records(cases, config, tokenizer=tiny_lm.tokenizer, model=model)
    assert {row["answer_style"] for row in records.rows} == {"plain"}
    assert records.rows[0]["prompt"] == chat_messages(cases[0].prompt)  # still a chat prompt
    rows = [row for row in records.rows if row["role"] == "locality"]
    rendered = [render_chat_prompt(tiny_lm.tokenizer, row["prompt"]) for row in rows]
    completions = greedy_generate(model, tiny_lm.tokenizer, rendered, max_new_tokens=3)
    # the whole completion (no sentence end in it), not the box's content
    assert [row["answers"] for row in rows] == [[c] for c in completions]
    assert all(answer != "female" and "female" in answer for row in rows for answer in row["answers"])


def test_answer_style_and_default_budget_follow_chat_answer():
    assert AGTDataConfig().answer_style == "plain" and AGTDataConfig().max_new_tokens == 50
    assert AGTDataConfig(prompt_style="chat").answer_style == "boxed"
    assert AGTDataConfig(prompt_style="chat").max_new_tokens == 256
    plain_chat = AGTDataConfig(prompt_style="chat", chat_answer="plain")
    assert plain_chat.answer_style == "plain" and plain_chat.max_new_tokens == 50
    # chat_answer only says how a chat completion is read: plain prompts stay plain
    assert AGTDataConfig(chat_answer="boxed").answer_style == "plain"
