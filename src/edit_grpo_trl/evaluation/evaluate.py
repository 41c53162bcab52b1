"""Evaluate a model on edit cases: teacher-forced and generation-based KnowEdit metrics, batched.

Metric names: ``tf_*`` teacher-forced token accuracy (EasyEdit's numbers; the first accepted answer is the
target), ``gen_em_*`` greedy generation exact match and ``gen_contains_*`` its looser form (every accepted
answer counts), for ``reliability`` (the anchor), ``generalization`` (held-out paraphrases), ``portability``
(mean per key, then per case, then over cases; also per key), and ``locality`` (agreement with the
pre-edit model, from an :class:`EvalBaseline`); ``fluency`` is the n-gram entropy x100 of the anchor
generations. Values are shares in [0, 1] (fluency excepted).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edit_grpo_trl.answers import contains_match, exact_match, extract_plain, normalize_answer
from edit_grpo_trl.data.cases import EditCase, ProbeKind
from edit_grpo_trl.evaluation.metrics import locality_agreement, ngram_entropy, teacher_forced_predictions
from edit_grpo_trl.generation import greedy_generate


@dataclass
class EvalConfig:
    batch_size: int = 32
    max_new_tokens: int = 50
    teacher_forced: bool = True
    generation: bool = True
    fluency: bool = True


@dataclass
class EvalBaseline:
    """What locality compares against: the pre-edit model's outputs on every locality probe, by prompt."""

    argmax_tokens: dict[str, list[int]] = field(default_factory=dict)
    generations: dict[str, str] = field(default_factory=dict)

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


@dataclass
class EvalResult:
    metrics: dict[str, float]
    per_case: list[dict[str, Any]]
    baseline: EvalBaseline

    def save(self, out_dir: str | Path) -> Path:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, text in (
            ("per_case.jsonl", "".join(json.dumps(row) + "\n" for row in self.per_case)),
            ("metrics.json", json.dumps(self.metrics, indent=1)),
        ):
            temporary = out_dir / f"{name}.tmp"
            temporary.write_text(text)
            temporary.replace(out_dir / name)
        return out_dir


def _mean(values) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


def evaluate_cases(
    model,
    tokenizer,
    cases: list[EditCase],
    config: EvalConfig | None = None,
    baseline: EvalBaseline | None = None,
) -> EvalResult:
    """Every metric for ``cases``; without ``baseline`` this run *is* the reference (locality 1.0) and
    the baseline it records is returned for later points."""
    config = config or EvalConfig()
    # One flat list of probes: (case index, family, key, prompt, answers)
    items: list[tuple[int, str, str | None, str, tuple[str, ...]]] = []
    for index, case in enumerate(cases):
        items.append((index, "reliability", None, case.prompt, case.target_new))
        items += [
            (index, "generalization", None, p.prompt, p.answers)
            for p in case.probes_of(ProbeKind.EVAL_GENERALIZATION)
        ]
        items += [
            (index, "portability", p.key, p.prompt, p.answers) for p in case.probes_of(ProbeKind.PORTABILITY)
        ]
        items += [(index, "locality", p.key, p.prompt, p.answers) for p in case.probes_of(ProbeKind.LOCALITY)]
    prompts = [item[3] for item in items]
    recorded = EvalBaseline()
    scores: dict[str, list[float | None]] = {}
    if config.teacher_forced:
        predictions = teacher_forced_predictions(
            model, tokenizer, prompts, [i[4][0] for i in items], config.batch_size
        )
        tf = []
        for item, (target, predicted) in zip(items, predictions, strict=True):
            if item[1] == "locality":
                recorded.argmax_tokens[item[3]] = predicted
                reference = baseline.argmax_tokens.get(item[3]) if baseline else predicted
                tf.append(locality_agreement(reference, predicted) if reference is not None else None)
            else:
                tf.append(
                    sum(int(a == b) for a, b in zip(target, predicted, strict=True)) / max(1, len(target))
                )
        scores["tf"] = tf
    generations: list[str] = []
    if config.generation or config.fluency:
        generations = greedy_generate(
            model, tokenizer, prompts, max_new_tokens=config.max_new_tokens, batch_size=config.batch_size
        )
    if config.generation:
        em, contains = [], []
        for item, generation in zip(items, generations, strict=True):
            answer = extract_plain(generation)
            if item[1] == "locality":
                recorded.generations[item[3]] = generation
                reference = baseline.generations.get(item[3]) if baseline else generation
                same = (
                    None
                    if reference is None
                    else float(normalize_answer(reference) == normalize_answer(generation))
                )
                em.append(same)
                contains.append(same)
            else:
                em.append(float(exact_match(answer, item[4])))
                contains.append(float(contains_match(answer, item[4])))
        scores["gen_em"], scores["gen_contains"] = em, contains

    metrics: dict[str, float] = {}
    per_case = [
        {"case_id": c.case_id, "subject": c.subject, "prompt": c.prompt, "target_new": c.new_object}
        for c in cases
    ]
    for family_prefix, values in scores.items():
        grouped: dict[tuple[int, str], list[float]] = defaultdict(list)
        by_key: dict[tuple[int, str], list[float]] = defaultdict(list)
        for item, value in zip(items, values, strict=True):
            if value is None:
                continue
            grouped[(item[0], item[1])].append(value)
            if item[1] == "portability":
                by_key[(item[0], item[2])].append(value)
        names = ("reliability", "generalization", "portability", "locality")
        prefix = family_prefix
        for name in names:
            if family_prefix == "gen_contains" and name == "locality":
                continue  # generation locality is one number: pre/post equality, reported as gen_em_locality
            if name == "portability":
                per = {}
                for index in range(len(cases)):
                    keys = [
                        by_key[(index, k)]
                        for k in sorted({i[2] for i in items if i[0] == index and i[1] == name})
                    ]
                    key_means = [_mean(v) for v in keys if v]
                    if key_means:
                        per[index] = _mean(key_means)
            else:
                per = {
                    index: _mean(grouped[(index, name)])
                    for index in range(len(cases))
                    if grouped[(index, name)]
                }
            if per:
                metrics[f"{prefix}_{name}"] = _mean(per.values())
                for index, value in per.items():
                    per_case[index][f"{prefix}_{name}"] = value
        for key in sorted({i[2] for i in items if i[1] == "portability"}):
            values_for_key = [
                _mean(by_key[(index, key)]) for index in range(len(cases)) if by_key[(index, key)]
            ]
            if values_for_key:
                metrics[f"{prefix}_portability/{key}"] = _mean(values_for_key)
    if config.fluency and generations:
        anchor_generations = [
            g for item, g in zip(items, generations, strict=True) if item[1] == "reliability"
        ]
        metrics["fluency"] = 100 * _mean(
            ngram_entropy(f"{cases[i].prompt} {g}") for i, g in enumerate(anchor_generations)
        )
        for index, generation in enumerate(anchor_generations):
            per_case[index]["generation"] = generation
    return EvalResult(metrics=metrics, per_case=per_case, baseline=recorded)
