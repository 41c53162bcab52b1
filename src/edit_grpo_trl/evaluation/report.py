"""Reports: metrics at pre-edit, post-edit and post-refinement side by side, as JSON, Markdown and a plot."""

from __future__ import annotations

import json
from pathlib import Path

POINTS = ("pre_edit", "post_edit", "post_refinement")
LABELS = {"pre_edit": "pre-edit", "post_edit": "post-edit", "post_refinement": "post-refinement"}


def _format(metric: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if metric == "fluency" else f"{100 * value:.1f}"


def markdown_table(points: dict[str, dict[str, float]]) -> str:
    """Metric rows x point columns (percent; fluency as n-gram entropy x100), with refine - edit."""
    names = [p for p in POINTS if p in points]
    metrics = sorted({m for values in points.values() for m in values}, key=lambda m: (m == "fluency", m))
    header = "| metric | " + " | ".join(LABELS[p] for p in names) + " | change (refine - edit) |"
    lines = [header, "|" + " --- |" * (len(names) + 2)]
    for metric in metrics:
        row = [_format(metric, points[p].get(metric)) for p in names]
        post, refined = points.get("post_edit", {}).get(metric), points.get("post_refinement", {}).get(metric)
        change = "-"
        if post is not None and refined is not None:
            scale = 1 if metric == "fluency" else 100
            change = f"{scale * (refined - post):+.1f}"
        lines.append(f"| {metric} | " + " | ".join(row) + f" | {change} |")
    return "\n".join(lines)


def _plot(points: dict[str, dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = sorted({m for values in points.values() for m in values if m != "fluency" and "/" not in m})
    names = [p for p in POINTS if p in points]
    figure, axis = plt.subplots(figsize=(max(6, 0.9 * len(metrics)), 4))
    width = 0.8 / max(1, len(names))
    for offset, point in enumerate(names):
        values = [100 * (points[point].get(m) or 0) for m in metrics]
        axis.bar([i + offset * width for i in range(len(metrics))], values, width, label=LABELS[point])
    axis.set_xticks([i + width * (len(names) - 1) / 2 for i in range(len(metrics))])
    axis.set_xticklabels(metrics, rotation=35, ha="right", fontsize=8)
    axis.set_ylabel("%")
    axis.set_ylim(0, 105)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_report(points: dict[str, dict[str, float]], out_dir: str | Path, overwrite: bool = False) -> str:
    """Write report.json, report.md and report.png under ``out_dir``; returns the Markdown table."""
    out_dir = Path(out_dir)
    if (out_dir / "report.json").exists() and not overwrite:
        raise FileExistsError(
            f"a report already exists at {out_dir / 'report.json'}; pass overwrite=True to replace it"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    table = markdown_table(points)
    for name, text in (
        ("report.md", f"# Edit-GRPO report\n\n{table}\n"),
        ("report.json", json.dumps(points, indent=1)),
    ):
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
