"""Our numbers pinned to EasyEdit's definitions on small cases computed by hand.

EasyEdit (easyeditor/evaluate/evaluate.py, evaluate_utils.py, editors/editor.py and its KnowEdit summary in
examples/run_knowedit_llama2.py):

* locality ``<key>_acc`` per probe = mean(pre argmax tokens == post argmax tokens) over the answer's tokens;
  per case, the mean over keys of each key's probe mean; then the mean over cases;
* fluency = mean over cases of compute_n_gram_entropy(prompt + 100-token generation) x 100, with
  nltk.word_tokenize words, n = 2, 3 and weights 2/3, 4/3, arithmetic mean, log base 2.
"""

import json
import math

import pytest
import torch

from edit_grpo_trl.cli import main
from edit_grpo_trl.data.cases import EditCase, Probe, ProbeKind, save_cases
from edit_grpo_trl.evaluation import EvalBaseline, EvalConfig, evaluate_cases
from edit_grpo_trl.evaluation.evaluate import easyedit_average, per_key_average
from edit_grpo_trl.evaluation.metrics import ngram_entropy, sample_fluency_texts, word_tokens
from edit_grpo_trl.evaluation.report import headline_table, report_markdown
from edit_grpo_trl.evaluation.run import easyedit_results, easyedit_summary
from edit_grpo_trl.generation import greedy_token_ids

from ..stage2.conftest import make_model, make_tokenizer


def test_locality_is_averaged_per_key_then_over_keys_then_over_cases():
    scores = {(0, "A"): [1.0, 0.5], (0, "B"): [0.0], (1, "A"): [1.0]}
    overall, per_case = easyedit_average(scores)
    # case 0: (mean(1, .5) + 0) / 2 = .375; case 1: 1.0. Pooling every probe would give 2.5 / 4 = .625.
    assert per_case == {0: 0.375, 1: 1.0}
    assert overall == pytest.approx(0.6875)
    assert per_key_average(scores) == {"A": pytest.approx(0.875), "B": 0.0}


@pytest.mark.parametrize(
    ("text", "words"),
    [
        # what nltk.word_tokenize returns for these
        ("The cat can't sit.", ["The", "cat", "ca", "n't", "sit", "."]),
        ("It's well-known, 3.5 times!", ["It", "'s", "well-known", ",", "3.5", "times", "!"]),
        ("They don't (really).", ["They", "do", "n't", "(", "really", ")", "."]),
    ],
)
def test_words_are_split_as_nltk_does(text, words):
    assert word_tokens(text) == words


def test_ngram_entropy_keeps_case_and_matches_a_hand_computation():
    # words: A b a b -> bigrams (A,b) (b,a) (a,b): three distinct, H2 = log2 3; trigrams: two distinct, H3 = 1
    expected = (2 / 3 * math.log2(3) + 4 / 3 * 1.0) / 2
    assert ngram_entropy("A b a b") == pytest.approx(expected)
    # lower-cased it would repeat a bigram: the case matters, as it does in EasyEdit
    assert ngram_entropy("a b a b") < expected


def two_key_cases():
    return [
        EditCase(
            "c0",
            "Ana",
            "Ana was born in",
            ("Paris",),
            "Rome",
            (
                Probe("Bo was born in", ("Oslo Lima",), ProbeKind.LOCALITY, "neighbour"),
                Probe("Cyd was born in", ("Kiev",), ProbeKind.LOCALITY, "neighbour"),
                Probe("the home town of Ana is", ("Rome",), ProbeKind.LOCALITY, "same_subject"),
            ),
        ),
        EditCase(
            "c1",
            "Dee",
            "Dee was born in",
            ("Lima",),
            "Doha",
            (Probe("Eli was born in", ("Doha",), ProbeKind.LOCALITY, "neighbour"),),
        ),
    ]


def test_teacher_forced_locality_per_key_against_a_hand_made_baseline(tmp_path):
    model, tokenizer = make_model(seed=3).eval(), make_tokenizer()
    config = EvalConfig(batch_size=8, max_new_tokens=3, fluency=False, generation=False)
    reference = evaluate_cases(model, tokenizer, two_key_cases(), config)
    tokens = reference.baseline.argmax_tokens
    assert len(tokens["Bo was born in"]) == 2  # "Oslo Lima": two answer tokens

    def other(token):
        return (token + 1) % len(tokenizer.get_vocab())

    edited = EvalBaseline(argmax_tokens=dict(tokens))
    bo = tokens["Bo was born in"]
    edited.argmax_tokens["Bo was born in"] = [bo[0], other(bo[1])]  # 1 of 2 tokens agree: 0.5
    edited.argmax_tokens["the home town of Ana is"] = [other(t) for t in tokens["the home town of Ana is"]]
    result = evaluate_cases(model, tokenizer, two_key_cases(), config, baseline=edited)
    # case c0: neighbour mean(0.5, 1) = 0.75, same_subject 0 -> 0.375; case c1: 1.0 -> 0.6875
    assert result.metrics["tf_locality"] == pytest.approx(0.6875)
    assert result.metrics["tf_locality/neighbour"] == pytest.approx((0.75 + 1.0) / 2)
    assert result.metrics["tf_locality/same_subject"] == 0.0
    # the EasyEdit layout carries the same numbers, and EasyEdit's summary of it agrees
    records = easyedit_results(reference, result)
    assert records[0]["post"]["locality"] == {"neighbour_acc": [0.5, 1.0], "same_subject_acc": [0.0]}
    assert records[0]["pre"]["locality"]["neighbour_output"] == [bo, tokens["Cyd was born in"]]
    assert records[0]["requested_rewrite"]["locality"]["same_subject"] == {
        "prompt": ["the home town of Ana is"],
        "ground_truth": ["Rome"],
    }
    summary = easyedit_summary(records)
    assert summary["post"]["locality"] == {"neighbour_acc": 0.875, "same_subject_acc": 0.0}
    assert summary["post"]["rewrite_acc"] == pytest.approx(result.metrics["tf_reliability"])


def force(model, tokenizer, word):
    token = tokenizer.convert_tokens_to_ids(word)
    return model.lm_head.register_forward_hook(
        lambda m, a, out: out + 1e3 * torch.nn.functional.one_hot(torch.tensor(token), out.size(-1))
    )


def test_generation_locality_compares_the_answer_span_and_names_the_flip(tmp_path):
    model, tokenizer = make_model(seed=4).eval(), make_tokenizer()
    config = EvalConfig(batch_size=8, max_new_tokens=4, fluency=False)
    hook = force(model, tokenizer, "Oslo")
    try:
        reference = evaluate_cases(model, tokenizer, two_key_cases(), config)
    finally:
        hook.remove()
    spans = reference.baseline.spans
    assert spans["Bo was born in"] == [tokenizer.convert_tokens_to_ids("Oslo")] * 2  # two answer tokens
    assert spans["Cyd was born in"] == [tokenizer.convert_tokens_to_ids("Oslo")]
    hook = force(model, tokenizer, "Paris")  # c0's new object, everywhere
    try:
        result = evaluate_cases(model, tokenizer, two_key_cases(), config, baseline=reference.baseline)
    finally:
        hook.remove()
    assert result.metrics["gen_em_locality"] == 0.0
    rows = {row["prompt"]: row for row in result.probes if row["family"] == "locality"}
    assert rows["Bo was born in"]["answer_span"] == "Paris Paris"
    assert rows["Bo was born in"]["pre_answer_span"] == "Oslo Oslo"
    assert rows["Bo was born in"]["flipped_to"] == "own_new_object"  # a probe of c0
    assert rows["Eli was born in"]["flipped_to"] == "other_new_object"  # a probe of c1: c0's object
    # only the span counts: the same first token, then anything, is kept
    hook = force(model, tokenizer, "Oslo")
    try:
        same = evaluate_cases(model, tokenizer, two_key_cases(), config, baseline=reference.baseline)
    finally:
        hook.remove()
    assert same.metrics["gen_em_locality"] == 1.0
    breakdown = result.locality_breakdown()
    assert breakdown["all"]["probes"] == 4 and breakdown["all"]["changed"] == 4
    assert breakdown["neighbour"]["own_new_object"] == 2 and breakdown["neighbour"]["other_new_object"] == 1
    result.save(tmp_path)
    saved = [json.loads(line) for line in (tmp_path / "probes.jsonl").read_text().splitlines()]
    assert len(saved) == len(result.probes) and all("generation" in row for row in saved)
    assert json.loads((tmp_path / "locality.json").read_text()) == breakdown


def test_answer_span_is_cut_after_a_stop_token():
    model, tokenizer = make_model(seed=4).eval(), make_tokenizer()
    stop = {tokenizer.convert_tokens_to_ids(".")}
    hook = force(model, tokenizer, ".")
    try:
        (ids,) = greedy_token_ids(model, tokenizer, ["Ana was born in"], 5, stop)
    finally:
        hook.remove()
    assert ids == [tokenizer.convert_tokens_to_ids(".")]


def test_fluency_text_is_the_prompt_and_a_seeded_continuation_to_max_length():
    model, tokenizer = make_model(seed=6).eval(), make_tokenizer()
    state = torch.random.get_rng_state()
    first = sample_fluency_texts(model, tokenizer, ["Ana was born in", "Bo"], max_length=12, seed=1)
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's RNG is untouched
    assert first == sample_fluency_texts(model, tokenizer, ["Ana was born in", "Bo"], max_length=12, seed=1)
    for prompt, text in zip(["Ana was born in", "Bo"], first, strict=True):
        assert text.startswith(prompt)
        assert len(tokenizer(text)["input_ids"]) <= 12
    result = evaluate_cases(
        model, tokenizer, two_key_cases(), EvalConfig(generation=False, fluency_max_length=12)
    )
    texts = [row["fluency_text"] for row in result.per_case]
    expected = 100 * sum(ngram_entropy(t) for t in texts) / len(texts)
    assert result.metrics["fluency"] == pytest.approx(expected)
    assert result.easyedit[0]["phase"]["fluency"]["ngram_entropy"] == pytest.approx(ngram_entropy(texts[0]))


def test_headline_leads_with_easyedit_names():
    points = {
        "pre_edit": {"tf_reliability": 0.1, "tf_locality": 1.0, "fluency": 500.0},
        "post_edit": {"tf_reliability": 0.9, "tf_locality": 0.9, "fluency": 480.0},
        "post_refinement": {"tf_reliability": 0.95, "tf_locality": 0.8, "fluency": 490.0},
    }
    headline = headline_table(points)
    assert headline.splitlines()[2] == "| Edit Succ. | 10.0 | 90.0 | 95.0 | +5.0 |"
    assert "| Locality | 100.0 | 90.0 | 80.0 | -10.0 |" in headline
    assert "Portability" not in headline  # nothing measured it
    body = report_markdown(points, {"all": {"probes": 3, "tf_locality": 0.5, "changed": 1, "other": 1}})
    assert body.index("Edit Succ.") < body.index("Locality by probe key") < body.index("## All metrics")
    assert "| all | 3 | 50.0 | - | 1 | 0 | 0 | 1 |" in body


def test_eval_command_scores_a_checkpoint_against_a_baseline(tmp_path, capsys):
    model, tokenizer = make_model(seed=2), make_tokenizer()
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    save_cases(two_key_cases(), tmp_path / "cases.jsonl")
    out = tmp_path / "out"
    common = ["--data", str(tmp_path / "cases.jsonl"), "--evaluation.max_new_tokens", "3"]
    code = main(
        [
            "eval",
            "--model",
            str(tmp_path / "model"),
            "--baseline",
            str(tmp_path / "model"),
            "--output-dir",
            str(out),
        ]
        + common
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "| Locality | 100.0 | 100.0 | +0.0 |" in printed and "| Edit Succ. |" in printed
    records = json.loads((out / "results.json").read_text())
    assert {"case_id", "requested_rewrite", "pre", "post"} <= set(records[0])
    assert json.loads((out / "summary.json").read_text())["post"]["locality"]["neighbour_acc"] == 1.0
    for name in ("metrics.json", "per_case.jsonl", "probes.jsonl", "locality.json"):
        assert (out / "model" / name).is_file() and (out / "baseline" / name).is_file()
    # a saved baseline.json serves as well; without any baseline, locality is left out
    code = main(
        ["eval", "--model", str(tmp_path / "model"), "--baseline", str(out / "baseline" / "baseline.json")]
        + ["--output-dir", str(tmp_path / "again"), *common]
    )
    assert (
        code == 0
        and json.loads((tmp_path / "again" / "report.json").read_text())["model"]["tf_locality"] == 1.0
    )
    assert (
        main(["eval", "--model", str(tmp_path / "model"), "--output-dir", str(tmp_path / "bare"), *common])
        == 0
    )
    assert "tf_locality" not in json.loads((tmp_path / "bare" / "report.json").read_text())["model"]
