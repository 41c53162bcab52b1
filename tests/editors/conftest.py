"""Fixtures for the editor tests.

``small_qwen3`` is a randomly initialized 2-layer Qwen3 with a word-level tokenizer: enough for plumbing
(checkpoints, statistics, shapes) in a second. The editing tests use the pretrained tiny knowledge world
(``tiny_world`` from tests/conftest.py) and share its key statistics through ``world_statistics``.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from edit_grpo_trl.testing import build_tiny_causal_lm, word_tokenizer

WORDS = "the a is of in was born works for plays Paris Rome Oslo Lima piano violin Kalo Mira Sute . ,".split()


@pytest.fixture(autouse=True)
def one_thread():
    """Two cores are shared by several people: more threads only add contention (10x slower measured)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def small_qwen3():
    tokenizer = word_tokenizer(WORDS, split_punctuation=True)
    model = build_tiny_causal_lm(
        "qwen3",
        len(tokenizer),
        num_layers=2,
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=64,
        pad_token_id=0,
        eos_token_id=1,
        tie_word_embeddings=False,
    )
    return SimpleNamespace(model=model, tokenizer=tokenizer)


@pytest.fixture(scope="session")
def world_statistics(request, tmp_path_factory):
    """Key second moments of every layer of the tiny world model, computed once per session."""
    from edit_grpo_trl.editors.stats import load_key_statistics

    world = request.getfixturevalue("tiny_world")
    layers = list(range(world.model.config.num_hidden_layers))
    cache = Path(tmp_path_factory.mktemp("key_statistics"))
    return load_key_statistics(
        world.model,
        world.tokenizer,
        layers,
        "world",
        100000,
        cache_dir=cache,
        model_dir=world.path,
        show_progress=False,
    )


def untouched_anchors(tiny_world, cases, limit: int, skip_reserved: bool = False) -> list[tuple[str, str]]:
    """Anchor prompts of people no case edits, with the pre-edit model's greedy answers (only correct ones).

    ``skip_reserved`` also leaves out the world's reserved people, whose facts an editor may train on as
    negatives (the locality training pool): what it trained on does not measure what it keeps."""
    from edit_grpo_trl.answers import exact_match
    from edit_grpo_trl.generation import greedy_generate

    edited = {case.subject for case in cases}
    if skip_reserved:
        edited |= set(tiny_world.world.reserved)
    pairs = [(p, a) for p, a in tiny_world.world.recall_prompts("anchor") if p.split()[0] not in edited][
        :limit
    ]
    answers = greedy_generate(tiny_world.model, tiny_world.tokenizer, [p for p, _ in pairs], max_new_tokens=4)
    return [
        (prompt, answer)
        for (prompt, gold), answer in zip(pairs, answers, strict=True)
        if exact_match(answer, [gold])
    ]
