"""Small offline building blocks for the trainer tests: a word-level tokenizer, a tiny Qwen3 model, and
an AGT dataset of a few edit cases. Nothing is downloaded."""

from __future__ import annotations

import pytest
from datasets import Dataset
from transformers import PreTrainedTokenizerFast, Qwen3ForCausalLM

from edit_grpo_trl.testing import build_tiny_causal_lm, word_tokenizer

PEOPLE = ["Ana", "Bo", "Cyd", "Dee", "Eli", "Fay"]
CITIES = ["Paris", "Rome", "Oslo", "Lima", "Kiev", "Doha"]
WORDS = [
    "<pad>",
    "<eos>",
    "<unk>",
    "was",
    "born",
    "in",
    "the",
    "city",
    "of",
    "birth",
    "is",
    "lives",
    "home",
    "town",
]
WORDS += [".", "where", "?", "\\boxed{", "}"] + PEOPLE + CITIES


def make_tokenizer() -> PreTrainedTokenizerFast:
    tokenizer = word_tokenizer(WORDS)  # WORDS starts with the special tokens: ids are WORDS' positions
    tokenizer.padding_side = "left"
    return tokenizer


def make_model(seed: int = 0, layers: int = 2) -> Qwen3ForCausalLM:
    """A Qwen3 with random weights, in train mode as a freshly built module is."""
    return build_tiny_causal_lm(
        "qwen3",
        len(WORDS),
        num_layers=layers,
        hidden_size=32,
        seed=seed,
        intermediate_size=48,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=64,
        pad_token_id=0,
        eos_token_id=1,
    ).train()


def make_agt_rows(num_cases: int = 4) -> dict[str, list]:
    """Cases of 1 anchor + 2 generalization + 1 locality rows, in the AGT builder's column layout."""
    rows = {"prompt": [], "case_id": [], "role": [], "answers": [], "old_answers": [], "answer_style": []}
    for case in range(num_cases):
        person, new, old = PEOPLE[case], CITIES[case], CITIES[(case + 1) % len(CITIES)]
        other, other_city = PEOPLE[(case + 1) % len(PEOPLE)], CITIES[(case + 2) % len(CITIES)]
        for prompt, role, answers in [
            (f"{person} was born in", "anchor", [new]),
            (f"the city of birth of {person} is", "generalization", [new]),
            (f"the home town of {person} is", "generalization", [new]),
            (f"{other} was born in", "locality", [other_city]),
        ]:
            rows["prompt"].append(prompt)
            rows["case_id"].append(f"case-{case}")
            rows["role"].append(role)
            rows["answers"].append(answers)
            rows["old_answers"].append([old])
            rows["answer_style"].append("plain")
    return rows


@pytest.fixture
def tokenizer():
    return make_tokenizer()


@pytest.fixture
def agt_dataset():
    return Dataset.from_dict(make_agt_rows())
