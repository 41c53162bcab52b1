"""Training pools: field, template and generated sources; the filter that keeps evaluation out of training."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from edit_grpo_trl.answers import normalize_answer
from edit_grpo_trl.data.cases import EVALUATION_KINDS, CaseError, EditCase, Probe, ProbeKind
from edit_grpo_trl.data.formats import load_edit_cases
from edit_grpo_trl.data.pools import (
    ANCHOR,
    DUPLICATE,
    EMPTY,
    EVALUATION,
    NO_SUBJECT,
    STATES_NEW,
    STATES_OLD,
    FieldPromptSource,
    GeneratedParaphraseSource,
    ParaphraseGenerationConfig,
    TemplatePromptSource,
    TrainPromptsConfig,
    build_pools_from_config,
    build_training_pools,
    filter_training_prompts,
    generate_texts,
    hold_out_locality,
    parse_paraphrase_lines,
    sources_from_config,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _case() -> EditCase:
    return EditCase(
        case_id="c0",
        subject="Anneliese Dorr",
        prompt="The mother tongue of Anneliese Dorr is",
        target_new=("Italian", "italiano"),
        target_true="German",
        probes=(
            Probe(
                "People around Anneliese Dorr speak the language of",
                ("Italian",),
                ProbeKind.EVAL_GENERALIZATION,
            ),
            Probe("Anneliese Dorr grew up in the country of", ("Italy",), ProbeKind.PORTABILITY, "Reasoning"),
            Probe("Konrad Weil is a native speaker of", ("German",), ProbeKind.LOCALITY, "neighborhood"),
        ),
    )


def test_filter_refuses_each_kind_of_bad_candidate():
    case = _case()
    candidates = [
        "Anneliese Dorr's first language is",  # kept
        "the mother tongue of anneliese dorr is.",  # the anchor, up to case and punctuation
        "People around Anneliese Dorr speak the language of!",  # the held-out paraphrase
        "Anneliese Dorr grew up in the country of",  # a portability prompt
        "Konrad Weil is a native speaker of",  # a locality prompt (fails the subject check too)
        "ANNELIESE DORR'S first language is",  # duplicate of the first
        "Her mother tongue is",  # no subject
        "Anneliese Dorr, who speaks Italian, has the mother tongue",  # states the new object
        "Anneliese Dorr, born among italiano speakers, spoke",  # states an alias of the new object
        "Anneliese Dorr, who grew up speaking German, has the mother tongue",  # states the old object
        "  ",
        "Which language did Anneliese Dorr speak first?",  # kept
    ]
    kept, refused = filter_training_prompts(case, candidates)
    assert kept == ["Anneliese Dorr's first language is", "Which language did Anneliese Dorr speak first?"]
    assert refused == {
        ANCHOR: 1,
        EVALUATION: 3,
        DUPLICATE: 1,
        NO_SUBJECT: 1,
        STATES_NEW: 2,
        STATES_OLD: 1,
        EMPTY: 1,
    }
    relaxed, _ = filter_training_prompts(case, candidates, require_subject=False, reject_answer_leak=False)
    assert "Her mother tongue is" in relaxed and len(relaxed) == 6


def test_an_object_inside_the_subject_is_not_a_leak():
    case = EditCase("c", "Laws of Illinois", "The author of Laws of Illinois is", ("Illinois",))
    kept, refused = filter_training_prompts(case, ["Laws of Illinois was written by"])
    assert kept == ["Laws of Illinois was written by"] and not refused


def test_edit_case_itself_refuses_overlap():
    case = _case()
    leaked = Probe(
        "people around Anneliese Dorr speak the language of.", ("Italian",), ProbeKind.TRAIN_GENERALIZATION
    )
    with pytest.raises(CaseError, match="overlap"):
        case.with_probes([*case.probes, leaked])


def test_templates_fill_the_subject_and_are_filtered():
    case = _case()
    source = TemplatePromptSource(
        [
            "{subject}'s native language is",
            "The mother tongue of {subject} is",
            "In {subject}'s home, people speak {x}",
        ]
    )
    result = build_training_pools([case], [source])
    training = [p.prompt for p in result.cases[0].probes_of(ProbeKind.TRAIN_GENERALIZATION)]
    assert training == ["Anneliese Dorr's native language is", "In Anneliese Dorr's home, people speak {x}"]
    assert all(
        p.answers == case.target_new for p in result.cases[0].probes_of(ProbeKind.TRAIN_GENERALIZATION)
    )
    assert result.report.refused == {ANCHOR: 1}
    assert result.report.candidates["templates"] == 3 and result.report.kept["templates"] == 2


def test_templates_by_relation_and_callable():
    case = EditCase("c", "Ida", "Ida works for", ("Acme",), relation="employer")
    by_relation = TemplatePromptSource(
        {"employer": ["The employer of {subject} is"], "city": ["{subject} lives in"]}
    )
    assert by_relation([case]) == {"c": ["The employer of Ida is"]}
    assert TemplatePromptSource(lambda c: [f"{c.subject} is employed by"])([case]) == {
        "c": ["Ida is employed by"]
    }
    with pytest.raises(ValueError, match="slot"):
        TemplatePromptSource(["The employer is"])
    with pytest.raises(TypeError):
        TemplatePromptSource({"employer": "The employer of {subject} is"})


def test_named_fields_feed_the_pool_and_evaluation_prompts_stay_out():
    cases = load_edit_cases(FIXTURES / "easyedit_flat.json")
    result = build_training_pools(cases, [FieldPromptSource(("paraphrases",))])
    by_id = {case.case_id: case for case in result.cases}
    # Record 8 lists its held-out rephrase among its paraphrases: only the other one may train.
    assert [p.prompt for p in by_id["108"].probes_of(ProbeKind.TRAIN_GENERALIZATION)] == [
        "What Irma Solt does for a living is"
    ]
    assert result.report.refused[EVALUATION] == 1
    for case in result.cases:
        training = {normalize_answer(p.prompt) for p in case.probes_of(ProbeKind.TRAIN_GENERALIZATION)}
        evaluation = {normalize_answer(p.prompt) for kind in EVALUATION_KINDS for p in case.probes_of(kind)}
        assert training and not training & evaluation
        assert normalize_answer(case.prompt) not in training


def test_missing_fields_raise_or_give_nothing():
    cases = load_edit_cases(FIXTURES / "qaedit.json", limit=2)
    with pytest.raises(ValueError, match=r"'NQ/1104'.*none of the fields \['paraphrases'\]"):
        FieldPromptSource(("paraphrases",))(cases)
    result = build_training_pools(cases, [FieldPromptSource(("paraphrases",), missing="skip")])
    assert result.report.cases_without_training == ["NQ/1104", "TQA/918"]


def test_max_per_case_counts_existing_prompts():
    case = _case()
    first = build_training_pools([case], [TemplatePromptSource(["{subject} speaks natively"])]).cases[0]
    more = TemplatePromptSource(["{subject}'s native language is", "{subject} was raised speaking"])
    capped = build_training_pools([first], [more], max_per_case=2).cases[0]
    assert [p.prompt for p in capped.probes_of(ProbeKind.TRAIN_GENERALIZATION)] == [
        "Anneliese Dorr speaks natively",
        "Anneliese Dorr's native language is",
    ]


def test_parse_paraphrase_lines():
    text = (
        "<think>the user wants rewrites</think>Here are three rewrites:\n"
        "1. Anneliese Dorr's first language is\n"
        '2) "The native tongue of Anneliese Dorr is"\n'
        "- Anneliese Dorr natively speaks\n\n"
        "* a. is it\n"
    )
    assert parse_paraphrase_lines(text) == [
        "Anneliese Dorr's first language is",
        "The native tongue of Anneliese Dorr is",
        "Anneliese Dorr natively speaks",
        "a. is it",
    ]


def test_generated_paraphrases_come_from_the_model_through_its_chat_template(tiny_lm):
    cases = list(load_edit_cases(FIXTURES / "easyedit_flat.json", limit=3))
    config = ParaphraseGenerationConfig(num_paraphrases=3, max_new_tokens=12, batch_size=2)
    source = GeneratedParaphraseSource(tiny_lm.model, tiny_lm.tokenizer, config)
    request = source.request(cases[0])
    assert request.startswith("<|im_start|>user\n") and request.endswith("<|im_start|>assistant\n")
    assert cases[0].prompt in request and '"Anneliese Dorr"' in request
    proposals = source(cases)
    # The source's proposals are the model's own greedy output, one per line.
    ids = tiny_lm.tokenizer(request, add_special_tokens=False, return_tensors="pt")["input_ids"]
    direct = tiny_lm.model.generate(
        ids, max_new_tokens=12, do_sample=False, pad_token_id=tiny_lm.tokenizer.pad_token_id
    )
    direct_text = tiny_lm.tokenizer.decode(direct[0, ids.shape[1] :], skip_special_tokens=True)
    assert proposals[cases[0].case_id] == parse_paraphrase_lines(direct_text)[:3]
    result = build_training_pools(cases, [source])
    offered = sum(len(v) for v in proposals.values())
    assert result.report.candidates["generated"] == offered
    assert result.report.kept["generated"] + sum(result.report.refused.values()) == offered


def test_sampled_generation_repeats_with_its_seed(tiny_lm):
    config = ParaphraseGenerationConfig(do_sample=True, temperature=1.5, max_new_tokens=8, seed=3)
    texts = ["The gender of Marten Olvik is", "Ida Marlowe was"]
    first = generate_texts(tiny_lm.model, tiny_lm.tokenizer, texts, config)
    torch.manual_seed(123)  # whatever the global state, the config's seed decides
    assert generate_texts(tiny_lm.model, tiny_lm.tokenizer, texts, config) == first


def test_prompt_slot_frames_the_anchor_and_the_report_counts_each_source():
    case = _case()
    config = TrainPromptsConfig(
        sources=["templates"],
        templates=["Question: {prompt}\nAnswer:", "{prompt}", "Of {subject}: the mother tongue is Italian"],
    )
    result = build_pools_from_config([case], config)
    training = [p.prompt for p in result.cases[0].probes_of(ProbeKind.TRAIN_GENERALIZATION)]
    assert training == ["Question: The mother tongue of Anneliese Dorr is\nAnswer:"]
    assert result.report.refused_by_source == {"templates": {ANCHOR: 1, STATES_NEW: 1}}
    assert result.report.to_dict()["kept"] == {"templates": 1}


def test_sources_from_config_keep_the_recipe_order_and_cap():
    case = _case()
    config = TrainPromptsConfig(
        sources=["templates", "fields"],
        fields=["extra"],
        templates=["Q: {prompt} A:", "{subject} grew up speaking", "{subject} speaks natively"],
        max_per_case=2,
    )
    extra = EditCase(**{**case.to_dict(), "probes": ()} | {"metadata": {"record_extra": {"extra": ["x"]}}})
    sources = sources_from_config(config)
    assert [source.name for source in sources] == ["templates", "fields"]
    result = build_pools_from_config([extra], config)
    assert len(result.cases[0].probes_of(ProbeKind.TRAIN_GENERALIZATION)) == 2
    assert result.report.kept == {"templates": 2, "fields": 0}
    with pytest.raises(ValueError, match="pre-edit model"):
        sources_from_config(TrainPromptsConfig(sources=["generated"]))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"sources": ["paraphrase"]}, "unknown training-prompt source 'paraphrase'"),
        ({"sources": ["fields"]}, "needs train_prompts.fields"),
        ({"sources": ["templates"], "templates": ["no slot here"]}, "neither a {subject} nor a {prompt}"),
        ({"sources": ["templates", "templates"], "templates": ["{prompt}"]}, "listed twice"),
        ({"max_per_case": 0}, "max_per_case must be >= 1"),
    ],
)
def test_bad_train_prompt_settings_are_named(settings, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        TrainPromptsConfig(**settings)


def test_hold_out_locality_sets_a_share_aside_for_training_and_leaves_one_to_evaluate():
    locality = [Probe(f"Fact {i} is", (f"a{i}",), ProbeKind.LOCALITY, "neighborhood") for i in range(4)]
    many = EditCase("many", "Ida", "Ida lives in", ("Rome",), "Paris", tuple(locality))
    one = EditCase("one", "Bo", "Bo lives in", ("Oslo",), "Lima", (locality[0],))
    (held, single), moved = hold_out_locality([many, one], 0.5, seed=1)
    assert moved == 2
    assert len(held.probes_of(ProbeKind.TRAIN_LOCALITY)) == 2 and len(held.probes_of(ProbeKind.LOCALITY)) == 2
    assert {p.prompt for p in held.probes_of(ProbeKind.TRAIN_LOCALITY)} | {
        p.prompt for p in held.probes_of(ProbeKind.LOCALITY)
    } == {p.prompt for p in locality}
    assert single == one  # a single probe stays with the evaluation
    assert hold_out_locality([many], 0.5, seed=1)[0] == [held]  # seeded
    (almost_all,), _ = hold_out_locality([many], 0.99)
    assert len(almost_all.probes_of(ProbeKind.LOCALITY)) == 1
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        hold_out_locality([many], 1.0)
