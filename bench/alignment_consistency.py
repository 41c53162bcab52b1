"""Alignment cosines under DeepSpeed ZeRO-3 and under PEFT LoRA equal the plain computation.

One fixed batch (two edit cases; prompts from the AGT dataset, fixed completion tokens with ragged
lengths) and one set of seeded weights. Each mode computes the PGAA cosines cos(g_i, g_c) of the
generalization rows once the trainer has prepared its model (at `on_train_begin`, so ZeRO-3 has already
partitioned the parameters) and writes them to JSON. `--compare` prints the largest difference.

    python bench/alignment_consistency.py --mode plain --out plain.json
    python bench/alignment_consistency.py --mode lora --out lora.json      # LoRA B=0: same function
    accelerate launch --config_file accelerate_configs/zero3.yaml --num_processes 1 --mixed_precision no \
        bench/alignment_consistency.py --mode zero3 --out zero3.json
    python bench/alignment_consistency.py --compare plain.json lora.json zero3.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from transformers import TrainerCallback

sys.path.insert(0, str(Path(__file__).parent))
from workload import SIZES, make_agt_dataset, make_model, make_tokenizer  # noqa: E402

from edit_grpo_trl import EditGRPOConfig, EditGRPOTrainer  # noqa: E402


class CosineProbe(TrainerCallback):
    """Computes the cosines of a fixed batch with the prepared model, once."""

    def __init__(self, trainer: EditGRPOTrainer, rows: list[dict], completions: list[list[int]], out: Path):
        self.trainer, self.rows, self.completions, self.out = trainer, rows, completions, out

    def on_train_begin(self, args, state, control, **kwargs):
        trainer = self.trainer
        prompt_ids, _, _ = trainer._tokenize_prompts([row["prompt"] for row in self.rows])
        prompt_ids, prompt_mask = trainer._padded(prompt_ids, side="left")
        completion_ids, completion_mask = trainer._padded(self.completions, side="right")
        output = {
            "prompt_ids": prompt_ids,
            "prompt_mask": prompt_mask,
            "completion_ids": completion_ids,
            "completion_mask": completion_mask,
        }
        codes = {case: i for i, case in enumerate(dict.fromkeys(row["case_id"] for row in self.rows))}
        cosines = trainer._local_alignment_cosines(self.rows, output, codes)
        if trainer.accelerator.is_main_process:
            self.out.write_text(
                json.dumps(
                    {
                        "cosines": cosines.tolist(),
                        "roles": [r["role"] for r in self.rows],
                        "model_type": type(trainer.model).__name__,
                    }
                )
            )
            print("cosines", [round(c, 6) for c in cosines.tolist()], flush=True)


def run(mode: str, size: str, out: Path) -> None:
    spec = SIZES[size]
    tokenizer = make_tokenizer(spec.vocab)
    dataset = make_agt_dataset(4, spec.vocab, generalization=3, locality=1)
    rows = [dataset[i] for i in range(10)]  # cases of 5 rows: cases 0 and 1, whole
    generator = torch.Generator().manual_seed(1)
    completions = [
        torch.randint(3, spec.vocab, (n,), generator=generator).tolist()
        for n in (16, 9, 12, 16, 5, 14, 16, 11, 7, 16)
    ]
    peft_config = None
    if mode == "lora":
        from peft import LoraConfig

        peft_config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"])
    args = EditGRPOConfig(
        output_dir=f"/tmp/alignment_consistency/{mode}",
        per_device_train_batch_size=5,
        steps_per_generation=2,
        num_generations=2,  # generation batch 10 = 1 case x 5 prompts x G=2
        max_completion_length=8,
        max_steps=1,
        report_to="none",
        save_strategy="no",
        gradient_checkpointing=False,
        bf16=False,
        use_cpu=not torch.cuda.is_available(),
        alignment_layer=spec.layers // 2,
        alignment_coef=0.2,
        seed=0,
    )
    trainer = EditGRPOTrainer(
        make_model(size, seed=0),
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    trainer.add_callback(CosineProbe(trainer, rows, completions, out))
    trainer.train()  # one real step in this mode too: it must run, not only the probe


def compare(paths: list[str]) -> None:
    results = {path: json.loads(Path(path).read_text()) for path in paths}
    reference_path, reference = next(iter(results.items()))
    base = torch.tensor(reference["cosines"])
    print(f"reference {reference_path}: {[round(c, 6) for c in base.tolist()]}")
    for path, result in results.items():
        diff = (torch.tensor(result["cosines"]) - base).abs().max().item()
        print(f"{path:<40} max |cos - reference| = {diff:.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", choices=["plain", "lora", "zero3"])
    parser.add_argument("--size", default="toy", choices=sorted(SIZES))
    parser.add_argument("--out", default="cosines.json")
    parser.add_argument("--compare", nargs="+", metavar="JSON")
    options = parser.parse_args()
    if options.compare:
        compare(options.compare)
    else:
        run(options.mode, options.size, Path(options.out))


if __name__ == "__main__":
    main()
