"""How much of the world a model knows: greedy decoding + exact match over a recall split."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from edit_grpo_trl.answers import exact_match, extract_answer
from edit_grpo_trl.data.world.prompts import RECALL_SPLITS, FactPrompt
from edit_grpo_trl.generation import greedy_generate

if TYPE_CHECKING:
    from edit_grpo_trl.data.world.world import KnowledgeWorld

MAX_ANSWER_TOKENS = 4  # a boxed answer is three tokens


def answered(model, tokenizer, items: list[FactPrompt], batch_size: int = 256) -> list[bool]:
    """Whether the model's greedy completion of each prompt is its answer (read in the prompt's style)."""
    completions = greedy_generate(
        model,
        tokenizer,
        [item.prompt for item in items],
        max_new_tokens=MAX_ANSWER_TOKENS,
        batch_size=batch_size,
    )
    return [
        exact_match(extract_answer(completion, item.style), [item.answer])
        for completion, item in zip(completions, items, strict=True)
    ]


def recall(
    model,
    tokenizer,
    world: KnowledgeWorld,
    split: str = "heldout",
    limit: int | None = None,
    batch_size: int = 256,
    seed: int = 0,
) -> float:
    """Share of a recall split's prompts answered exactly; ``limit`` samples that many (seeded)."""
    items = world.fact_prompts(split)
    if limit is not None and len(items) > limit:
        items = random.Random(seed).sample(items, limit)
    if not items:
        return float("nan")
    hits = answered(model, tokenizer, items, batch_size=batch_size)
    return sum(hits) / len(hits)


def recall_report(model, tokenizer, world: KnowledgeWorld, limit: int | None = None) -> dict[str, float]:
    """Recall on every split (``prompts.RECALL_SPLITS``)."""
    return {split: recall(model, tokenizer, world, split, limit=limit) for split in RECALL_SPLITS}
