"""The knowledge world: a synthetic world of facts and a small model pretrained on it (docs/design.md section 9)."""

from edit_grpo_trl.world.model import (
    alias_recall,
    build_tokenizer,
    cache_key,
    default_cache_dir,
    ensure_world_model,
    pretrain,
    recall,
    recall_report,
)
from edit_grpo_trl.world.world import RELATIONS, SIZES, KnowledgeWorld, WorldSize

__all__ = [
    "RELATIONS",
    "SIZES",
    "KnowledgeWorld",
    "WorldSize",
    "alias_recall",
    "build_tokenizer",
    "cache_key",
    "default_cache_dir",
    "ensure_world_model",
    "pretrain",
    "recall",
    "recall_report",
]
