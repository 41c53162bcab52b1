"""How edit cases become AGT rows: :class:`AGTDataConfig`, the settings of :mod:`edit_grpo_trl.data.agt`.

This module holds only the settings (no torch import), so a recipe can take its defaults from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

PROMPT_PLACEHOLDER = "{prompt}"
DEFAULT_CHAT_INSTRUCTION = (
    "Complete the statement or answer the question.\n\n{prompt}\n\n"
    r"Give only the answer, as your final answer inside \boxed{}."
)

PromptStyle = Literal["plain", "chat"]
ChatAnswer = Literal["boxed", "plain"]


@dataclass
class AGTDataConfig:
    """How cases become AGT rows. ``rows_per_case`` = 1 + ``num_generalization`` + ``num_locality``."""

    num_generalization: int = 3
    num_locality: int = 1
    prompt_style: PromptStyle = "plain"
    # How a chat completion is read: the last \boxed{} ("boxed"), or its first sentence ("plain", for a
    # model that restates the fact instead of boxing it; chat_instruction should then not ask for a box).
    chat_answer: ChatAnswer = "boxed"
    locality_answers: Literal["model", "dataset"] = "model"
    # How rewards match answers: "exact" (normalized) or "contains" (whole words, for freely phrased answers).
    answer_match: Literal["exact", "contains"] = "exact"
    seed: int = 0
    # A case without training prompts (or without locality probes while num_locality > 0): skip (left out of
    # training, still evaluated; counted in the build report, the agt_data stage's marker) | error.
    on_missing: Literal["error", "skip"] = "skip"
    # Chat style: the user message; "{prompt}" is replaced by the case's prompt.
    chat_instruction: str = DEFAULT_CHAT_INSTRUCTION
    # Passed to apply_chat_template when decoding locality answers; give TRL the same ones
    # (GRPOConfig.chat_template_kwargs), so the pre-edit answers come from the prompts training shows.
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)
    # Greedy decoding of pre-edit locality answers (None: 50 tokens for plain prompts, 256 for chat).
    locality_max_new_tokens: int | None = None
    locality_batch_size: int = 64
    # Training locality prompts kept for the dense locality loss (0: no pool).
    locality_pool_size: int = 256

    def __post_init__(self) -> None:
        minimums = {
            "num_generalization": 0,
            "num_locality": 0,
            "locality_batch_size": 1,
            "locality_pool_size": 0,
        }
        for name, minimum in minimums.items():
            value = getattr(self, name)
            # bool is an int to Python, but `num_locality: true` in a recipe is a mistake
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
        if self.prompt_style not in ("plain", "chat"):
            raise ValueError(f"prompt_style must be 'plain' or 'chat', got {self.prompt_style!r}")
        if self.chat_answer not in ("boxed", "plain"):
            raise ValueError(f"chat_answer must be 'boxed' or 'plain', got {self.chat_answer!r}")
        if self.locality_answers not in ("model", "dataset"):
            raise ValueError(f"locality_answers must be 'model' or 'dataset', got {self.locality_answers!r}")
        if self.answer_match not in ("exact", "contains"):
            raise ValueError(f"answer_match must be 'exact' or 'contains', got {self.answer_match!r}")
        if self.on_missing not in ("error", "skip"):
            raise ValueError(f"on_missing must be 'error' or 'skip', got {self.on_missing!r}")
        if PROMPT_PLACEHOLDER not in self.chat_instruction:
            raise ValueError(
                f"chat_instruction must contain {PROMPT_PLACEHOLDER!r}: {self.chat_instruction!r}"
            )
        if self.locality_max_new_tokens is not None and self.locality_max_new_tokens < 1:
            raise ValueError(f"locality_max_new_tokens must be >= 1, got {self.locality_max_new_tokens}")

    @property
    def rows_per_case(self) -> int:
        return 1 + self.num_generalization + self.num_locality

    @property
    def answer_style(self) -> str:
        return self.chat_answer if self.prompt_style == "chat" else "plain"

    @property
    def max_new_tokens(self) -> int:
        if self.locality_max_new_tokens is not None:
            return self.locality_max_new_tokens
        return 256 if self.answer_style == "boxed" else 50
