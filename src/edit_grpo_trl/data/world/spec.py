"""World sizes: how many people a world has, the model that learns it, and how that model is pretrained."""

from __future__ import annotations

from dataclasses import dataclass

# Bump when generated worlds, their corpus or their pretraining change: cached models carry the version in
# their folder name, so an old cache is never mistaken for a new one.
FORMAT_VERSION = 2


@dataclass(frozen=True)
class WorldSize:
    """One named size: the world (people, aliases), the Qwen3 model, and its pretraining schedule."""

    people: int
    alias_share: float  # share of people with a second name
    hidden: int
    layers: int
    intermediate: int
    heads: int
    kv_heads: int
    max_steps: int
    batch_size: int  # sequences per step (batches are grouped by length, so little padding)
    learning_rate: float
    warmup_steps: int
    answer_loss_weight: float = 1.0  # extra weight of the loss on the answer tokens
    target_recall: float = 0.99  # stop once every checked recall split reaches this
    check_every: int = 100  # steps between recall checks
    check_prompts: int = 256  # prompts sampled per checked split


SIZES = {
    "tiny": WorldSize(
        people=64,
        alias_share=0.4,
        hidden=128,
        layers=4,
        intermediate=384,
        heads=4,
        kv_heads=2,
        max_steps=1500,
        batch_size=64,
        learning_rate=5e-3,
        warmup_steps=50,
    ),
    "small": WorldSize(
        people=1024,
        alias_share=0.4,
        hidden=512,
        layers=8,
        intermediate=1536,
        heads=8,
        kv_heads=4,
        max_steps=8000,
        batch_size=512,
        learning_rate=1e-3,
        warmup_steps=200,
        check_every=250,
        check_prompts=1024,
    ),
    "medium": WorldSize(
        people=4096,
        alias_share=0.4,
        hidden=768,
        layers=12,
        intermediate=2304,
        heads=12,
        kv_heads=4,
        max_steps=20000,
        batch_size=1024,
        learning_rate=6e-4,
        warmup_steps=500,
        check_every=500,
        check_prompts=2048,
    ),
}


def size_spec(size: str) -> WorldSize:
    """The spec of a named size, or an error listing the sizes."""
    try:
        return SIZES[size]
    except KeyError:
        raise ValueError(f"unknown knowledge-world size {size!r}; sizes: {', '.join(SIZES)}") from None
