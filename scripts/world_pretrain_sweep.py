"""Time the knowledge world's pretraining under variants of a size's settings, each pinned to its own CPU
cores (an idle few-core box per variant), to pick settings that reach the recall target fastest.

    python scripts/world_pretrain_sweep.py --size tiny --cores-per-run 2 --out sweep.jsonl \
        --variant base --variant lr=8e-3 --variant lr=8e-3,batch_size=128
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time


def parse_variant(text: str) -> dict:
    if text == "base":
        return {}
    settings = {}
    for pair in text.split(","):
        key, _, value = pair.partition("=")
        key = {"lr": "learning_rate"}.get(key, key)
        settings[key] = float(value) if any(c in value for c in ".e") else int(value)
    return settings


def run_one(size: str, variant: str, threads: int) -> dict:
    from edit_grpo_trl.data.world import SIZES, KnowledgeWorld, pretrain

    name = f"{size}"
    settings = parse_variant(variant)
    threads = int(settings.pop("threads", threads))
    SIZES[name] = dataclasses.replace(SIZES[size], **settings)
    world = KnowledgeWorld.generate(name, 0)
    started = time.perf_counter()
    _, _, report = pretrain(world, device="cpu", show_progress=False, threads=threads)
    report["variant"] = variant
    report["wall_seconds"] = round(time.perf_counter() - started, 1)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--variant", action="append", default=[])
    parser.add_argument("--cores-per-run", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="world_sweep.jsonl")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.one is not None:
        print(json.dumps(run_one(options.size, options.one, options.threads)))
        return 0
    children = []
    for index, variant in enumerate(options.variant or ["base"]):
        first = index * options.cores_per_run
        cores = ",".join(str(first + k) for k in range(options.cores_per_run))
        command = [
            "taskset",
            "-c",
            cores,
            sys.executable,
            __file__,
            "--size",
            options.size,
            "--one",
            variant,
            "--threads",
            str(options.threads),
        ]
        children.append(subprocess.Popen(command, stdout=subprocess.PIPE, env=dict(os.environ)))
    with open(options.out, "w") as out:
        for child in children:
            stdout, _ = child.communicate()
            line = stdout.decode().strip().splitlines()[-1] if stdout.strip() else "{}"
            out.write(line + "\n")
            report = json.loads(line)
            print(
                report.get("variant"),
                report.get("threads"),
                report.get("steps"),
                report.get("seconds"),
                report.get("recall"),
                [
                    (h["step"], h["seconds"], h["heldout"], h["alias"], h["two_hop"], h["chat"])
                    for h in report.get("history", [])
                ][-3:],
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
