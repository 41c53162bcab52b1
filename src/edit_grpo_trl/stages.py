"""The pipeline's stages and where each writes in the run folder (docs/design.md section 2), defined once.

Light on purpose (no torch): the command line, the pipeline, the preflight checks and the benchmarks all
read the stage names and the run layout from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

STAGES = (
    "cases",
    "pre_edit_eval",
    "edit",
    "post_edit_eval",
    "agt_data",
    "train",
    "post_refinement_eval",
    "report",
)
# Stages every process runs; the others run on the main process only.
EVERY_PROCESS_STAGES = frozenset({"train"})


@dataclass
class RunLayout:
    """Where each stage writes inside the run folder."""

    root: Path

    def marker(self, stage: str) -> Path:
        return self.root / "stages" / f"{stage}.done.json"

    @property
    def cases(self) -> Path:
        return self.root / "cases.jsonl"

    @property
    def edited_model(self) -> Path:
        return self.root / "stage1" / "model"

    @property
    def agt_dataset(self) -> Path:
        return self.root / "agt_dataset"

    @property
    def locality_pool(self) -> Path:
        return self.root / "locality_pool.jsonl"

    @property
    def training_prompts(self) -> Path:
        return self.root / "train_prompts.jsonl"

    @property
    def training(self) -> Path:
        return self.root / "stage2"

    @property
    def refined_model(self) -> Path:
        return self.root / "stage2" / "final"

    def evaluation(self, point: str) -> Path:
        return self.root / "eval" / point

    @property
    def report(self) -> Path:
        return self.root / "report"


__all__ = ["EVERY_PROCESS_STAGES", "STAGES", "RunLayout"]
