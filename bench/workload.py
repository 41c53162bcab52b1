"""Synthetic, download-free workloads for the benchmarks: a word-level tokenizer, a Qwen3 model of a
given size with random weights (both from :mod:`edit_grpo_trl.testing`), and an AGT dataset of edit cases
over synthetic words."""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerFast

from edit_grpo_trl.testing import WORD_SPECIAL_TOKENS, build_tiny_causal_lm, word_tokenizer


@dataclass(frozen=True)
class ModelSize:
    hidden: int
    layers: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    architecture: str = "qwen3"
    tied_embeddings: bool = False


SIZES = {
    # ~0.5M parameters: CPU smoke runs
    "toy": ModelSize(hidden=64, layers=4, intermediate=192, heads=4, kv_heads=2, vocab=2000),
    # ~110M parameters: the smallest size the overhead benchmark reports
    "110m": ModelSize(hidden=768, layers=12, intermediate=2048, heads=12, kv_heads=4, vocab=32000),
    # The small knowledge world's layer shapes (world/world.py SIZES["small"]); its own model ties its embeddings
    # over a 1,597-word vocabulary (26.0M parameters), this one has 4,096 words untied (29.4M)
    "world-small": ModelSize(hidden=512, layers=8, intermediate=1536, heads=8, kv_heads=4, vocab=4096),
    # SmolLM2-135M-Instruct's exact shape (a Llama with tied embeddings)
    "smollm2-135m": ModelSize(
        hidden=576,
        layers=30,
        intermediate=1536,
        heads=9,
        kv_heads=3,
        vocab=49152,
        architecture="llama",
        tied_embeddings=True,
    ),
    # Qwen3-8B's exact shape (random weights)
    "qwen3-8b": ModelSize(hidden=4096, layers=36, intermediate=12288, heads=32, kv_heads=8, vocab=151936),
}

SPECIALS = WORD_SPECIAL_TOKENS


def make_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    tokenizer = word_tokenizer(f"w{i}" for i in range(vocab_size - len(SPECIALS)))
    tokenizer.padding_side = "left"
    return tokenizer


def make_model(size: str, seed: int = 0, dtype=torch.float32, device="cpu") -> PreTrainedModel:
    """A model of one of :data:`SIZES` with random weights, built on ``device`` (train mode)."""
    spec = SIZES[size]
    model = build_tiny_causal_lm(
        spec.architecture,
        spec.vocab,
        num_layers=spec.layers,
        hidden_size=spec.hidden,
        seed=seed,
        device=device,
        intermediate_size=spec.intermediate,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.kv_heads,
        head_dim=spec.hidden // spec.heads,
        max_position_embeddings=1024,
        tie_word_embeddings=spec.tied_embeddings,
        pad_token_id=0,
        eos_token_id=1,
    )
    return model.train().to(dtype)


def make_agt_dataset(
    num_cases: int,
    vocab_size: int,
    generalization: int = 2,
    locality: int = 1,
    prompt_words: int = 12,
    seed: int = 0,
) -> Dataset:
    """Cases of 1 anchor + K generalization + L locality prompts of random words; answers are single words."""
    rng = random.Random(seed)
    word = lambda: f"w{rng.randrange(vocab_size - len(SPECIALS))}"  # noqa: E731
    rows = {"prompt": [], "case_id": [], "role": [], "answers": [], "old_answers": [], "answer_style": []}
    for case in range(num_cases):
        new, old = word(), word()
        roles = ["anchor"] + ["generalization"] * generalization + ["locality"] * locality
        for role in roles:
            rows["prompt"].append(" ".join(word() for _ in range(prompt_words)))
            rows["case_id"].append(f"case-{case}")
            rows["role"].append(role)
            rows["answers"].append([word() if role == "locality" else new])
            rows["old_answers"].append([old])
            rows["answer_style"].append("plain")
    return Dataset.from_dict(rows)


def parameter_count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def training_settings(options, output_dir: str, max_steps: int, logging_steps: int = 1) -> dict:
    """The GRPOConfig settings every timing benchmark shares, from its batch-shape options (``batch``,
    ``steps_per_generation``, ``num_generations``, ``completion_length``, ``gradient_checkpointing``):
    bf16 autocast on a GPU, nothing saved or reported, a tiny learning rate (the weights barely move, so
    every condition times the same model)."""
    on_gpu = torch.cuda.is_available()
    return dict(
        output_dir=output_dir,
        per_device_train_batch_size=options.batch,
        steps_per_generation=options.steps_per_generation,
        num_generations=options.num_generations,
        max_completion_length=options.completion_length,
        max_steps=max_steps,
        learning_rate=1e-6,
        logging_steps=logging_steps,
        report_to="none",
        save_strategy="no",
        gradient_checkpointing=options.gradient_checkpointing,
        bf16=on_gpu,
        use_cpu=not on_gpu,
        seed=0,
        disable_tqdm=True,
    )
