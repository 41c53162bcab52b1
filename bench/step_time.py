"""Step time, samples per second and memory of Edit-GRPO training, on one GPU or several.

Builds a model of one of ``workload.SIZES`` (random weights, bf16 on a GPU) and trains it with
EditGRPOTrainer on synthetic edit cases, for full fine-tuning or LoRA, under whatever launcher runs it:
plain ``python``, or ``accelerate launch`` with DDP or DeepSpeed ZeRO-3 and any number of processes.
A step is timed on the main process from ``on_step_begin`` to ``on_step_end`` (generation when the step
starts a generation batch, scoring, PGAA, loss, backward, optimizer), after a CUDA synchronize. The typical
step is the median after ``--warmup`` steps, or, when one step in ``--steps-per-generation`` generates, the
mean over the timed steps (give whole generation cycles). Random
weights never emit EOS, so every completion runs to ``--completion-length``: the worst case.

Recorded: each step's time, the median after ``--warmup`` steps, completions per second over all
processes, the peak GPU memory of every process (``torch.cuda.max_memory_allocated``, from after the model
was built), and the peak host memory (resident set) of every process.

    python bench/step_time.py --mode lora --size qwen3-8b --steps 4 --batch 16 --out lora.json
    accelerate launch --config_file accelerate_configs/zero3.yaml --num_processes 2 \\
        bench/step_time.py --mode full --size qwen3-8b --batch 8 --steps-per-generation 6 \\
        --num-generations 8 --completion-length 256 --gradient-checkpointing --steps 6 --out full.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
from accelerate.utils import gather_object
from transformers import TrainerCallback

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


class StepClock(TrainerCallback):
    def __init__(self):
        self.times, self._start = [], 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.times.append(time.perf_counter() - self._start)
        peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0
        if state.is_world_process_zero:
            print(f"step {state.global_step}: {self.times[-1]:.2f} s, peak {peak:.1f} GiB", flush=True)


def host_peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", choices=["lora", "full"], required=True)
    parser.add_argument("--size", default="qwen3-8b", choices=sorted(SIZES))
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps in all")
    parser.add_argument("--warmup", type=int, default=1, help="first steps left out of the median")
    parser.add_argument("--batch", type=int, default=16, help="completions per process per optimizer step")
    parser.add_argument("--steps-per-generation", type=int, default=1)
    parser.add_argument("--num-generations", type=int, default=4)
    parser.add_argument("--completion-length", type=int, default=32)
    parser.add_argument("--prompt-words", type=int, default=12)
    parser.add_argument(
        "--generalization",
        type=int,
        default=2,
        help="generalization prompts per case (plus 1 anchor, 1 locality)",
    )
    parser.add_argument("--alignment-coef", type=float, default=0.2)
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--out", default="step_time.json")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    options = parse_args(argv)
    spec = SIZES[options.size]
    on_gpu = torch.cuda.is_available()
    prompts_per_case = options.generalization + 2
    per_case = prompts_per_case * options.num_generations
    if (options.batch * options.steps_per_generation) % per_case:
        raise SystemExit(
            f"--batch x --steps-per-generation must be whole cases of {per_case} completions "
            f"({prompts_per_case} prompts x {options.num_generations} generations)"
        )
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cases_needed = max(options.steps, options.steps_per_generation) * options.batch * world // per_case + 1
    dataset = make_agt_dataset(
        cases_needed, spec.vocab, generalization=options.generalization, prompt_words=options.prompt_words
    )
    tokenizer = make_tokenizer(spec.vocab)
    started = time.perf_counter()
    device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if on_gpu else "cpu"
    model = make_model(options.size, seed=0, dtype=torch.bfloat16 if on_gpu else torch.float32, device=device)
    build_seconds = time.perf_counter() - started
    parameters = parameter_count(model)
    # The model is built whole on each process's GPU before the config exists, so a ZeRO-3 launch partitions
    # it when the trainer starts (not through deepspeed.zero.Init, which a random build need not exercise).
    args = EditGRPOConfig(
        **training_settings(options, f"/tmp/step_time/{options.size}-{options.mode}", options.steps),
        alignment_layer=spec.layers // 2,
        alignment_coef=options.alignment_coef,
    )
    peft_config = None
    if options.mode == "lora":
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=16,
            lora_alpha=32,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "down_proj"],
            task_type="CAUSAL_LM",
        )
    trainer = EditGRPOTrainer(
        model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config
    )
    del model
    if on_gpu:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    clock = StepClock()
    trainer.add_callback(clock)
    trainer.train()
    state = trainer.accelerator.state
    plugin = getattr(state, "deepspeed_plugin", None) if trainer.is_deepspeed_enabled else None
    per_process = gather_object(
        [
            {
                "process": trainer.accelerator.process_index,
                "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if on_gpu else None,
                "peak_host_gib": host_peak_gib(),
            }
        ]
    )
    timed = clock.times[options.warmup :] or clock.times
    # One step in steps_per_generation also generates: then the mean over whole generation cycles is the
    # step's cost, not the median.
    typical = statistics.median(timed) if options.steps_per_generation == 1 else statistics.fmean(timed)
    result = {
        "size": options.size,
        "mode": options.mode,
        "device": torch.cuda.get_device_name() if on_gpu else "cpu",
        "processes": world,
        "distributed_type": str(state.distributed_type),
        "deepspeed_zero_stage": plugin.zero_stage if plugin is not None else None,
        "parameters": parameters,
        "model_build_s": build_seconds,
        "step_s": clock.times,
        "step_s_statistic": "median" if options.steps_per_generation == 1 else "mean over generation cycles",
        "typical_step_s": typical,
        "completions_per_step": options.batch * world,
        "completions_per_s": options.batch * world / typical,
        "per_process": per_process,
        "options": vars(options),
    }
    if trainer.accelerator.is_main_process:
        Path(options.out).parent.mkdir(parents=True, exist_ok=True)
        Path(options.out).write_text(json.dumps(result, indent=2))
        print(json.dumps({k: v for k, v in result.items() if k not in ("options", "step_s")}), flush=True)


if __name__ == "__main__":
    main()
