"""Batched greedy decoding with the stop rules the generation-based metrics use.

Shared by the knowledge world's recall checks, the AGT builder's pre-edit locality answers and the
evaluation. Decoding stops at EOS, at a newline, or at a sentence-ending ".", and never runs past
``max_new_tokens``; prompts are left-padded so every row's next token sits in the last column.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

_STOP_STRINGS = (".", "\n")


def stop_token_ids(tokenizer) -> set[int]:
    """Token ids whose text ends an answer: EOS, or any token that contains a newline or is a period."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    for token, token_id in tokenizer.get_vocab().items():
        text = tokenizer.convert_tokens_to_string([token])
        if "\n" in text or text.strip() in _STOP_STRINGS:
            ids.add(token_id)
    return ids


@torch.no_grad()
def greedy_token_ids(
    model,
    tokenizer,
    prompts: Sequence[str],
    max_new_tokens: int,
    stop_ids: set[int],
    batch_size: int = 64,
    show_progress: bool = False,
) -> list[list[int]]:
    """Greedy continuations as token ids, each cut after its first stop token (which is kept)."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    results: list[list[int]] = []
    batches = range(0, len(prompts), batch_size)
    for start in tqdm(batches, desc="generate", disable=not show_progress, leave=False):
        batch = list(prompts[start : start + batch_size])
        encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in batch]
        width = max(len(ids) for ids in encoded)
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, ids in enumerate(encoded):
            input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, width - len(ids) :] = 1
        output = model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=sorted(stop_ids),
            pad_token_id=pad_id,
        )
        for row in output[:, width:].tolist():
            kept = []
            for token_id in row:
                kept.append(token_id)
                if token_id in stop_ids:
                    break
            results.append(kept)
    if was_training:
        model.train()
    return results


def greedy_generate(
    model,
    tokenizer,
    prompts: Sequence[str],
    max_new_tokens: int = 50,
    batch_size: int = 64,
    stop_at_sentence_end: bool = True,
    show_progress: bool = False,
) -> list[str]:
    """Greedy completions (text after the prompt) for plain-text prompts.

    With ``stop_at_sentence_end`` the completion is cut before the first EOS, newline or period token,
    which is what the generation-based metrics compare; without it, only EOS stops a row.
    """
    stop_ids = stop_token_ids(tokenizer) if stop_at_sentence_end else {tokenizer.eos_token_id}
    stop_ids.discard(None)
    return [
        completion_text(tokenizer, ids, stop_ids)
        for ids in greedy_token_ids(
            model, tokenizer, prompts, max_new_tokens, stop_ids, batch_size, show_progress
        )
    ]


def completion_text(tokenizer, ids: Sequence[int], stop_ids: set[int]) -> str:
    """The text of generated ids up to (not including) the first stop token, stripped."""
    kept = []
    for token_id in ids:
        if token_id in stop_ids:
            break
        kept.append(token_id)
    return tokenizer.decode(kept, skip_special_tokens=True).strip()
