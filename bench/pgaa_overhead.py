"""PGAA's cost: optimizer-step time of EditGRPOTrainer against TRL's GRPOTrainer.

Same model (random weights, seeded), same data, same seed, same batch geometry, in one process, one
condition after the other. A step is timed from `on_step_begin` to `on_step_end` (generation, scoring,
PGAA, loss, backward, optimizer), after `--warmup` steps; a condition's step time is the median step, or
the mean over whole generation cycles when `--steps-per-generation` > 1. `--profile` adds one more
Edit-GRPO run that times its phases. Prints a table and writes JSON.

    python bench/pgaa_overhead.py --size 110m --steps 12            # GPU
    python bench/pgaa_overhead.py --size 110m --steps 6 --batch 8   # CPU (slow)
    python bench/pgaa_overhead.py --size smollm2-135m --batch 48 --num-generations 4 --completion-length 256 \
        --steps 6 --warmup 2 --profile                                 # SmolLM2-135M's shape
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
from workload import (  # noqa: E402
    SIZES,
    make_agt_dataset,
    make_model,
    make_tokenizer,
    parameter_count,
    training_settings,
)

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


# Methods whose time the profile reports (TRL's and ours); nested ones are inside their parent's time.
PROFILED = (
    ("training_step", "training_step: scoring (when a generation batch starts) + loss forward/backward"),
    ("_prepare_inputs", "_prepare_inputs: generation and scoring of a generation batch"),
    ("_generate", "_generate: sampling the completions"),
    ("_local_alignment_cosines", "_local_alignment_cosines: PGAA's feature pass and cosines"),
)


class PhaseClock:
    """Wall time per method, summed over a run: each profiled method of one trainer is wrapped with a
    CUDA-synchronized timer. Only the profiled run is wrapped, so the timed runs carry no extra syncs."""

    def __init__(self, trainer):
        self.seconds = {name: 0.0 for name, _ in PROFILED}
        for name, _ in PROFILED:
            if hasattr(trainer, name):
                setattr(trainer, name, self._timed(name, getattr(trainer, name)))

    def _timed(self, name, method):
        def timed(*args, **kwargs):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                self.seconds[name] += time.perf_counter() - start

        return timed


def typical(step_seconds: list[float], options) -> float:
    """A step's cost: the median, or, when only one step in ``--steps-per-generation`` generates, the mean
    over the timed steps (which should be whole generation cycles)."""
    if options.steps_per_generation == 1:
        return statistics.median(step_seconds)
    return statistics.fmean(step_seconds)


def lora_config():
    from peft import LoraConfig

    return LoraConfig(
        r=16,
        lora_alpha=32,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "down_proj"],
        task_type="CAUSAL_LM",
    )


def run_condition(name: str, options, dataset, tokenizer, profile: bool = False) -> dict:
    on_gpu = torch.cuda.is_available()
    common = training_settings(
        options, f"/tmp/pgaa_overhead/{name}", options.steps + options.warmup, logging_steps=1000
    )
    # Full fine-tuning keeps float32 weights under bf16 autocast; LoRA's frozen base is bf16, as it is trained.
    weights = dict(dtype=torch.bfloat16) if options.lora and on_gpu else {}
    model = make_model(options.size, seed=0, device="cuda" if on_gpu else "cpu", **weights)
    peft = {"peft_config": lora_config()} if options.lora else {}
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
            **peft,
        )
    else:
        coef = float(name.split("_coef")[1])
        args = EditGRPOConfig(**common, alignment_coef=coef, alignment_layer=SIZES[options.size].layers // 2)
        trainer = EditGRPOTrainer(
            model, reward_funcs=rewards, args=args, train_dataset=dataset, processing_class=tokenizer, **peft
        )
    timer = StepTimer()
    trainer.add_callback(timer)
    phases = PhaseClock(trainer) if profile else None
    trainer.train()
    timed = timer.times[options.warmup :]
    if phases is not None:  # seconds per step, over every step of the run (warm-up included)
        steps = len(timer.times)
        profile_rows = {name: phases.seconds[name] / steps for name, _ in PROFILED}
        profile_rows["step (callback)"] = sum(timer.times) / steps
        return {"condition": name, "profile_s_per_step": profile_rows}
    peak = torch.cuda.max_memory_allocated() / 2**30 if on_gpu else None
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    del trainer, model
    if on_gpu:
        torch.cuda.empty_cache()
    return {"condition": name, "typical_s": typical(timed, options), "steps_s": timed, "peak_gib": peak}


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
    parser.add_argument(
        "--lora", action="store_true", help="LoRA r=16 on q/k/v/o/down_proj in every condition"
    )
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--steps-per-generation", type=int, default=1)
    parser.add_argument(
        "--generalization",
        type=int,
        default=2,
        help="generalization prompts per case (plus 1 anchor, 1 locality)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="then one more Edit-GRPO run (coef 0.2) timing its phases"
    )
    parser.add_argument("--out", default="pgaa_overhead.json")
    options = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    spec = SIZES[options.size]
    tokenizer = make_tokenizer(spec.vocab)
    # Cases of 1 anchor + --generalization + 1 locality prompts: a generation batch holds whole cases.
    dataset = make_agt_dataset(options.cases, spec.vocab, generalization=options.generalization)
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
                "typical_s": typical(steps, options),
                "round_typical_s": [run["typical_s"] for run in mine],
                "steps_s": steps,
                "peak_gib": max(peaks) if peaks else None,
            }
        )
    base = results[0]["typical_s"]
    print(f"{'condition':<20}{'step (s)':>16}{'ratio to TRL':>14}{'per round (s)':>24}{'peak GiB':>10}")
    for result in results:
        result["ratio_to_trl"] = result["typical_s"] / base
        peak = f"{result['peak_gib']:.2f}" if result["peak_gib"] is not None else "-"
        rounds = " ".join(f"{m:.3f}" for m in result["round_typical_s"])
        print(
            f"{result['condition']:<20}{result['typical_s']:>16.4f}{result['ratio_to_trl']:>14.3f}{rounds:>24}"
            f"{peak:>10}"
        )
    profile = None
    if options.profile:
        profile = run_condition("edit_grpo_coef0.2", options, dataset, tokenizer, profile=True)[
            "profile_s_per_step"
        ]
        print("profile of one Edit-GRPO (coef 0.2) run, seconds per optimizer step:")
        for name, meaning in PROFILED:
            print(f"  {profile[name]:8.4f}  {meaning}")
        print(
            f"  {profile['step (callback)']:8.4f}  the whole step (the rest: optimizer, callbacks, logging)"
        )
    Path(options.out).write_text(
        json.dumps(
            {
                "device": device,
                "params": params,
                "options": vars(options),
                "results": results,
                "profile": profile,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
