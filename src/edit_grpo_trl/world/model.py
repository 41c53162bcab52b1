"""The knowledge world's tokenizer and model, their pretraining, and the on-disk cache.

The tokenizer is word-level (``tokenizers`` WordLevel, punctuation split off) wrapped as a
``PreTrainedTokenizerFast`` with a chat template; the model is a small Qwen3. Pretraining runs until the
model recalls its facts through the held-out templates (greedy exact match), then both are saved with
``save_pretrained`` so every later stage loads them like a Hub model.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import math
import os
import random
import shutil
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from edit_grpo_trl.answers import exact_match, extract_plain
from edit_grpo_trl.generation import greedy_generate
from edit_grpo_trl.world.world import (
    ALIAS_FORMS,
    FORMAT_VERSION,
    HELDOUT_KEYS,
    SIZES,
    KnowledgeWorld,
    WorldSize,
)

logger = logging.getLogger(__name__)

SPECIAL_TOKENS = ["<pad>", "<eos>", "<unk>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }} : {{ message['content'] }} <eos> {% endfor %}"
    "{% if add_generation_prompt %}assistant :{% endif %}"
)
# Words of the AGT chat instruction, so chat-style prompts tokenize without <unk>.
CHAT_WORDS = (
    "user assistant system Complete the statement or answer question Give only as your final inside boxed"
)


def build_tokenizer(world: KnowledgeWorld):
    """The word-level tokenizer of ``world``: the special tokens, then every word of its corpus, sorted."""
    from tokenizers import pre_tokenizers

    from edit_grpo_trl.testing import word_tokenizer

    pre_tokenizer = pre_tokenizers.Whitespace()  # the split word_tokenizer's split_punctuation makes
    words: set[str] = set(CHAT_WORDS.split()) | {":", ".", ",", "?", "\\", "{", "}", "{}"}
    for sentence in world.corpus():
        words.update(piece for piece, _ in pre_tokenizer.pre_tokenize_str(sentence))
    tokenizer = word_tokenizer(sorted(words), SPECIAL_TOKENS, split_punctuation=True)
    tokenizer.padding_side = "left"
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_model(spec: WorldSize, vocab_size: int, seed: int):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(
        vocab_size=vocab_size,
        hidden_size=spec.hidden,
        intermediate_size=spec.intermediate,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.kv_heads,
        head_dim=spec.hidden // spec.heads,
        max_position_embeddings=128,
        tie_word_embeddings=True,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=1,
    )
    torch.manual_seed(seed)
    return Qwen3ForCausalLM(config)


def recall(
    model, tokenizer, world: KnowledgeWorld, split: str, limit: int | None = None, batch_size: int = 256
):
    """Share of (prompt, answer) pairs of a recall split the model answers exactly (greedy)."""
    pairs = world.recall_prompts(split)
    if limit is not None and len(pairs) > limit:
        pairs = random.Random(0).sample(pairs, limit)
    completions = greedy_generate(
        model, tokenizer, [p for p, _ in pairs], max_new_tokens=4, batch_size=batch_size
    )
    hits = sum(exact_match(extract_plain(c), [a]) for c, (_, a) in zip(completions, pairs, strict=True))
    return hits / max(1, len(pairs))


def recall_splits() -> list[str]:
    """Every split the pretraining report measures: templates, each held-out key, each alias form, two-hop."""
    return [
        "anchor",
        "train",
        "heldout",
        *(f"heldout:{key}" for key in HELDOUT_KEYS),
        *(f"alias:{form}" for form in ALIAS_FORMS),
        "two_hop",
        "two_hop_stated",
    ]


def alias_recall(model, tokenizer, world: KnowledgeWorld, batch_size: int = 256) -> dict[str, float]:
    """Pre-edit recall of every alias probe form: {form: share of the aliased people's facts answered}.

    The cases' ``Subject_Aliasing`` probes ask the new object through the alias and each of
    ``ALIAS_FORMS``; pretraining states aliased facts only through the anchor and the first training
    template, so a form the model cannot answer before the edit says nothing about the edit's reach.
    """
    return {
        form: recall(model, tokenizer, world, f"alias:{form}", batch_size=batch_size) for form in ALIAS_FORMS
    }


def recall_report(model, tokenizer, world: KnowledgeWorld, batch_size: int = 256) -> dict[str, float]:
    """Recall of every split of :func:`recall_splits` (greedy exact match, all prompts)."""
    return {split: recall(model, tokenizer, world, split, batch_size=batch_size) for split in recall_splits()}


def _batches(token_lists: list[list[int]], batch_size: int, rng: random.Random, pad_id: int):
    order = list(range(len(token_lists)))
    while True:
        rng.shuffle(order)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            rows = [token_lists[i] for i in order[start : start + batch_size]]
            width = max(map(len, rows))
            ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
            for row, tokens in enumerate(rows):
                ids[row, : len(tokens)] = torch.tensor(tokens)
            yield ids


@contextlib.contextmanager
def _cpu_threads(count: int):
    # A model this small gains nothing from intra-op threads, and busy-waiting OpenMP threads make it
    # many times slower when other processes share the cores (measured: 6 steps/s with 1 thread against
    # 0.2 steps/s with 2 threads while two other jobs ran).
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def pretrain(world: KnowledgeWorld, device: str | None = None, show_progress: bool = True):
    """Train a fresh model on the world's corpus until held-out recall reaches the size's target."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    threads = _cpu_threads(1) if device == "cpu" and world.size == "tiny" else contextlib.nullcontext()
    with threads:
        return _pretrain(world, device, show_progress)


def _pretrain(world: KnowledgeWorld, device: str, show_progress: bool):
    spec = SIZES[world.size]
    tokenizer = build_tokenizer(world)
    model = build_model(spec, len(tokenizer), world.seed).to(device)
    sentences = world.corpus()
    token_lists = [
        tokenizer(s, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for s in sentences
    ]
    rng = random.Random(world.seed)
    batches = _batches(token_lists, min(spec.batch_size, len(token_lists)), rng, tokenizer.pad_token_id)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=spec.learning_rate, weight_decay=0.0, betas=(0.9, 0.98)
    )
    warmup = max(1, spec.max_steps // 20)

    def learning_rate_factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, spec.max_steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, learning_rate_factor)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.startswith("cuda")
        else contextlib.nullcontext()
    )
    check_every = max(100, spec.max_steps // 16)
    recall_seconds = 0.0
    started = time.perf_counter()
    history = []
    progress = tqdm(range(spec.max_steps), desc=f"pretrain world-{world.size}", disable=not show_progress)
    for step in progress:
        model.train()
        ids = next(batches).to(device)
        labels = ids.masked_fill(ids == tokenizer.pad_token_id, -100)
        with autocast:
            loss = model(
                input_ids=ids, attention_mask=(ids != tokenizer.pad_token_id).long(), labels=labels
            ).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if (step + 1) % check_every == 0 or step + 1 == spec.max_steps:
            check_started = time.perf_counter()
            heldout = recall(model, tokenizer, world, "heldout", limit=1000)
            recall_seconds += time.perf_counter() - check_started
            history.append({"step": step + 1, "loss": loss.item(), "heldout_recall": heldout})
            progress.set_postfix(loss=f"{loss.item():.3f}", heldout=f"{heldout:.3f}")
            if heldout >= spec.target_recall:
                break
    model.eval()
    report = {
        "size": world.size,
        "seed": world.seed,
        "parameters": sum(p.numel() for p in model.parameters()),
        "steps": history[-1]["step"] if history else 0,
        "seconds": time.perf_counter() - started,
        "recall_check_seconds": recall_seconds,
        "device": device,
        "history": history,
        "recall": recall_report(model, tokenizer, world),
    }
    return model.float().cpu(), tokenizer, report


def default_cache_dir() -> Path:
    return Path(os.environ.get("EDIT_GRPO_CACHE", Path.home() / ".cache" / "edit_grpo_trl")) / "worlds"


def cache_key(size: str, seed: int) -> str:
    """The cache folder's name: size, seed, world format, and a digest of everything pretraining reads.

    The digest covers the size's settings and the whole corpus, so a changed template or fact never
    reuses a model pretrained on other text, even if nobody bumped ``FORMAT_VERSION``.
    """
    world = KnowledgeWorld.generate(size, seed)
    content = json.dumps({"spec": SIZES[size].__dict__, "corpus": world.corpus()}, sort_keys=True)
    digest = hashlib.sha256(content.encode()).hexdigest()[:10]
    return f"{size}-seed{seed}-v{FORMAT_VERSION}-{digest}"


def ensure_world_model(
    size: str = "tiny", seed: int = 0, cache_dir: str | Path | None = None, device: str | None = None
) -> Path:
    """The folder of the pretrained world ``(size, seed)``; pretrains and caches it on first use.

    The folder is complete or absent: it is built under a temporary name and renamed at the end, under a
    file lock, so concurrent processes (torchrun) build it once and a crash leaves nothing half-written.
    """
    if size not in SIZES:
        raise ValueError(f"unknown knowledge-world size {size!r}; sizes: {', '.join(SIZES)}")
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    final = root / cache_key(size, seed)
    if (final / "pretrain_report.json").is_file():
        return final
    with open(root / f"{final.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (final / "pretrain_report.json").is_file():
            return final
        logger.info("pretraining knowledge world %s (seed %d) into %s", size, seed, final)
        world = KnowledgeWorld.generate(size, seed)
        model, tokenizer, report = pretrain(world, device=device)
        temporary = root / f"{final.name}.tmp-{os.getpid()}"
        shutil.rmtree(temporary, ignore_errors=True)
        model.save_pretrained(temporary)
        tokenizer.save_pretrained(temporary)
        world.save(temporary)
        (temporary / "pretrain_report.json").write_text(json.dumps(report, indent=1))
        if final.exists():
            shutil.rmtree(final)  # an incomplete folder without a report
        temporary.rename(final)
        logger.info(
            "world %s: held-out recall %.3f after %d steps (%.0f s)",
            size,
            report["recall"]["heldout"],
            report["steps"],
            report["seconds"],
        )
    return final
