"""How an evaluation runs: :class:`EvalConfig`, which is also a recipe's ``evaluation`` section.

This module holds only the settings (no torch import), so reading a recipe stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class EvalConfig:
    """KnowEdit-style evaluation before and after each stage."""

    batch_size: int = 32
    max_new_tokens: int = 50
    # Which prompts the probes are asked as: "plain", the case prompts as they are (KnowEdit's protocol), or
    # "data", as training shows them (the data section's prompt_style, chat_instruction and answer reading),
    # so that a chat recipe is scored on the prompts it was trained on. keep_known asks the same way.
    prompts: Literal["plain", "data"] = "plain"
    teacher_forced: bool = True
    generation: bool = True
    fluency: bool = True
    # EasyEdit's fluency: prompt and continuation hold this many tokens; top-k sampling, seeded
    fluency_max_length: int = 100
    fluency_top_k: int = 5
    seed: int = 0
    # Progress bars (stderr) over the evaluation's batches; a recipe's `evaluation.progress: false` turns
    # them off for the pipeline and `edit-grpo eval`.
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_new_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 1:
                raise ValueError(f"{name} must be a number >= 1, got {value!r}")
        if self.prompts not in ("plain", "data"):
            raise ValueError(f"prompts must be 'plain' or 'data', got {self.prompts!r}")
