"""Run by test_distributed.py under `torchrun --nproc_per_node 2` (CPU, gloo): two training steps of
EditGRPOTrainer, recording what each rank saw. Not a test module itself."""

import json
import sys
from pathlib import Path

import torch
from accelerate.utils import gather_object
from datasets import Dataset

sys.path.insert(0, str(Path(__file__).parent))
from conftest import make_agt_rows, make_model, make_tokenizer  # noqa: E402
from edit_grpo_trl import EditGRPOConfig, EditGRPOTrainer  # noqa: E402


class RecordingTrainer(EditGRPOTrainer):
    records: list

    def _local_alignment_cosines(self, inputs, output, case_codes):
        self.last_cosines = super()._local_alignment_cosines(inputs, output, case_codes)
        return self.last_cosines

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)

        def unpadded(ids, mask):
            return [row[keep.bool()].tolist() for row, keep in zip(ids, mask, strict=True)]

        self.records.append(
            {
                "local_case_ids": [row["case_id"] for row in inputs],
                "local_prompts": [row["prompt"] for row in inputs],
                "local_rows": [{key: row[key] for key in ("prompt", "case_id", "role")} for row in inputs],
                "gathered_case_ids": gather_object([row["case_id"] for row in inputs]),
                "local_advantages": output["advantages"].tolist(),
                "gathered_rewards": self._gathered_rewards_per_func.tolist(),
                "local_cosines": self.last_cosines.tolist(),
                "prompt_ids": unpadded(output["prompt_ids"], output["prompt_mask"]),
                "completion_ids": unpadded(output["completion_ids"], output["completion_mask"]),
                "split_checks": list(self.split_checks),
            }
        )
        return output


def training_config(
    out_dir: str, per_device_train_batch_size: int = 6, alignment_mode: str = "cosine"
) -> EditGRPOConfig:
    """The run's settings; the test rebuilds them (one process, a batch twice as wide) to recompute."""
    return EditGRPOConfig(
        output_dir=out_dir,
        per_device_train_batch_size=per_device_train_batch_size,
        steps_per_generation=2,  # generation batch: 6 x 2 ranks x 2 = 24 = 3 cases x 4 prompts x G=2,
        # so each rank holds 12 completions and the middle case straddles the two ranks
        num_generations=2,
        max_completion_length=3,
        max_steps=4,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        gradient_checkpointing=False,
        use_cpu=True,
        bf16=False,
        alignment_layer=1,
        alignment_coef=0.2,
        alignment_mode=alignment_mode,
        split_check_batches=2,
        seed=0,
    )


def main(out_dir: str, alignment_mode: str = "cosine") -> None:
    args = training_config(out_dir, alignment_mode=alignment_mode)
    trainer = RecordingTrainer(
        make_model(seed=7),
        args=args,
        train_dataset=Dataset.from_dict(make_agt_rows(6)),
        processing_class=make_tokenizer(),
    )
    trainer.records = []
    trainer.train()
    rank = trainer.accelerator.process_index
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(trainer.records))
    torch.distributed.barrier()


if __name__ == "__main__":
    main(*sys.argv[1:])
