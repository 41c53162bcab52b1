"""A tiny random Qwen3 model and a word-level tokenizer with a chat template, for the data tests.

Built from a config in a second (no download, no pretraining): the AGT builder and the paraphrase source
only need a real causal LM whose greedy outputs can be compared with :func:`greedy_generate`.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import PreTrainedTokenizerFast, Qwen3ForCausalLM

from edit_grpo_trl.data.agt import DEFAULT_CHAT_INSTRUCTION
from edit_grpo_trl.data.pools import DEFAULT_PARAPHRASE_INSTRUCTION
from edit_grpo_trl.testing import build_tiny_causal_lm, train_word_tokenizer

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

SPECIAL_TOKENS = ["<pad>", "<unk>", "<eos>", "<|im_start|>", "<|im_end|>"]
# One ordinary token that spells a whole boxed answer: a test biases generation towards it to get a
# chat completion with a box from a random model.
BOXED_TOKEN = r"\boxed{female}"


def _strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for item in value.values() for text in _strings(item)]
    if isinstance(value, list):
        return [text for item in value for text in _strings(item)]
    return [str(value)]


def _corpus() -> list[str]:
    texts = [DEFAULT_CHAT_INSTRUCTION, DEFAULT_PARAPHRASE_INSTRUCTION, "user assistant \\boxed{x} 1. 2. -"]
    for path in sorted(FIXTURES.rglob("*.json")):
        texts += _strings(json.loads(path.read_text(encoding="utf-8")))
    return texts


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the fixture files' words, with a ChatML-like chat template."""
    tokenizer = train_word_tokenizer(_corpus(), SPECIAL_TOKENS, chat=True)
    tokenizer.add_tokens([BOXED_TOKEN])
    return tokenizer


def build_tiny_lm(tokenizer: PreTrainedTokenizerFast, seed: int = 0) -> Qwen3ForCausalLM:
    """A 2-layer Qwen3 with random weights (eval mode, float32)."""
    return build_tiny_causal_lm(
        "qwen3",
        len(tokenizer),
        num_layers=2,
        hidden_size=32,
        seed=seed,
        intermediate_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )


@pytest.fixture(scope="session")
def tiny_lm() -> SimpleNamespace:
    """``.model`` and ``.tokenizer`` of the tiny random Qwen3 (shared by the data tests)."""
    torch.set_num_threads(2)
    tokenizer = build_tiny_tokenizer()
    return SimpleNamespace(model=build_tiny_lm(tokenizer), tokenizer=tokenizer)
