"""PGAA's cost: median optimizer-step time of EditGRPOTrainer against TRL's GRPOTrainer.

Same model (random weights, seeded), same data, same seed, same batch geometry, in one process, one
condition after the other. A step is timed from `on_step_begin` to `on_step_end` (generation, scoring,
PGAA, loss, backward, optimizer), after `--warmup` steps. Prints a table and writes JSON.

    python bench/pgaa_overhead.py --size 110m --steps 12            # GPU
    python bench/pgaa_overhead.py --size 110m --steps 6 --batch 8   # CPU (slow)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import TrainerCallback
from trl import GRPOConfig, GRPOTrainer

sys.path.insert(0, str(Path(__file__).parent))
from workload import SIZES, make_agt_dataset, make_model, make_tokenizer, parameter_count  # noqa: E402

from edit_grpo_trl import EditGRPOConfig, EditGRPOTrainer  # noqa: E402
from edit_grpo_trl.stage2.rewards import resolve_reward_functions  # noqa: E402


class StepTimer(TrainerCallback):
    def __init__(self):
        self.times, self._start = [], None

    def _sync(self):
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def on_step_begin(self, args, state, control, **kwargs):
        self._sync()
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self._sync()
        self.times.append(time.perf_counter() - self._start)


def run_condition(name: str, options, dataset, tokenizer) -> dict:
    on_gpu = torch.cuda.is_available()
    common = dict(
        output_dir=f"/tmp/pgaa_overhead/{name}",
        per_device_train_batch_size=options.batch,
        steps_per_generation=1,
        num_generations=options.num_generations,
        max_completion_length=options.completion_length,
        max_steps=options.steps + options.warmup,
        learning_rate=1e-6,
        logging_steps=1000,
        report_to="none",
        save_strategy="no",
        gradient_checkpointing=False,
        bf16=on_gpu,
        use_cpu=not on_gpu,
        seed=0,
        disable_tqdm=True,
    )
    model = make_model(options.size, seed=0)
    rewards = resolve_reward_functions(
        ["anchor_accuracy", "generalization_accuracy", "locality_preservation"]
    )
    if name == "trl_grpo":
        trainer = GRPOTrainer(
            model,
            reward_funcs=rewards,
            args=GRPOConfig(**common),
            train_dataset=dataset,
            processing_class=tokenizer,
        )
    else:
        coef = float(name.split("_coef")[1])
        args = EditGRPOConfig(**common, alignment_coef=coef, alignment_layer=SIZES[options.size].layers // 2)
        trainer = EditGRPOTrainer(
            model, reward_funcs=rewards, args=args, train_dataset=dataset, processing_class=tokenizer
        )
    timer = StepTimer()
    trainer.add_callback(timer)
    trainer.train()
    timed = timer.times[options.warmup :]
    peak = torch.cuda.max_memory_allocated() / 2**30 if on_gpu else None
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    del trainer, model
    if on_gpu:
        torch.cuda.empty_cache()
    return {"condition": name, "median_s": statistics.median(timed), "steps_s": timed, "peak_gib": peak}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="110m", choices=sorted(SIZES))
    parser.add_argument("--steps", type=int, default=10, help="timed steps per condition")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument(
        "--batch", type=int, default=32, help="completions per step (per_device_train_batch_size)"
    )
    parser.add_argument("--num-generations", type=int, default=8)
    parser.add_argument("--completion-length", type=int, default=32)
    parser.add_argument("--cases", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2, help="repeat the sequence of conditions")
    parser.add_argument("--out", default="pgaa_overhead.json")
    options = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    spec = SIZES[options.size]
    tokenizer = make_tokenizer(spec.vocab)
    # Cases of 1 anchor + 2 generalization + 1 locality prompts: batch / G must be a multiple of 4.
    dataset = make_agt_dataset(options.cases, spec.vocab)
    params = parameter_count(make_model(options.size, device="meta"))
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(
        f"model {options.size}: {params / 1e6:.1f}M parameters; device {device}; batch {options.batch} "
        f"completions of {options.completion_length} tokens, G={options.num_generations}",
        flush=True,
    )
    names = ("trl_grpo", "edit_grpo_coef0.2", "edit_grpo_coef0.0")
    runs = [run_condition(name, options, dataset, tokenizer) for _ in range(options.rounds) for name in names]
    results = []
    for name in names:
        mine = [run for run in runs if run["condition"] == name]
        steps = [t for run in mine for t in run["steps_s"]]
        peaks = [run["peak_gib"] for run in mine if run["peak_gib"] is not None]
        results.append(
            {
                "condition": name,
                "median_s": statistics.median(steps),
                "round_medians_s": [run["median_s"] for run in mine],
                "steps_s": steps,
                "peak_gib": max(peaks) if peaks else None,
            }
        )
    base = results[0]["median_s"]
    print(
        f"{'condition':<20}{'median step (s)':>16}{'ratio to TRL':>14}{'round medians (s)':>24}{'peak GiB':>10}"
    )
    for result in results:
        result["ratio_to_trl"] = result["median_s"] / base
        peak = f"{result['peak_gib']:.2f}" if result["peak_gib"] is not None else "-"
        rounds = " ".join(f"{m:.3f}" for m in result["round_medians_s"])
        print(
            f"{result['condition']:<20}{result['median_s']:>16.4f}{result['ratio_to_trl']:>14.3f}{rounds:>24}"
            f"{peak:>10}"
        )
    Path(options.out).write_text(
        json.dumps(
            {"device": device, "params": params, "options": vars(options), "results": results}, indent=2
        )
    )


if __name__ == "__main__":
    main()
