"""Pretraining a fresh model on a world's corpus until it recalls its facts (plain PyTorch, no Trainer).

AdamW with linear warm-up and cosine decay; batches grouped by length (world sentences run from 6 to 60
tokens, so random batches would be mostly padding); the loss is the language-model loss on every token plus
an extra term on the answer tokens. Every ``check_every`` steps, greedy recall is measured on samples of the
held-out, alias, two-hop and chat splits; training stops once all of them reach the target.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from edit_grpo_trl.data.world.corpus import CorpusSample, build_corpus
from edit_grpo_trl.data.world.model import build_model, parameter_count
from edit_grpo_trl.data.world.recall import recall, recall_report
from edit_grpo_trl.data.world.spec import WorldSize, size_spec
from edit_grpo_trl.data.world.tokenizer import build_tokenizer

logger = logging.getLogger(__name__)

STOP_SPLITS = ("heldout", "alias", "two_hop", "chat")
THREADS_ENV = "EDIT_GRPO_WORLD_THREADS"


@dataclass(frozen=True)
class EncodedSample:
    ids: list[int]
    answer_start: int
    answer_end: int


def encode_samples(tokenizer, samples: list[CorpusSample]) -> list[EncodedSample]:
    """Token ids of each sample (ending with EOS) and where its answer tokens are."""
    encoded = []
    for sample in samples:
        prompt = tokenizer(sample.prompt, add_special_tokens=False)["input_ids"]
        answer = tokenizer(sample.answer, add_special_tokens=False)["input_ids"]
        ending = tokenizer(sample.ending, add_special_tokens=False)["input_ids"]
        if ending[-1:] != [tokenizer.eos_token_id]:
            ending = [*ending, tokenizer.eos_token_id]
        encoded.append(EncodedSample([*prompt, *answer, *ending], len(prompt), len(prompt) + len(answer)))
    return encoded


def length_grouped_batches(
    samples: list[EncodedSample], batch_size: int, rng: random.Random, pad_id: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of (input ids, answer mask) batches: similar lengths together, batches in random order."""
    order = sorted(range(len(samples)), key=lambda i: (len(samples[i].ids), rng.random()))
    batches = []
    for start in range(0, len(order), batch_size):
        rows = [samples[i] for i in order[start : start + batch_size]]
        width = max(len(row.ids) for row in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        answer = torch.zeros((len(rows), width), dtype=torch.bool)
        for index, row in enumerate(rows):
            ids[index, : len(row.ids)] = torch.tensor(row.ids)
            answer[index, row.answer_start : row.answer_end] = True
        batches.append((ids, answer))
    rng.shuffle(batches)
    return batches


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, floor: float = 0.1) -> float:
    """Learning-rate factor: linear warm-up to 1, then cosine decay to ``floor`` at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def pretraining_loss(
    logits: torch.Tensor, ids: torch.Tensor, answer: torch.Tensor, pad_id: int, answer_weight: float
):
    """Mean next-token loss over real tokens, plus ``answer_weight`` times the mean over answer tokens."""
    targets = ids[:, 1:]
    per_token = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), targets, reduction="none")
    real = targets != pad_id
    loss = per_token[real].mean()
    answer_tokens = answer[:, 1:]
    if answer_weight and answer_tokens.any():
        loss = loss + answer_weight * per_token[answer_tokens].mean()
    return loss


@contextlib.contextmanager
def cpu_threads(count: int | None):
    """Run with ``count`` intra-op threads (None: leave as is)."""
    previous = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def pretrain(world, device: str | None = None, show_progress: bool = True, threads: int | None = None):
    """Train a fresh model on ``world`` until it recalls its facts; returns (model, tokenizer, report).

    The model comes back in float32 on the CPU, in eval mode. ``threads`` sets the CPU intra-op threads
    (default: ``$EDIT_GRPO_WORLD_THREADS``, else one for the tiny world: on an idle 2-core box a second
    thread is about 1.45x faster, but when other processes share the cores, busy-waiting OpenMP threads
    make it many times slower).
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if threads is None and os.environ.get(THREADS_ENV):
        threads = int(os.environ[THREADS_ENV])
    if threads is None and device == "cpu" and world.size == "tiny":
        threads = 1
    with cpu_threads(threads if device == "cpu" else None):
        return _pretrain(world, size_spec(world.size), torch.device(device), show_progress)


def _pretrain(world, spec: WorldSize, device: torch.device, show_progress: bool):
    started = time.perf_counter()
    tokenizer = build_tokenizer(world)
    samples = encode_samples(tokenizer, build_corpus(world))
    pad_id = tokenizer.pad_token_id
    model = build_model(spec, len(tokenizer), world.seed, pad_id, tokenizer.eos_token_id).to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=spec.learning_rate, betas=(0.9, 0.98), weight_decay=0.0
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, spec.warmup_steps, spec.max_steps)
    )
    on_gpu = device.type == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if on_gpu else contextlib.nullcontext()
    batch_size = min(spec.batch_size, len(samples))
    rng = random.Random(world.seed)
    logger.info(
        "pretraining world %s (seed %d): %d samples, %d tokens, %d parameters, %s",
        world.size,
        world.seed,
        len(samples),
        sum(len(s.ids) for s in samples),
        parameter_count(model),
        device,
    )
    history: list[dict] = []
    check_seconds = 0.0
    step = 0
    batches: list = []
    progress = tqdm(total=spec.max_steps, desc=f"pretrain world-{world.size}", disable=not show_progress)
    while step < spec.max_steps:
        if not batches:
            batches = length_grouped_batches(samples, batch_size, rng, pad_id)
        ids, answer = (tensor.to(device, non_blocking=True) for tensor in batches.pop())
        model.train()
        with autocast:
            logits = model(input_ids=ids, attention_mask=(ids != pad_id).long()).logits
        loss = pretraining_loss(logits, ids, answer, pad_id, spec.answer_loss_weight)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        progress.update(1)
        if step % spec.check_every == 0 or step == spec.max_steps:
            check_started = time.perf_counter()
            scores = {s: recall(model, tokenizer, world, s, limit=spec.check_prompts) for s in STOP_SPLITS}
            check_seconds += time.perf_counter() - check_started
            elapsed = round(time.perf_counter() - started, 1)
            history.append({"step": step, "seconds": elapsed, "loss": round(loss.item(), 4), **scores})
            progress.set_postfix(loss=f"{loss.item():.3f}", **{s: f"{v:.2f}" for s, v in scores.items()})
            logger.info("step %d: loss %.3f, recall %s", step, loss.item(), scores)
            if min(scores.values()) >= spec.target_recall:
                break
    progress.close()
    train_seconds = time.perf_counter() - started
    model.eval()
    report = {
        "size": world.size,
        "seed": world.seed,
        "device": str(device),
        "threads": torch.get_num_threads() if not on_gpu else None,
        "parameters": parameter_count(model),
        "vocab_size": len(tokenizer),
        "people": len(world.people),
        "aliases": len(world.aliases),
        "entities": world.entity_count,
        "facts": len(world.people) * len(world.relations),
        "corpus_samples": len(samples),
        "corpus_tokens": sum(len(s.ids) for s in samples),
        "steps": step,
        "target_recall": spec.target_recall,
        "seconds": round(train_seconds, 2),
        "recall_check_seconds": round(check_seconds, 2),
        "history": history,
        "recall": recall_report(model, tokenizer, world),
    }
    logger.info(
        "world %s pretrained in %.0f s (%d steps): %s", world.size, train_seconds, step, report["recall"]
    )
    return model.float().cpu(), tokenizer, report
