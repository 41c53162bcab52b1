"""Does the pipeline give the same report under `accelerate launch` with DeepSpeed ZeRO-3 as without it?

Runs one recipe's pipeline plainly (one process), then its stage 2 under ZeRO-3 with ``--processes``
processes from the SAME stage-1 checkpoint, for each training seed; the seed-to-seed spread of the plain
runs is the sampling noise the differences are read against. ``--batch`` keeps the completions per optimizer
step the same in both modes (per process: batch / processes), and ``--split-check K`` makes the ZeRO-3 runs
check their first K generation batches against a one-process recomputation (the train marker records it).
Prints a table and writes every report and train marker to ``--out``. A rerun skips finished stages.

    python bench/zero3_parity.py --recipe recipes/world-small/memit.yaml --seeds 0 1 --out $OUT/zero3_parity.json
    python bench/zero3_parity.py --processes 2 --batch 30 --split-check 4 --seeds 0 1 --zero3-seeds 0 \
        --out $OUT/zero3_parity_2gpu.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from edit_grpo_trl.stages import RunLayout

REPO = Path(__file__).resolve().parent.parent
METRICS = (
    "gen_em_reliability",
    "gen_em_generalization",
    "gen_em_portability/Subject_Aliasing",
    "gen_em_portability/Reasoning",
    "gen_em_locality",
    "tf_locality",
)


def run(command: list[str], log: Path) -> float:
    started = time.perf_counter()
    with log.open("w") as stream:
        subprocess.run(command, stdout=stream, stderr=subprocess.STDOUT, cwd=REPO, check=True)
    return time.perf_counter() - started


def pipeline(recipe: str, run_dir: Path, seed: int, extra: list[str], processes: int | None) -> list[str]:
    """The command of one run: plain (``processes`` None) or under ZeRO-3 with that many processes."""
    entry = ["-m", "edit_grpo_trl.cli", "pipeline", "--config", recipe, "--output-dir", str(run_dir)]
    overrides = ["--training.seed", str(seed), *extra]
    if processes:
        launcher = [
            "accelerate",
            "launch",
            "--config_file",
            "accelerate_configs/zero3.yaml",
            "--num_processes",
            str(processes),
        ]
        return [*launcher, *entry, *overrides]
    return [sys.executable, *entry, *overrides]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipe", default="recipes/world-small/memit.yaml")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument(
        "--zero3-seeds", nargs="+", type=int, help="seeds also run under ZeRO-3 (default: all)"
    )
    parser.add_argument("--modes", nargs="+", choices=["plain", "zero3"], default=["plain", "zero3"])
    parser.add_argument("--processes", type=int, default=1, help="processes (GPUs) of the ZeRO-3 runs")
    parser.add_argument("--batch", type=int, help="completions per optimizer step, over all processes")
    parser.add_argument("--split-check", type=int, default=0, help="generation batches the ZeRO-3 runs check")
    parser.add_argument("--root", default="runs/zero3_parity")
    parser.add_argument("--out", required=True, help="JSON file for reports, markers and timings")
    options = parser.parse_args(argv)
    if options.batch and options.batch % options.processes:
        parser.error(f"--batch {options.batch} does not split evenly over --processes {options.processes}")
    root = Path(options.root)
    root.mkdir(parents=True, exist_ok=True)
    results = {}
    first = root / f"plain-seed{options.seeds[0]}"
    zero3_seeds = options.seeds if options.zero3_seeds is None else options.zero3_seeds
    # Every plain run first: they need one GPU, the ZeRO-3 runs may need all of them.
    for mode in options.modes:
        for seed in options.seeds:
            if mode == "zero3" and seed not in zero3_seeds:
                continue
            processes = options.processes if mode == "zero3" else None
            run_dir = root / f"{mode}-seed{seed}"
            # Every run but the first starts from the first run's stage-1 checkpoint.
            extra = (
                []
                if run_dir == first
                else ["--editor.name", "external", "--editor.checkpoint", str(RunLayout(first).edited_model)]
            )
            if options.batch:
                extra += ["--training.per_device_train_batch_size", str(options.batch // (processes or 1))]
            if processes and options.split_check:
                extra += ["--training.split_check_batches", str(options.split_check)]
            wall = run(
                pipeline(options.recipe, run_dir, seed, extra, processes), root / f"{mode}-seed{seed}.log"
            )
            layout = RunLayout(run_dir)
            report = json.loads((layout.report / "report.json").read_text())
            marker = json.loads(layout.marker("train").read_text())
            results[f"{mode}-seed{seed}"] = {"wall_seconds": wall, "train": marker, "report": report}
            checks = marker.get("split_checks") or []
            print(
                f"{mode} seed {seed}: train {marker['seconds']:.1f} s, ZeRO stage {marker.get('deepspeed_zero_stage')}, "
                f"{marker.get('processes', 1)} process(es), {len(checks)} split checks "
                f"({sum(c['straddling_cases'] for c in checks)} straddling cases, max |advantage diff| "
                f"{max((c['max_abs_diff_advantage'] for c in checks), default=0):.1e})",
                flush=True,
            )
    Path(options.out).write_text(json.dumps(results, indent=1))
    header = "| metric | " + " | ".join(results) + " | zero3 - plain (mean) | plain seed spread |"
    print(header)
    print("|" + " --- |" * (len(results) + 3))
    for metric in METRICS:
        values = {
            key: 100 * entry["report"]["post_refinement"].get(metric, float("nan"))
            for key, entry in results.items()
        }
        differences = [
            values[f"zero3-seed{s}"] - values[f"plain-seed{s}"]
            for s in zero3_seeds
            if f"zero3-seed{s}" in values
        ] or [float("nan")]
        plain = [values[f"plain-seed{s}"] for s in options.seeds]
        spread = statistics.stdev(plain) if len(plain) > 1 else float("nan")
        cells = " | ".join(f"{value:.1f}" for value in values.values())
        print(f"| {metric} | {cells} | {statistics.fmean(differences):+.1f} | {spread:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
