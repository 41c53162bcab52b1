"""The world's pretraining pieces (fast): answer spans, length-grouped batches, loss, schedule, model shape."""

from __future__ import annotations

import math
import random

import pytest
import torch

from edit_grpo_trl.data.world import SIZES, KnowledgeWorld, build_corpus, build_model, build_tokenizer
from edit_grpo_trl.data.world.model import parameter_count
from edit_grpo_trl.data.world.pretrain import (
    encode_samples,
    length_grouped_batches,
    pretraining_loss,
    warmup_cosine,
)


@pytest.fixture(scope="module")
def encoded():
    world = KnowledgeWorld.generate("tiny", 0)
    tokenizer = build_tokenizer(world)
    samples = build_corpus(world)
    return tokenizer, samples, encode_samples(tokenizer, samples)


def test_encoded_samples_mark_the_answer_and_end_with_one_eos(encoded):
    tokenizer, samples, rows = encoded
    for sample, row in zip(samples, rows, strict=True):
        answer = tokenizer.decode(row.ids[row.answer_start : row.answer_end])
        assert answer == sample.answer
        assert row.ids[-1] == tokenizer.eos_token_id and row.ids[-2] != tokenizer.eos_token_id
        assert tokenizer.unk_token_id not in row.ids


def test_length_grouped_batches_cover_an_epoch_with_little_padding(encoded):
    tokenizer, _, rows = encoded
    batches = length_grouped_batches(rows, 64, random.Random(0), tokenizer.pad_token_id)
    assert sum(ids.shape[0] for ids, _ in batches) == len(rows)
    real = sum(int((ids != tokenizer.pad_token_id).sum()) for ids, _ in batches)
    assert real == sum(len(row.ids) for row in rows)
    padded = sum(ids.numel() for ids, _ in batches)
    assert real / padded > 0.9  # grouped by length; random batches would be mostly padding
    answers = sum(int(mask.sum()) for _, mask in batches)
    assert answers == sum(row.answer_end - row.answer_start for row in rows)
    again = length_grouped_batches(rows, 64, random.Random(0), tokenizer.pad_token_id)
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(batches, again, strict=True))


def test_pretraining_loss_adds_the_answer_term():
    torch.manual_seed(0)
    ids = torch.tensor([[5, 6, 7, 1, 0], [5, 8, 9, 7, 1]])
    answer = torch.zeros_like(ids, dtype=torch.bool)
    answer[:, 2] = True
    logits = torch.randn(2, 5, 12)
    plain = pretraining_loss(logits, ids, answer, pad_id=0, answer_weight=0.0)
    weighted = pretraining_loss(logits, ids, answer, pad_id=0, answer_weight=2.0)
    per_token = torch.nn.functional.cross_entropy(
        logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none"
    )
    assert plain == pytest.approx(per_token[ids[:, 1:] != 0].mean().item(), rel=1e-6)
    assert weighted - plain == pytest.approx(2.0 * per_token[:, 1].mean().item(), rel=1e-5)


def test_warmup_then_cosine_to_the_floor():
    assert warmup_cosine(0, 10, 100) == pytest.approx(0.1)
    assert warmup_cosine(9, 10, 100) == pytest.approx(1.0)
    assert warmup_cosine(10, 10, 100) == pytest.approx(1.0)
    assert warmup_cosine(55, 10, 100) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert warmup_cosine(100, 10, 100) == pytest.approx(0.1)
    assert warmup_cosine(500, 10, 100) == pytest.approx(0.1)


@pytest.mark.parametrize("size", ["tiny", "small"])
def test_model_shapes_match_the_sizes(size):
    spec = SIZES[size]
    model = build_model(spec, vocab_size=400, seed=0)
    config = model.config
    assert config.model_type == "qwen3" and config.tie_word_embeddings
    assert (config.num_hidden_layers, config.hidden_size) == (spec.layers, spec.hidden)
    if size == "small":
        assert parameter_count(model) >= 20_000_000
    again = build_model(spec, vocab_size=400, seed=0)
    assert torch.equal(model.model.layers[0].mlp.down_proj.weight, again.model.layers[0].mlp.down_proj.weight)
