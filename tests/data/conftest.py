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
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

from edit_grpo_trl.data.agt import DEFAULT_CHAT_INSTRUCTION
from edit_grpo_trl.data.pools import DEFAULT_PARAPHRASE_INSTRUCTION

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
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
    backend = Tokenizer(models.WordLevel(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.train_from_iterator(_corpus(), trainers.WordLevelTrainer(special_tokens=SPECIAL_TOKENS))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>"
    )
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.add_tokens([BOXED_TOKEN])
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_tiny_lm(tokenizer: PreTrainedTokenizerFast, seed: int = 0) -> Qwen3ForCausalLM:
    """A 2-layer Qwen3 with random weights (eval mode, float32)."""
    torch.manual_seed(seed)
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    return Qwen3ForCausalLM(config).eval()


@pytest.fixture(scope="session")
def tiny_lm() -> SimpleNamespace:
    """``.model`` and ``.tokenizer`` of the tiny random Qwen3 (shared by the data tests)."""
    torch.set_num_threads(2)
    tokenizer = build_tiny_tokenizer()
    return SimpleNamespace(model=build_tiny_lm(tokenizer), tokenizer=tokenizer)
