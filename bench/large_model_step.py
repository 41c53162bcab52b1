"""One Edit-GRPO training run of a model with Qwen3-8B's exact shape (random weights) on one GPU.

Records the median step time (after the first step) and the peak GPU memory, for LoRA refinement or for
full fine-tuning (meant for DeepSpeed ZeRO-3 with CPU offload of parameters and optimizer states).

    python bench/large_model_step.py --mode lora --out lora.json
    accelerate launch --config_file accelerate_configs/zero3_offload.yaml --num_processes 1 \
        bench/large_model_step.py --mode full --out full.json
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

sys.path.insert(0, str(Path(__file__).parent))
from workload import SIZES, make_agt_dataset, make_model, make_tokenizer, parameter_count  # noqa: E402

from edit_grpo_trl import EditGRPOConfig, EditGRPOTrainer  # noqa: E402


class StepClock(TrainerCallback):
    def __init__(self):
        self.times, self._start = [], 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        peak = 0.0
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() / 2**30
        self.times.append(time.perf_counter() - self._start)
        print(f"step {state.global_step}: {self.times[-1]:.2f} s, peak {peak:.1f} GiB", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", choices=["lora", "full"], required=True)
    parser.add_argument("--size", default="qwen3-8b", choices=sorted(SIZES))
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=16, help="completions per step")
    parser.add_argument("--num-generations", type=int, default=4)
    parser.add_argument("--completion-length", type=int, default=32)
    parser.add_argument("--out", default="large_model_step.json")
    options = parser.parse_args()
    spec = SIZES[options.size]
    tokenizer = make_tokenizer(spec.vocab)
    dataset = make_agt_dataset(32, spec.vocab)  # cases of 4 prompts
    on_gpu = torch.cuda.is_available()
    started = time.perf_counter()
    torch.set_default_dtype(torch.bfloat16)
    model = make_model(
        options.size,
        seed=0,
        dtype=torch.bfloat16,
        device="cuda" if on_gpu else "cpu",
    )
    torch.set_default_dtype(torch.float32)
    build_seconds = time.perf_counter() - started
    peft_config = None
    if options.mode == "lora":
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=16,
            lora_alpha=32,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "down_proj"],
            task_type="CAUSAL_LM",
        )
    args = EditGRPOConfig(
        output_dir=f"/tmp/large_model_step/{options.mode}",
        per_device_train_batch_size=options.batch,
        steps_per_generation=1,
        num_generations=options.num_generations,
        max_completion_length=options.completion_length,
        max_steps=options.steps,
        learning_rate=1e-6,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        gradient_checkpointing=True,
        bf16=on_gpu,
        use_cpu=not on_gpu,
        alignment_layer=spec.layers // 2,
        alignment_coef=0.2,
        seed=0,
        disable_tqdm=True,
    )
    trainer = EditGRPOTrainer(
        model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config
    )
    clock = StepClock()
    trainer.add_callback(clock)
    trainer.train()
    result = {
        "mode": options.mode,
        "device": torch.cuda.get_device_name() if on_gpu else "cpu",
        "parameters": parameter_count(trainer.accelerator.unwrap_model(trainer.model))
        if options.mode == "lora"
        else parameter_count(make_model(options.size, device="meta")),
        "model_build_s": build_seconds,
        "step_s": clock.times,
        "median_step_s_after_first": statistics.median(clock.times[1:]) if len(clock.times) > 1 else None,
        "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if on_gpu else None,
        "options": vars(options),
    }
    if trainer.accelerator.is_main_process:
        Path(options.out).write_text(json.dumps(result, indent=2))
        print(json.dumps({k: v for k, v in result.items() if k != "options"}), flush=True)


if __name__ == "__main__":
    main()
