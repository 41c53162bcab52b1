"""Evaluate one checkpoint, as the pipeline's evaluation stages and ``edit-grpo eval`` both do.

``edit-grpo eval --model PATH --data SOURCE [--baseline PATH]`` scores any checkpoint a causal-LM loader
reads (a Hub folder, an edited checkpoint, a refined one) on any data source. Locality compares against a
baseline: the pre-edit model (evaluated here first) or a ``baseline.json`` an earlier evaluation saved.
Without one, locality is not reported (a model agrees with itself).

The output folder gets ``model/`` (and ``baseline/`` when a baseline model was given), each as the pipeline
writes its ``eval/<point>/`` folders, plus ``results.json`` (EasyEdit's layout, ``pre`` from the baseline
and ``post`` from the model), ``report.md`` / ``report.json`` (the headline table first) and
``summary.json`` (EasyEdit's per-key summary, as its ``summary_metrics`` prints it).
"""

from __future__ import annotations

import gc
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edit_grpo_trl.evaluation.evaluate import EvalBaseline, EvalConfig, EvalResult, evaluate_cases

logger = logging.getLogger(__name__)

LOCALITY_PREFIXES = ("tf_locality", "gen_em_locality", "gen_contains_locality")


def evaluate_checkpoint(
    load: Callable[[str], tuple[Any, Any]],
    model_path: str,
    cases,
    config: EvalConfig,
    out_dir: str | Path,
    baseline: EvalBaseline | None = None,
    easyedit_phase: str = "post",
    data=None,
) -> EvalResult:
    """Load ``model_path`` with ``load``, evaluate ``cases`` against ``baseline`` and save under ``out_dir``
    (``data``: the recipe's data section, how probes are asked when ``config.prompts`` is "data")."""
    model, tokenizer = load(model_path)
    try:
        result = evaluate_cases(model, tokenizer, list(cases), config, baseline=baseline, data=data)
    finally:
        del model
        gc.collect()
    result.save(out_dir, easyedit_phase=easyedit_phase)
    return result


def easyedit_results(pre: EvalResult | None, post: EvalResult) -> list[dict[str, Any]]:
    """EasyEdit's ``results.json``: per case ``case_id``, ``requested_rewrite``, ``pre`` and ``post``."""
    records = []
    for index, record in enumerate(post.easyedit):
        entry = {"case_id": record["case_id"], "requested_rewrite": record["requested_rewrite"]}
        if pre is not None:
            entry["pre"] = pre.easyedit[index]["phase"]
        entry["post"] = record["phase"]
        records.append(entry)
    return records


def easyedit_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    """EasyEdit's ``summary_metrics``: per phase, mean ``rewrite_acc`` and ``rephrase_acc`` over cases and,
    for ``locality`` and ``portability``, each ``<key>_acc`` averaged per case, then over cases."""
    summary: dict[str, Any] = {}
    for phase in ("pre", "post"):
        metrics: dict[str, Any] = {}
        for key in ("rewrite_acc", "rephrase_acc"):
            values = [sum(r[phase][key]) / len(r[phase][key]) for r in records if r.get(phase, {}).get(key)]
            if values:
                metrics[key] = sum(values) / len(values)
        for section in ("locality", "portability"):
            by_key: dict[str, list[float]] = {}
            for record in records:
                for key, values in record.get(phase, {}).get(section, {}).items():
                    if key.endswith("_acc") and values:
                        by_key.setdefault(key, []).append(sum(values) / len(values))
            if by_key:
                metrics[section] = {key: sum(v) / len(v) for key, v in sorted(by_key.items())}
        if metrics:
            summary[phase] = metrics
    return summary


def run_eval(
    load: Callable[[str], tuple[Any, Any]],
    model_path: str,
    cases,
    config: EvalConfig,
    out_dir: str | Path,
    baseline: str | None = None,
    data=None,
) -> dict[str, Any]:
    """The ``eval`` command: evaluate the baseline (a model, or a saved ``baseline.json``), then the model;
    write the EasyEdit files and the report. Returns ``{"points": ..., "report": markdown}``."""
    from edit_grpo_trl.evaluation.report import write_report

    out_dir = Path(out_dir)
    cases = list(cases)
    pre: EvalResult | None = None
    reference: EvalBaseline | None = None
    points: dict[str, dict[str, float]] = {}
    if baseline is not None and Path(baseline).is_file() and baseline.endswith(".json"):
        reference = EvalBaseline.load(baseline)
    elif baseline is not None:
        logger.info("evaluating the baseline %s", baseline)
        pre = evaluate_checkpoint(
            load, baseline, cases, config, out_dir / "baseline", easyedit_phase="pre", data=data
        )
        reference = pre.baseline
        pre.baseline.save(out_dir / "baseline" / "baseline.json")
        points["baseline"] = pre.metrics
    logger.info("evaluating %s", model_path)
    post = evaluate_checkpoint(
        load, model_path, cases, config, out_dir / "model", baseline=reference, data=data
    )
    metrics = dict(post.metrics)
    locality = post.locality_breakdown() if reference is not None else None
    if reference is None:
        dropped = [m for m in metrics if m.startswith(LOCALITY_PREFIXES)]
        for metric in dropped:
            del metrics[metric]
        if dropped:
            logger.warning("no --baseline: locality is not reported (it compares with a pre-edit model)")
    points["model"] = metrics
    records = easyedit_results(pre, post)
    if reference is None:
        for record in records:
            record["post"]["locality"] = {}
    (out_dir / "results.json").write_text(json.dumps(records, indent=1, ensure_ascii=False))
    (out_dir / "summary.json").write_text(json.dumps(easyedit_summary(records), indent=1))
    per_case = {"baseline": pre.per_case, "model": post.per_case} if pre is not None else None
    markdown = write_report(points, out_dir, overwrite=True, locality=locality, per_case=per_case)
    return {"points": points, "report": markdown, "out_dir": str(out_dir)}
