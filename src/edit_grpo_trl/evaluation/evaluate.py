"""Evaluate a model on edit cases: EasyEdit's metrics, teacher-forced and generation-based, batched.

Every probe family (``reliability``: the anchor; ``generalization``: held-out paraphrases; ``portability``;
``locality``) is averaged the way EasyEdit's KnowEdit summary does it: within a case, the probes of one key
are averaged, then the keys; then the cases. Per-key figures (``<metric>/<key>``) average that key over
the cases that have it. Reliability and generalization are plain per-case means; a held-out probe's key
(the world's template key) gives ``<metric>_generalization/<key>``, and ``<metric>_generalization_beyond_anchor``
averages only the held-out prompts that do not end with the edit prompt word for word (one that does asks the
edit again, so it follows reliability).

* ``tf_*``: teacher-forced token accuracy, EasyEdit's ``test_prediction_acc``: the share of answer tokens
  whose argmax, given the prompt and the answer's earlier tokens, is that token (the first accepted answer
  is scored). ``tf_reliability`` is EasyEdit's ``rewrite_acc`` (Edit Succ.), ``tf_generalization`` its
  ``rephrase_acc``, ``tf_portability`` its portability ``<key>_acc``. ``tf_locality`` is EasyEdit's
  locality ``<key>_acc``: the share of the locality answer's tokens at which the model's argmax equals the
  pre-edit model's.
* ``gen_em_*`` / ``gen_contains_*``: greedy generation, read up to the first sentence end, matched exactly
  (normalized) or by whole words against every accepted answer.
* ``gen_em_locality``: the answer span. Greedy decoding is kept for as many tokens as the locality
  answer has (EasyEdit's generation-based locality); the probe counts 1 when that span is the pre-edit
  model's token for token, else 0. Phrasing after the answer does not count.
* ``fluency``: EasyEdit's n-gram entropy (x100) of a 100-token top-5 sampled continuation of the anchor,
  prompt included (:func:`~edit_grpo_trl.evaluation.metrics.sample_fluency_texts`).

Values are shares in [0, 1] (fluency excepted). Besides the metrics, a result holds every probe's row
(prompt, answers, scores, greedy generation; for locality the pre-edit span and, when the span changed,
what the answer flipped to: ``own_new_object``, ``other_new_object`` or ``other``), and can write the
cases in EasyEdit's ``results.json`` layout.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edit_grpo_trl.answers import answer_completion, contains_match, exact_match, extract_answer
from edit_grpo_trl.data.agt_config import AGTDataConfig
from edit_grpo_trl.data.cases import EditCase, ProbeKind
from edit_grpo_trl.evaluation.config import EvalConfig
from edit_grpo_trl.evaluation.metrics import (
    _target_tokens,
    locality_agreement,
    ngram_entropy,
    sample_fluency_texts,
    teacher_forced_predictions,
)
from edit_grpo_trl.generation import completion_text, greedy_token_ids, stop_token_ids

FAMILIES = ("reliability", "generalization", "portability", "locality")
FLIPS = ("own_new_object", "other_new_object", "other")
# EasyEdit's names for the families, as its results.json spells them
EASYEDIT_KEYS = {"reliability": "rewrite_acc", "generalization": "rephrase_acc"}
PER_CASE_FILE = "per_case.jsonl"  # one row per case: its id and every metric's score for that case


@dataclass
class EvalBaseline:
    """What locality compares against: the pre-edit model's outputs on every locality probe, by prompt
    (teacher-forced argmax tokens over the answer, greedy text, greedy answer-span token ids)."""

    argmax_tokens: dict[str, list[int]] = field(default_factory=dict)
    generations: dict[str, str] = field(default_factory=dict)
    spans: dict[str, list[int]] = field(default_factory=dict)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(asdict(self)))
        temporary.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> EvalBaseline:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no evaluation baseline at {path}")
        return cls(**json.loads(path.read_text()))


def _write(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    temporary.replace(path)


@dataclass
class EvalResult:
    metrics: dict[str, float]
    per_case: list[dict[str, Any]]
    baseline: EvalBaseline
    probes: list[dict[str, Any]] = field(default_factory=list)
    easyedit: list[dict[str, Any]] = field(default_factory=list)

    def locality_breakdown(self) -> dict[str, dict[str, Any]]:
        """Locality per probe key (and ``all``): probes, teacher-forced and answer-span locality, how many
        spans changed and what they flipped to."""
        return locality_breakdown(self.probes)

    def save(self, out_dir: str | Path, easyedit_phase: str = "post") -> Path:
        """metrics.json, per_case.jsonl, probes.jsonl (one row per probe, generations included),
        locality.json (by probe key) and results.json (EasyEdit's layout, under ``easyedit_phase``)."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        _write(out_dir / PER_CASE_FILE, "".join(json.dumps(row) + "\n" for row in self.per_case))
        _write(out_dir / "probes.jsonl", "".join(json.dumps(row) + "\n" for row in self.probes))
        _write(out_dir / "locality.json", json.dumps(self.locality_breakdown(), indent=1))
        records = [
            {key: value for key, value in record.items() if key != "phase"}
            | {easyedit_phase: record["phase"]}
            for record in self.easyedit
        ]
        _write(out_dir / "results.json", json.dumps(records, indent=1, ensure_ascii=False))
        _write(out_dir / "metrics.json", json.dumps(self.metrics, indent=1))
        return out_dir


def read_per_case(out_dir: str | Path) -> list[dict[str, Any]] | None:
    """The per-case rows an evaluation saved under ``out_dir`` (:meth:`EvalResult.save`), or None if none."""
    path = Path(out_dir) / PER_CASE_FILE
    if not path.is_file():
        return None
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _mean(values: Iterable[float]) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


def easyedit_average(
    scores: dict[tuple[int, str | None], list[float]],
) -> tuple[float | None, dict[int, float]]:
    """EasyEdit's KnowEdit averaging of ``{(case, key): [probe scores]}``: per case, the mean over keys of
    each key's probe mean; then the mean over cases. Returns (overall, per case)."""
    by_case: dict[int, list[float]] = defaultdict(list)
    for (case, _), values in sorted(scores.items(), key=lambda item: (item[0][0], str(item[0][1]))):
        if values:
            by_case[case].append(sum(values) / len(values))
    per_case = {case: sum(means) / len(means) for case, means in by_case.items()}
    return _mean(per_case.values()), per_case


def _unkeyed(scores: dict[tuple[int, str | None], list[float]]) -> dict[tuple[int, None], list[float]]:
    """The same probe scores with their keys dropped: one group per case."""
    merged: dict[tuple[int, None], list[float]] = defaultdict(list)
    for (case, _), values in sorted(scores.items(), key=lambda item: (item[0][0], str(item[0][1]))):
        merged[(case, None)] += values
    return merged


def per_key_average(scores: dict[tuple[int, str | None], list[float]]) -> dict[str, float]:
    """EasyEdit's per-key summary: for each key, the mean over cases of the case's probe mean."""
    by_key: dict[str, list[float]] = defaultdict(list)
    for (_, key), values in scores.items():
        if key is not None and values:
            by_key[key].append(sum(values) / len(values))
    return {key: sum(v) / len(v) for key, v in sorted(by_key.items())}


def locality_breakdown(probes: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Locality probe rows grouped by key (``all`` first): counts, mean teacher-forced agreement, share of
    unchanged answer spans, changed spans and what they flipped to."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in probes:
        if row["family"] == "locality":
            groups["all"].append(row)
            groups[row["key"] or "-"].append(row)
    table = {}
    for key in ["all", *sorted(k for k in groups if k != "all")]:
        rows = groups[key]
        flips = Counter(row["flipped_to"] for row in rows if row.get("flipped_to"))
        table[key] = {
            "probes": len(rows),
            "tf_locality": _mean(row["tf"] for row in rows if row.get("tf") is not None),
            "gen_em_locality": _mean(row["gen_em"] for row in rows if row.get("gen_em") is not None),
            "changed": sum(1 for row in rows if row.get("gen_em") == 0.0),
            **{flip: flips.get(flip, 0) for flip in FLIPS},
        }
    return table


def _flip(answer: str, own: Iterable[str], others: Iterable[str]) -> str:
    if contains_match(answer, own):
        return "own_new_object"
    if contains_match(answer, others):
        return "other_new_object"
    return "other"


def _span_same(reference: list[int] | None, span: list[int]) -> float | None:
    return None if reference is None else float(list(reference) == list(span))


def evaluate_cases(
    model,
    tokenizer,
    cases: list[EditCase],
    config: EvalConfig | None = None,
    baseline: EvalBaseline | None = None,
    data: AGTDataConfig | None = None,
) -> EvalResult:
    """Every metric for ``cases``; without ``baseline`` this run *is* the reference (locality 1.0) and
    the baseline it records is returned for later points.

    With ``config.prompts == "data"`` every probe is asked in ``data``'s prompt style (chat-rendered, the
    answer read from its box or first sentence) and teacher-forced on the answer as that style states it
    (``\\boxed{answer}``; read plainly, the answer after the prompt restated in the reply); rows and the
    baseline stay keyed by the case prompt. Fluency always continues the plain anchor."""
    from edit_grpo_trl.data.agt import render_prompts  # imports datasets: only when evaluating

    config = config or EvalConfig()
    if config.prompts == "data" and data is None:
        raise ValueError("evaluation.prompts 'data' asks as training does: pass the data section (data=)")
    asking = data if config.prompts == "data" else AGTDataConfig()
    style = asking.answer_style
    # One flat list of probes: (case index, family, key, prompt, answers)
    items: list[tuple[int, str, str | None, str, tuple[str, ...]]] = []
    for index, case in enumerate(cases):
        items.append((index, "reliability", None, case.prompt, case.target_new))
        items += [
            (index, "generalization", p.key, p.prompt, p.answers)
            for p in case.probes_of(ProbeKind.EVAL_GENERALIZATION)
        ]
        items += [
            (index, "portability", p.key, p.prompt, p.answers) for p in case.probes_of(ProbeKind.PORTABILITY)
        ]
        items += [(index, "locality", p.key, p.prompt, p.answers) for p in case.probes_of(ProbeKind.LOCALITY)]
    prompts = render_prompts(tokenizer, [item[3] for item in items], asking)
    rows: list[dict[str, Any]] = [
        {
            "case_id": cases[item[0]].case_id,
            "family": item[1],
            "key": item[2],
            "prompt": item[3],
            "answers": list(item[4]),
        }
        for item in items
    ]
    recorded = EvalBaseline()
    locality_tokens: dict[int, list[int]] = {}
    if config.teacher_forced:
        forced = prompts
        if asking.prompt_style == "chat" and style == "plain":
            # a chat reply read plainly restates the prompt, then answers ("The capital of X is Y."): the
            # answer is teacher-forced after that restatement, as after a plain prompt
            forced = [text + item[3] for text, item in zip(prompts, items, strict=True)]
        predictions = teacher_forced_predictions(
            model,
            tokenizer,
            forced,
            [answer_completion(i[4][0], style).strip() for i in items],
            config.batch_size,
            progress=config.progress,
        )
        for position, (item, (target, predicted)) in enumerate(zip(items, predictions, strict=True)):
            if item[1] == "locality":
                locality_tokens[position] = predicted
                recorded.argmax_tokens[item[3]] = predicted
                reference = baseline.argmax_tokens.get(item[3]) if baseline else predicted
                comparable = reference is not None and len(reference) == len(predicted)
                rows[position]["tf"] = locality_agreement(reference, predicted) if comparable else None
            else:
                rows[position]["tf"] = sum(int(a == b) for a, b in zip(target, predicted, strict=True)) / max(
                    1, len(target)
                )
    if config.generation:
        # a boxed answer may follow a sentence or a line of working: only EOS ends it
        stop_ids = stop_token_ids(tokenizer) if style == "plain" else {tokenizer.eos_token_id}
        stop_ids.discard(None)
        generated = greedy_token_ids(
            model,
            tokenizer,
            prompts,
            config.max_new_tokens,
            stop_ids,
            batch_size=config.batch_size,
            show_progress=config.progress,
        )
        new_objects = [case.target_new for case in cases]
        for position, (item, ids) in enumerate(zip(items, generated, strict=True)):
            text = completion_text(tokenizer, ids, stop_ids)
            row = rows[position]
            row["generation"] = text
            answer = extract_answer(text, style)
            if item[1] != "locality":
                row["gen_em"] = float(exact_match(answer, item[4]))
                row["gen_contains"] = float(contains_match(answer, item[4]))
                continue
            target = answer_completion(item[4][0], style).strip()
            span = ids[: len(_target_tokens(tokenizer, prompts[position], target)[1])]
            recorded.generations[item[3]] = text
            recorded.spans[item[3]] = span
            reference = baseline.spans.get(item[3]) if baseline else span
            row["answer_span"] = tokenizer.decode(span, skip_special_tokens=True).strip()
            row["gen_em"] = _span_same(reference, span)
            if baseline is not None:
                row["pre_generation"] = baseline.generations.get(item[3])
                if reference is not None:
                    row["pre_answer_span"] = tokenizer.decode(reference, skip_special_tokens=True).strip()
            if row["gen_em"] == 0.0:
                others = [a for i, answers in enumerate(new_objects) if i != item[0] for a in answers]
                row["flipped_to"] = _flip(answer, new_objects[item[0]], others)

    metrics: dict[str, float] = {}
    per_case: list[dict[str, Any]] = [
        {"case_id": c.case_id, "subject": c.subject, "prompt": c.prompt, "target_new": c.new_object}
        for c in cases
    ]
    # A held-out prompt that ends with the edit prompt word for word asks the edit again ("Where was X born ?
    # X was born in"): its score follows reliability, so generalization is also reported without those.
    beyond_anchor = [
        item[1] == "generalization" and not item[3].endswith(cases[item[0]].prompt) for item in items
    ]
    for prefix, field_name in (("tf", "tf"), ("gen_em", "gen_em"), ("gen_contains", "gen_contains")):
        for family in FAMILIES:
            scores: dict[tuple[int, str | None], list[float]] = defaultdict(list)
            for item, row in zip(items, rows, strict=True):
                if item[1] == family and row.get(field_name) is not None:
                    scores[(item[0], item[2])].append(row[field_name])
            if family == "generalization":
                # EasyEdit's rephrase_acc is the plain mean over a case's paraphrases; the keys (templates)
                # are reported apart
                by_template, scores = scores, _unkeyed(scores)
            overall, by_case = easyedit_average(scores)
            if overall is None:
                continue
            metrics[f"{prefix}_{family}"] = overall
            for index, value in by_case.items():
                per_case[index][f"{prefix}_{family}"] = value
            for key, value in per_key_average(by_template if family == "generalization" else scores).items():
                metrics[f"{prefix}_{family}/{key}"] = value
        beyond: dict[tuple[int, str | None], list[float]] = defaultdict(list)
        for item, row, counted in zip(items, rows, beyond_anchor, strict=True):
            if counted and row.get(field_name) is not None:
                beyond[(item[0], None)].append(row[field_name])
        overall, by_case = easyedit_average(beyond)
        if overall is not None:
            metrics[f"{prefix}_generalization_beyond_anchor"] = overall
            for index, value in by_case.items():
                per_case[index][f"{prefix}_generalization_beyond_anchor"] = value
    entropies: list[float] = []
    if config.fluency:
        fluency_texts = sample_fluency_texts(
            model,
            tokenizer,
            [case.prompt for case in cases],
            max_length=config.fluency_max_length,
            top_k=config.fluency_top_k,
            seed=config.seed,
            batch_size=config.batch_size,
            progress=config.progress,
        )
        entropies = [ngram_entropy(text) for text in fluency_texts]
        metrics["fluency"] = 100 * _mean(entropies)
        for index, (text, entropy) in enumerate(zip(fluency_texts, entropies, strict=True)):
            per_case[index]["fluency"] = 100 * entropy
            per_case[index]["fluency_text"] = text
    for index, row in enumerate(rows):
        if row["family"] == "reliability" and "generation" in row:
            per_case[items[index][0]]["generation"] = row["generation"]
    easyedit = _easyedit_records(cases, items, rows, locality_tokens, entropies, baseline is None)
    return EvalResult(metrics=metrics, per_case=per_case, baseline=recorded, probes=rows, easyedit=easyedit)


def _easyedit_records(cases, items, rows, locality_tokens, entropies, reference_run: bool):
    """One record per case as EasyEdit's ``results.json`` holds it: ``case_id``, ``requested_rewrite``
    (prompt, target_new, ground_truth, rephrase_prompt, subject, portability/locality prompts and answers
    per key) and the point's metrics (``rewrite_acc``, ``rephrase_acc``, ``portability`` ``{key}_acc`` lists,
    ``locality`` ``{key}_acc`` lists, or ``{key}_output`` argmax tokens when this run is the pre-edit
    reference, and ``fluency`` ``{"ngram_entropy": ...}``), stored under "phase" until saved."""
    records = []
    for index, case in enumerate(cases):
        request: dict[str, Any] = {
            "prompt": case.prompt,
            "target_new": case.new_object,
            "ground_truth": case.target_true,
            "subject": case.subject,
            "rephrase_prompt": [p.prompt for p in case.probes_of(ProbeKind.EVAL_GENERALIZATION)],
            "portability": {},
            "locality": {},
        }
        phase: dict[str, Any] = {"portability": {}, "locality": {}}
        for position, (item, row) in enumerate(zip(items, rows, strict=True)):
            if item[0] != index:
                continue
            family, key = item[1], item[2] or "default"
            if family in EASYEDIT_KEYS:
                if row.get("tf") is not None:
                    phase.setdefault(EASYEDIT_KEYS[family], []).append(row["tf"])
                continue
            section = request[family].setdefault(key, {"prompt": [], "ground_truth": []})
            section["prompt"].append(item[3])
            section["ground_truth"].append(item[4][0])
            if family == "locality" and reference_run:
                if position in locality_tokens:
                    phase["locality"].setdefault(f"{key}_output", []).append(locality_tokens[position])
            elif row.get("tf") is not None:
                phase[family].setdefault(f"{key}_acc", []).append(row["tf"])
        if entropies:
            phase["fluency"] = {"ngram_entropy": entropies[index]}
        records.append({"case_id": index, "requested_rewrite": request, "phase": phase})
    return records
