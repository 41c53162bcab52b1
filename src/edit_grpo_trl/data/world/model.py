"""The world's model: a small Qwen3 built from a config (no weights are ever downloaded)."""

from __future__ import annotations

import torch

from edit_grpo_trl.data.world.spec import WorldSize

MAX_POSITIONS = 256  # the longest world text (a boxed chat sample) is under 60 tokens


def build_model(spec: WorldSize, vocab_size: int, seed: int, pad_id: int = 0, eos_id: int = 1):
    """A freshly initialized ``Qwen3ForCausalLM`` of the size's shape (tied embeddings)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    if spec.hidden % spec.heads:
        raise ValueError(f"hidden size {spec.hidden} is not a multiple of the {spec.heads} attention heads")
    config = Qwen3Config(
        vocab_size=vocab_size,
        hidden_size=spec.hidden,
        intermediate_size=spec.intermediate,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.kv_heads,
        head_dim=spec.hidden // spec.heads,
        max_position_embeddings=MAX_POSITIONS,
        tie_word_embeddings=True,
        pad_token_id=pad_id,
        eos_token_id=eos_id,
        bos_token_id=eos_id,
    )
    torch.manual_seed(seed)
    return Qwen3ForCausalLM(config)


def parameter_count(model) -> int:
    """Distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in model.parameters())
