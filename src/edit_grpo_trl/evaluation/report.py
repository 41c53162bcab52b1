"""Reports: metrics at pre-edit, post-edit and post-refinement side by side, as JSON, Markdown and a plot.

The Markdown leads with EasyEdit's five KnowEdit metrics (:data:`HEADLINE`), then locality by probe key
with what changed answers flipped to (when the post-refinement evaluation saved it), then every metric.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from edit_grpo_trl.evaluation.paired import PairedTest, paired_case_tests

POINTS = ("pre_edit", "post_edit", "post_refinement")
LABELS = {"pre_edit": "pre-edit", "post_edit": "post-edit", "post_refinement": "post-refinement"}
# EasyEdit's KnowEdit names -> our metric (teacher-forced, as EasyEdit computes them; fluency x100)
HEADLINE = {
    "Edit Succ.": "tf_reliability",
    "Generalization": "tf_generalization",
    "Portability": "tf_portability",
    "Locality": "tf_locality",
    "Fluency": "fluency",
}
FLIP_LABELS = {
    "own_new_object": "-> own new object",
    "other_new_object": "-> another case's new object",
    "other": "-> something else",
}


def _point_names(points: dict) -> list[str]:
    """The pipeline's points in order, then any other (the eval command's ``baseline``, ``model``)."""
    return [p for p in POINTS if p in points] + [p for p in points if p not in POINTS]


def _format(metric: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if metric == "fluency" else f"{100 * value:.1f}"


def markdown_table(points: dict[str, dict[str, float]], rows: dict[str, str] | None = None) -> str:
    """Metric rows x point columns (percent; fluency as n-gram entropy x100), with refine - edit (the eval
    command's two points: model - baseline).

    ``rows`` maps row labels to metrics (the headline); by default every metric, under its own name."""
    names = _point_names(points)
    if rows is None:
        metrics = sorted({m for values in points.values() for m in values}, key=lambda m: (m == "fluency", m))
        rows = {m: m for m in metrics}
    before, after = compared_points(points)
    title = "model - baseline" if before == "baseline" else "refine - edit"
    header = "| metric | " + " | ".join(LABELS.get(p, p) for p in names) + f" | change ({title}) |"
    lines = [header, "|" + " --- |" * (len(names) + 2)]
    for label, metric in rows.items():
        row = [_format(metric, points[p].get(metric)) for p in names]
        post, refined = points.get(before, {}).get(metric), points.get(after, {}).get(metric)
        change = "-"
        if post is not None and refined is not None:
            scale = 1 if metric == "fluency" else 100
            change = f"{scale * (refined - post):+.1f}"
        lines.append(f"| {label} | " + " | ".join(row) + f" | {change} |")
    return "\n".join(lines)


def headline_table(points: dict[str, dict[str, float]]) -> str:
    """EasyEdit's five metrics (Edit Succ., Generalization, Portability, Locality, Fluency) by point;
    a metric no point measured is left out."""
    present = {label: m for label, m in HEADLINE.items() if any(m in values for values in points.values())}
    return markdown_table(points, present)


def locality_table(breakdown: dict[str, dict]) -> str:
    """Locality by probe key: teacher-forced locality, answer spans kept, and what changed spans became."""
    header = (
        "| probe key | probes | locality (tf) | answer span kept | changed | "
        + " | ".join(FLIP_LABELS.values())
        + " |"
    )
    lines = [header, "|" + " --- |" * (5 + len(FLIP_LABELS))]
    for key, row in breakdown.items():
        cells = [
            key,
            str(row["probes"]),
            _format("share", row.get("tf_locality")),
            _format("share", row.get("gen_em_locality")),
            str(row["changed"]),
            *(str(row.get(flip, 0)) for flip in FLIP_LABELS),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def compared_points(points: dict) -> tuple[str, str]:
    """The two points the change column compares: post-edit and post-refinement, or baseline and model."""
    if "model" in points and "baseline" in points:
        return "baseline", "model"
    return "post_edit", "post_refinement"


def paired_table(tests: dict[str, PairedTest], before: str, after: str) -> str:
    """The headline metrics' paired differences over cases, with the sign-flip permutation p-value."""
    header = (
        f"| metric | cases | mean change ({LABELS.get(after, after)} - {LABELS.get(before, before)}) | "
        "± std. error | cases better | cases worse | p (sign-flip permutation) |"
    )
    lines = [header, "| --- | --- | --- | --- | --- | --- | --- |"]
    for label, metric in HEADLINE.items():
        test = tests.get(metric)
        if test is None:
            continue
        scale = 1 if metric == "fluency" else 100
        lines.append(
            f"| {label} | {test.n} | {scale * test.mean:+.1f} | {scale * test.stderr:.1f} | {test.better} | "
            f"{test.worse} | {test.p_value:.3g} |"
        )
    return "\n".join(lines)


def report_markdown(
    points: dict[str, dict[str, float]],
    locality: dict[str, dict] | None = None,
    locality_of: str | None = None,
    paired: dict[str, PairedTest] | None = None,
) -> str:
    """The report's body: the headline table, the paired test over cases and locality by probe key (when
    given), every metric."""
    parts = [
        "EasyEdit's metrics (teacher-forced, averaged per key then over keys and cases; fluency: n-gram "
        "entropy x100 of a 100-token generation):\n",
        headline_table(points),
    ]
    if paired:
        before, after = compared_points(points)
        parts += [
            "\n## Paired over cases\n",
            "Each case's score at both points; the change's mean over the cases, and how often a mean change "
            "this large arises when each case's two scores are swapped at random (two-sided).\n",
            paired_table(paired, before, after),
        ]
    if locality:
        parts += [
            f"\n## Locality by probe key ({locality_of or LABELS.get(_point_names(points)[-1], _point_names(points)[-1])})\n",
            "A changed probe's greedy answer span differs from the pre-edit model's; it flipped to this "
            "case's new object, another case's, or something else. Rows pool their probes (the headline "
            "averages per key, then over keys and cases).\n",
            locality_table(locality),
        ]
    parts += ["\n## All metrics\n", markdown_table(points)]
    return "\n".join(parts)


def _plot(points: dict[str, dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = sorted({m for values in points.values() for m in values if m != "fluency" and "/" not in m})
    names = _point_names(points)
    figure, axis = plt.subplots(figsize=(max(6, 0.9 * len(metrics)), 4))
    width = 0.8 / max(1, len(names))
    for offset, point in enumerate(names):
        values = [100 * (points[point].get(m) or 0) for m in metrics]
        axis.bar(
            [i + offset * width for i in range(len(metrics))], values, width, label=LABELS.get(point, point)
        )
    axis.set_xticks([i + width * (len(names) - 1) / 2 for i in range(len(metrics))])
    axis.set_xticklabels(metrics, rotation=35, ha="right", fontsize=8)
    axis.set_ylabel("%")
    axis.set_ylim(0, 105)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_report(
    points: dict[str, dict[str, float]],
    out_dir: str | Path,
    overwrite: bool = False,
    locality: dict[str, dict] | None = None,
    per_case: Mapping[str, Sequence[Mapping]] | None = None,
) -> str:
    """Write report.json, report.md and report.png under ``out_dir``; returns the Markdown body.

    ``locality``: the post-refinement locality breakdown by probe key (``locality.json``), shown and
    saved as report_locality.json. ``per_case``: per-case rows by point (``per_case.jsonl``); with the
    two compared points present, the paired test over cases is shown and saved as report_paired.json."""
    out_dir = Path(out_dir)
    if (out_dir / "report.json").exists() and not overwrite:
        raise FileExistsError(
            f"a report already exists at {out_dir / 'report.json'}; pass overwrite=True to replace it"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    before, after = compared_points(points)
    paired = None
    if per_case and before in per_case and after in per_case:
        paired = paired_case_tests(per_case[before], per_case[after], list(HEADLINE.values()))
    table = report_markdown(points, locality, paired=paired)
    files = [("report.md", f"# Edit-GRPO report\n\n{table}\n"), ("report.json", json.dumps(points, indent=1))]
    if locality:
        files.append(("report_locality.json", json.dumps(locality, indent=1)))
    if paired:
        rows = {metric: vars(test) for metric, test in paired.items()}
        files.append(("report_paired.json", json.dumps({"before": before, "after": after, **rows}, indent=1)))
    for name, text in files:
        temporary = out_dir / f"{name}.tmp"
        temporary.write_text(text)
        temporary.replace(out_dir / name)
    _plot(points, out_dir / "report.png")
    return table


def log_report_to_wandb(run, points: dict[str, dict[str, float]], out_dir: str | Path) -> None:
    """Summary values, a table and the plot, on a W&B run (wandb imported only here)."""
    import wandb

    metrics = sorted({m for values in points.values() for m in values})
    table = wandb.Table(columns=["metric", *points])
    for metric in metrics:
        table.add_data(metric, *[points[p].get(metric) for p in points])
        for point, values in points.items():
            if metric in values:
                run.summary[f"{point}/{metric}"] = values[metric]
    run.log({"report/table": table, "report/plot": wandb.Image(str(Path(out_dir) / "report.png"))})
