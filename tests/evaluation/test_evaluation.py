import json
import math
import time
from pathlib import Path

import pytest
import torch

from edit_grpo_trl.data.agt import AGTDataConfig, render_prompts
from edit_grpo_trl.data.cases import EditCase, Probe, ProbeKind
from edit_grpo_trl.evaluation import EvalBaseline, EvalConfig, evaluate_cases, write_report
from edit_grpo_trl.evaluation import evaluate as evaluate_module
from edit_grpo_trl.evaluation.metrics import (
    locality_agreement,
    ngram_entropy,
    teacher_forced_accuracy,
    teacher_forced_predictions,
)
from edit_grpo_trl.generation import greedy_token_ids

from ..data.conftest import BOXED_TOKEN, build_tiny_lm, build_tiny_tokenizer
from ..stage2.conftest import make_model, make_tokenizer


def unbatched_accuracy(model, tokenizer, prompt, target):
    """The definition, one sequence at a time, no padding."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    target_ids = tokenizer(f"{prompt} {target}", add_special_tokens=False)["input_ids"][len(prompt_ids) :]
    ids = torch.tensor([prompt_ids + target_ids])
    argmax = model(input_ids=ids).logits[0].argmax(-1).tolist()
    predicted = argmax[len(prompt_ids) - 1 : -1]
    return sum(a == b for a, b in zip(target_ids, predicted, strict=True)) / len(target_ids)


def test_teacher_forced_batched_with_left_padding_equals_the_definition():
    model, tokenizer = make_model(seed=11).eval(), make_tokenizer()
    prompts = ["Ana was born in", "the city of birth of Bo is", "Cyd"]
    targets = ["Paris", "Rome Oslo Lima", "was born in the city"]  # multi-token targets, ragged prompts
    batched = teacher_forced_accuracy(model, tokenizer, prompts, targets, batch_size=3)
    for prompt, target, value in zip(prompts, targets, batched, strict=True):
        assert value == pytest.approx(unbatched_accuracy(model, tokenizer, prompt, target))
    assert teacher_forced_accuracy(model, tokenizer, prompts, targets, batch_size=1) == pytest.approx(batched)


def test_teacher_forced_scores_a_known_continuation():
    tokenizer = make_tokenizer()
    model = make_model(seed=0).eval()
    # Force the model to predict "Paris" at every position: add a large logit to it.
    paris = tokenizer.convert_tokens_to_ids("Paris")
    logits_hook = model.lm_head.register_forward_hook(
        lambda m, a, out: out + torch.nn.functional.one_hot(torch.tensor(paris), out.size(-1)).float() * 100
    )
    try:
        assert teacher_forced_accuracy(model, tokenizer, ["Ana was born in"], ["Paris"]) == [1.0]
        assert teacher_forced_accuracy(model, tokenizer, ["Ana was born in"], ["Paris Rome"]) == [0.5]
        ((target, predicted),) = teacher_forced_predictions(model, tokenizer, ["Ana"], ["Rome Paris"])
        assert predicted == [paris, paris] and len(target) == 2
    finally:
        logits_hook.remove()


def test_locality_agreement_and_its_errors():
    assert locality_agreement([1, 2, 3, 4], [1, 2, 0, 4]) == 0.75
    with pytest.raises(ValueError, match="differ in length"):
        locality_agreement([1], [1, 2])


def test_ngram_entropy_by_hand():
    # "a b a b": bigrams ab, ba, ab -> p = 2/3, 1/3; trigrams aba, bab -> 1/2 each
    bigram = -(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3))
    trigram = 1.0
    assert ngram_entropy("a b a b") == pytest.approx((2 / 3 * bigram + 4 / 3 * trigram) / 2)
    assert ngram_entropy("") == 0.0


def cases():
    return [
        EditCase(
            "c0",
            "Ana",
            "Ana was born in",
            ("Paris",),
            "Rome",
            (
                Probe("the city of birth of Ana is", ("Paris",), ProbeKind.EVAL_GENERALIZATION),
                Probe("Bo was born in", ("Oslo",), ProbeKind.LOCALITY, "Neighborhood"),
                Probe("the home town of Ana is", ("Paris",), ProbeKind.PORTABILITY, "Subject_Aliasing"),
            ),
        ),
        EditCase(
            "c1",
            "Cyd",
            "Cyd was born in",
            ("Lima",),
            "Kiev",
            (Probe("Dee was born in", ("Doha",), ProbeKind.LOCALITY, "Neighborhood"),),
        ),
    ]


def test_evaluate_cases_records_a_baseline_and_compares_to_it(tmp_path):
    model, tokenizer = make_model(seed=5).eval(), make_tokenizer()
    config = EvalConfig(batch_size=4, max_new_tokens=3)
    first = evaluate_cases(model, tokenizer, cases(), config)
    assert first.metrics["tf_locality"] == 1.0 and first.metrics["gen_em_locality"] == 1.0
    for key in (
        "tf_reliability",
        "tf_generalization",
        "tf_portability",
        "gen_em_reliability",
        "gen_contains_reliability",
        "tf_portability/Subject_Aliasing",
        "fluency",
    ):
        assert key in first.metrics
    assert "tf_generalization" in first.per_case[0] and "tf_generalization" not in first.per_case[1]
    path = first.baseline.save(tmp_path / "baseline.json")
    baseline = EvalBaseline.load(path)
    assert baseline == first.baseline
    # the same model forced to predict <unk> everywhere disagrees with the baseline on every locality token
    assert all(tokens != [tokenizer.unk_token_id] for tokens in baseline.argmax_tokens.values())
    hook = model.lm_head.register_forward_hook(
        lambda m, a, out: (
            out + 1e3 * torch.nn.functional.one_hot(torch.tensor(tokenizer.unk_token_id), out.size(-1))
        )
    )
    try:
        other = evaluate_cases(model, tokenizer, cases(), config, baseline=baseline)
    finally:
        hook.remove()
    assert other.metrics["tf_locality"] == 0.0
    assert other.metrics["gen_em_locality"] == 0.0
    first.save(tmp_path / "eval")
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text()) == first.metrics
    assert len((tmp_path / "eval" / "per_case.jsonl").read_text().splitlines()) == 2


def test_report_has_every_metric_for_three_points_and_refuses_to_overwrite(tmp_path):
    points = {
        "pre_edit": {"tf_reliability": 0.0, "fluency": 500.0},
        "post_edit": {"tf_reliability": 0.9, "fluency": 480.0},
        "post_refinement": {"tf_reliability": 0.95, "fluency": 490.0},
    }
    table = write_report(points, tmp_path)
    assert "| tf_reliability | 0.0 | 90.0 | 95.0 | +5.0 |" in table
    assert "| fluency | 500.0 | 480.0 | 490.0 | +10.0 |" in table
    for name in ("report.json", "report.md", "report.png"):
        assert (tmp_path / name).stat().st_size > 0
    with pytest.raises(FileExistsError, match="report already exists"):
        write_report(points, tmp_path)


def test_report_is_logged_to_an_offline_wandb_run(tmp_path, monkeypatch):
    import wandb

    from edit_grpo_trl.evaluation.report import log_report_to_wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    points = {
        "pre_edit": {"tf_reliability": 0.0},
        "post_edit": {"tf_reliability": 0.5},
        "post_refinement": {"tf_reliability": 0.75},
    }
    write_report(points, tmp_path / "report")
    run = wandb.init(project="edit-grpo-test", dir=str(tmp_path))
    log_report_to_wandb(run, points, tmp_path / "report")
    run_dir = Path(run.dir).parent  # wandb keeps global settings between runs: ask the run where it wrote
    run.finish()
    # wandb's service process may still be flushing the run's log after finish(): wait for it, bounded.
    deadline = time.monotonic() + 30
    while True:
        record = b"".join(path.read_bytes() for path in run_dir.glob("*.wandb"))
        if b"report/table" in record or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert b"post_refinement/tf_reliability" in record and b"report/table" in record


def test_prompts_data_asks_chat_prompts_and_reads_the_box(monkeypatch):
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_lm(tokenizer)
    boxed_id = tokenizer.convert_tokens_to_ids(BOXED_TOKEN)
    model.generation_config.sequence_bias = {(boxed_id,): 100.0}  # every answer is \boxed{female}
    probes = (
        Probe("the gender of Ida Vale is", ("female",), ProbeKind.EVAL_GENERALIZATION),
        Probe("the city of Bo is", ("Rome",), ProbeKind.LOCALITY, "n"),
    )
    case = EditCase("c", "Ida Vale", "Ida Vale is", ("female",), "male", probes)
    data = AGTDataConfig(prompt_style="chat")
    asked = []

    def spy(model, tokenizer, prompts, *args, **kwargs):
        asked.append(list(prompts))
        return greedy_token_ids(model, tokenizer, prompts, *args, **kwargs)

    monkeypatch.setattr(evaluate_module, "greedy_token_ids", spy)
    chat = EvalConfig(batch_size=4, max_new_tokens=3, fluency=False, prompts="data")
    result = evaluate_cases(model, tokenizer, [case], chat, data=data)
    prompts = [case.prompt, *(p.prompt for p in probes)]
    assert asked == [render_prompts(tokenizer, prompts, data)]
    assert all(text.startswith("<|im_start|>user\n") for text in asked[0])
    # the box's content is the answer, exactly
    assert result.metrics["gen_em_reliability"] == result.metrics["gen_em_generalization"] == 1.0
    assert [row["prompt"] for row in result.probes] == prompts  # rows keep the case prompts
    # plain prompts (the default) read the same completion as plain text: no exact match
    plain = evaluate_cases(
        model, tokenizer, [case], EvalConfig(batch_size=4, max_new_tokens=3, fluency=False)
    )
    assert asked[-1] == prompts and plain.metrics["gen_em_reliability"] == 0.0
    with pytest.raises(ValueError, match="data section"):
        evaluate_cases(model, tokenizer, [case], chat)
    with pytest.raises(ValueError, match="prompts must be"):
        EvalConfig(prompts="chat")


def test_chat_read_plainly_teacher_forces_the_answer_after_the_restated_prompt(monkeypatch):
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_lm(tokenizer)
    case = EditCase("c", "Ida Vale", "Ida Vale is", ("female",), "male", ())
    forced = []

    def spy(model, tokenizer, prompts, targets, *args, **kwargs):
        forced.append((list(prompts), list(targets)))
        return teacher_forced_predictions(model, tokenizer, prompts, targets, *args, **kwargs)

    monkeypatch.setattr(evaluate_module, "teacher_forced_predictions", spy)
    config = EvalConfig(batch_size=4, max_new_tokens=2, fluency=False, generation=False, prompts="data")
    plain_chat = AGTDataConfig(prompt_style="chat", chat_answer="plain")
    evaluate_cases(model, tokenizer, [case], config, data=plain_chat)
    (rendered,) = render_prompts(tokenizer, [case.prompt], plain_chat)
    assert forced[-1] == ([rendered + "Ida Vale is"], ["female"])
    boxed_chat = AGTDataConfig(prompt_style="chat")
    evaluate_cases(model, tokenizer, [case], config, data=boxed_chat)
    assert forced[-1] == (render_prompts(tokenizer, [case.prompt], boxed_chat), [r"\boxed{female}"])


def test_generalization_is_reported_per_template_and_without_prompts_ending_with_the_edit():
    model, tokenizer = make_model(seed=5).eval(), make_tokenizer()
    config = EvalConfig(batch_size=4, max_new_tokens=3, teacher_forced=False, fluency=False)
    prompts = {"paraphrase": "the city of birth of Ana is", "question_anchor": "where ? Ana was born in"}
    prompts["asked"] = "the home town of Ana is"

    def case(answers):
        probes = tuple(
            Probe(prompt, (answers[key],), ProbeKind.EVAL_GENERALIZATION, key)
            for key, prompt in prompts.items()
        )
        return EditCase("c0", "Ana", "Ana was born in", ("Paris",), "Rome", probes)

    # what the model answers each prompt: those answers score 1, any other 0
    said = evaluate_cases(model, tokenizer, [case(dict.fromkeys(prompts, "?"))], config).probes
    generated = {row["key"]: row["generation"] for row in said if row["family"] == "generalization"}
    assert all(generated.values())
    answers = dict(generated, asked=generated["asked"] + " nowhere")  # "asked" is answered wrong
    result = evaluate_cases(model, tokenizer, [case(answers)], config)
    metrics = result.metrics
    assert metrics["gen_em_generalization/paraphrase"] == 1.0
    assert metrics["gen_em_generalization/question_anchor"] == 1.0
    assert metrics["gen_em_generalization/asked"] == 0.0
    assert metrics["gen_em_generalization"] == pytest.approx(2 / 3)  # the plain mean over the three
    # "where ? Ana was born in" ends with the edit prompt: left out
    assert metrics["gen_em_generalization_beyond_anchor"] == pytest.approx(1 / 2)
    assert result.per_case[0]["gen_em_generalization_beyond_anchor"] == pytest.approx(1 / 2)
