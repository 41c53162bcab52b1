"""KnowEdit-style metrics (docs/design.md section 8) as functions of a model's outputs.

* Teacher-forced (EasyEdit-compatible): one forward on ``prompt + " " + target``; the score is the share
  of target tokens whose argmax at the previous position equals the target token. Batched with left
  padding; the target tokens are those of the full text after the prompt's own tokens, so a tokenizer
  that merges across the boundary is scored on what it actually produces.
* Locality agreement: the share of positions where post-edit argmax tokens equal the pre-edit ones.
* Fluency (EasyEdit's ``test_generation_quality``): the anchor prompt continued by top-k (k=5) sampling
  until prompt plus continuation hold 100 tokens; the n-gram entropy of that whole text (prompt
  included), bigram weight 2/3 and trigram weight 4/3, arithmetic mean, in bits; reports multiply by 100.
  Words as nltk's ``word_tokenize`` splits them (nltk is no dependency: :func:`word_tokens` follows its
  rules for words, punctuation, contractions, hyphens and decimals), case kept.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

# nltk's Treebank word rules, the parts that matter on generated prose: "don't" -> do n't, "it's" -> it 's,
# hyphenated words and decimals stay whole, every other punctuation mark is a word of its own.
_WORD = re.compile(r"\w+(?=n't\b)|n't\b|'(?:s|re|ve|ll|d|m)\b|\w+(?:[-.]\w+)*|[^\w\s]", re.IGNORECASE)


def _target_tokens(tokenizer, prompt: str, target: str) -> tuple[list[int], list[int]]:
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    full_ids = tokenizer(f"{prompt} {target}", add_special_tokens=False)["input_ids"]
    if full_ids[: len(prompt_ids)] == prompt_ids and len(full_ids) > len(prompt_ids):
        return prompt_ids, full_ids[len(prompt_ids) :]
    return prompt_ids, tokenizer(" " + target, add_special_tokens=False)["input_ids"]


@torch.no_grad()
def teacher_forced_predictions(
    model,
    tokenizer,
    prompts: Sequence[str],
    targets: Sequence[str],
    batch_size: int = 32,
    progress: bool = False,
) -> list[tuple[list[int], list[int]]]:
    """For each (prompt, target): (target token ids, argmax token ids at the positions predicting them)."""
    if len(prompts) != len(targets):
        raise ValueError(f"{len(prompts)} prompts but {len(targets)} targets")
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    results: list[tuple[list[int], list[int]]] = []
    starts = range(0, len(prompts), batch_size)
    for start in tqdm(starts, desc="evaluate: teacher-forced", disable=not progress, leave=False):
        pairs = [
            _target_tokens(tokenizer, p, t)
            for p, t in zip(
                prompts[start : start + batch_size], targets[start : start + batch_size], strict=True
            )
        ]
        sequences = [p + t for p, t in pairs]
        width = max(map(len, sequences))
        ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, sequence in enumerate(sequences):
            ids[row, width - len(sequence) :] = torch.tensor(sequence)
            mask[row, width - len(sequence) :] = 1
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        logits = model(
            input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device)
        ).logits
        argmax = logits.argmax(dim=-1).cpu()
        for row, (_, target) in enumerate(pairs):
            # the target occupies the last len(target) columns; each is predicted one column earlier
            predicted = argmax[row, width - len(target) - 1 : width - 1].tolist()
            results.append((target, predicted))
    return results


def teacher_forced_accuracy(
    model, tokenizer, prompts: Sequence[str], targets: Sequence[str], batch_size: int = 32
) -> list[float]:
    """Share of target tokens predicted exactly (argmax), one score per (prompt, target)."""
    return [
        sum(int(a == b) for a, b in zip(target, predicted, strict=True)) / max(1, len(target))
        for target, predicted in teacher_forced_predictions(model, tokenizer, prompts, targets, batch_size)
    ]


def locality_agreement(pre_tokens: Sequence[int], post_tokens: Sequence[int]) -> float:
    """Share of positions where the post-edit argmax equals the pre-edit argmax."""
    if len(pre_tokens) != len(post_tokens):
        raise ValueError(f"locality token lists differ in length: {len(pre_tokens)} vs {len(post_tokens)}")
    return sum(int(a == b) for a, b in zip(pre_tokens, post_tokens, strict=True)) / max(1, len(pre_tokens))


def word_tokens(text: str) -> list[str]:
    """The words nltk's ``word_tokenize`` would give for ordinary prose (see the module notes)."""
    return _WORD.findall(text)


def fluency_text(text: str) -> str:
    """The text EasyEdit scores (prompt and continuation decoded together): NFKD-normalized, blank lines
    folded to a space."""
    return unicodedata.normalize("NFKD", text).replace("\n\n", " ")


def _left_padded(tokenizer, sequences: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    width = max(map(len, sequences))
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        ids[row, width - len(sequence) :] = torch.tensor(sequence, dtype=torch.long)
        mask[row, width - len(sequence) :] = 1
    return ids, mask


@torch.no_grad()
def sample_fluency_texts(
    model,
    tokenizer,
    prompts: Sequence[str],
    max_length: int = 100,
    top_k: int = 5,
    seed: int = 0,
    batch_size: int = 32,
    progress: bool = False,
) -> list[str]:
    """EasyEdit's fluency generations: each prompt continued by top-k sampling until prompt and
    continuation hold ``max_length`` tokens (the prompt as the tokenizer encodes it, special tokens
    included), decoded without special tokens; seeded, and the global RNG is left as it was.

    As in EasyEdit's ``generate_fast``, EOS does not end a row: the text always runs to ``max_length``
    tokens. EOS is kept from being sampled (EasyEdit samples it and drops it from the decoded text)."""
    from transformers import GenerationConfig

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    texts: list[str] = []
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        starts = range(0, len(prompts), batch_size)
        for start in tqdm(starts, desc="evaluate: fluency", disable=not progress, leave=False):
            batch = list(prompts[start : start + batch_size])
            encoded = [tokenizer(p)["input_ids"] for p in batch]
            budget = [max(1, max_length - len(ids)) for ids in encoded]
            ids, mask = _left_padded(tokenizer, encoded)
            # plain top-k sampling, as EasyEdit's: none of the model's own generation defaults
            # (temperature, top_p, repetition penalty) apply
            sampling = GenerationConfig(
                do_sample=True,
                top_k=top_k,
                top_p=1.0,
                temperature=1.0,
                max_new_tokens=max(budget),
                min_new_tokens=max(budget),
                pad_token_id=pad_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            output = model.generate(
                input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=sampling
            )
            for prompt_ids, row, allowed in zip(
                encoded, output[:, ids.shape[1] :].tolist(), budget, strict=True
            ):
                # decoded whole, as EasyEdit does, so a tokenizer's word boundaries come out right
                whole = tokenizer.decode(prompt_ids + row[:allowed], skip_special_tokens=True)
                texts.append(fluency_text(whole))
    return texts


def ngram_entropy(
    text: str, orders: Sequence[int] = (2, 3), weights: Sequence[float] = (2 / 3, 4 / 3)
) -> float:
    """Weighted arithmetic mean of the n-gram entropies (in bits) of one text's word tokens (EasyEdit's
    ``compute_n_gram_entropy``; reports multiply it by 100). Case is kept, as nltk keeps it."""
    words = word_tokens(text)
    entropies = []
    for order in orders:
        grams = Counter(tuple(words[i : i + order]) for i in range(len(words) - order + 1))
        total = sum(grams.values())
        entropies.append(-sum(c / total * math.log2(c / total) for c in grams.values()) if total else 0.0)
    return sum(w * e for w, e in zip(weights, entropies, strict=True)) / len(weights)
