"""Does the pipeline give the same report under `accelerate launch` with DeepSpeed ZeRO-3 as without it?

Runs one recipe's pipeline plainly, then its stage 2 under ZeRO-3 (one process) from the SAME stage-1
checkpoint, for each training seed; the seed-to-seed spread of the plain runs is the sampling noise the
differences are read against. Prints a table and writes every report and train marker to ``--out``.

    python bench/zero3_parity.py --recipe recipes/world-small/memit.yaml --seeds 0 1 --out $OUT/zero3_parity.json
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
)


def run(command: list[str], log: Path) -> float:
    started = time.perf_counter()
    with log.open("w") as stream:
        subprocess.run(command, stdout=stream, stderr=subprocess.STDOUT, cwd=REPO, check=True)
    return time.perf_counter() - started


def pipeline(recipe: str, run_dir: Path, seed: int, extra: list[str], zero3: bool) -> list[str]:
    entry = ["-m", "edit_grpo_trl.cli", "pipeline", "--config", recipe, "--output-dir", str(run_dir)]
    overrides = ["--training.seed", str(seed), *extra]
    if zero3:
        launcher = [
            "accelerate",
            "launch",
            "--config_file",
            "accelerate_configs/zero3.yaml",
            "--num_processes",
            "1",
        ]
        return [*launcher, *entry, *overrides]
    return [sys.executable, *entry, *overrides]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipe", default="recipes/world-small/memit.yaml")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--root", default="runs/zero3_parity")
    parser.add_argument("--out", required=True, help="JSON file for reports, markers and timings")
    options = parser.parse_args(argv)
    root = Path(options.root)
    root.mkdir(parents=True, exist_ok=True)
    results = {}
    first = root / f"plain-seed{options.seeds[0]}"
    for seed in options.seeds:
        for mode in ("plain", "zero3"):
            run_dir = root / f"{mode}-seed{seed}"
            # Every run but the first starts from the first run's stage-1 checkpoint.
            reuse = (
                []
                if run_dir == first
                else ["--editor.name", "external", "--editor.checkpoint", str(RunLayout(first).edited_model)]
            )
            wall = run(
                pipeline(options.recipe, run_dir, seed, reuse, mode == "zero3"),
                root / f"{mode}-seed{seed}.log",
            )
            layout = RunLayout(run_dir)
            report = json.loads((layout.report / "report.json").read_text())
            marker = json.loads(layout.marker("train").read_text())
            results[f"{mode}-seed{seed}"] = {"wall_seconds": wall, "train": marker, "report": report}
            print(
                f"{mode} seed {seed}: train {marker['seconds']:.1f} s, ZeRO stage {marker.get('deepspeed_zero_stage')}",
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
        differences = [values[f"zero3-seed{s}"] - values[f"plain-seed{s}"] for s in options.seeds]
        plain = [values[f"plain-seed{s}"] for s in options.seeds]
        spread = statistics.stdev(plain) if len(plain) > 1 else float("nan")
        cells = " | ".join(f"{value:.1f}" for value in values.values())
        print(f"| {metric} | {cells} | {statistics.fmean(differences):+.1f} | {spread:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
