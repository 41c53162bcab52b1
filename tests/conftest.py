"""Session-wide fixtures. `tiny_world` pretrains the tiny knowledge world once (cached on disk across
sessions under $EDIT_GRPO_CACHE or ~/.cache/edit_grpo_trl) and hands out the model read-only."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch


@dataclass
class TinyWorld:
    path: Path
    model: object
    tokenizer: object
    world: object


@pytest.fixture(scope="session")
def tiny_world() -> TinyWorld:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from edit_grpo_trl.world import KnowledgeWorld, ensure_world_model

    torch.set_num_threads(min(2, torch.get_num_threads()))
    path = ensure_world_model("tiny", seed=0)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    return TinyWorld(path=path, model=model, tokenizer=tokenizer, world=KnowledgeWorld.load(path))
