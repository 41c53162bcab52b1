"""The knowledge world: a synthetic world of facts and a small model pretrained on it (DESIGN section 8)."""

from edit_grpo_trl.data.world.model import (
    build_tokenizer,
    default_cache_dir,
    ensure_world_model,
    pretrain,
    recall,
)
from edit_grpo_trl.data.world.world import RELATIONS, SIZES, KnowledgeWorld, WorldSize

__all__ = [
    "RELATIONS",
    "SIZES",
    "KnowledgeWorld",
    "WorldSize",
    "build_tokenizer",
    "default_cache_dir",
    "ensure_world_model",
    "pretrain",
    "recall",
]
