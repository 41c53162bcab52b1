"""Token plumbing shared by the editors: encoding, the subject's last token, right-padded batches.

Prompts are encoded without special tokens, the same way :func:`edit_grpo_trl.generation.greedy_generate`
encodes them, so an edit is written at exactly the positions the evaluation later reads.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from edit_grpo_trl.editors.arch import EditorConfigError


def encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def target_ids(tokenizer, target: str) -> list[int]:
    """Tokens of the new object as it follows a prompt (with the separating space)."""
    ids = encode(tokenizer, " " + target.strip())
    if not ids:
        raise EditorConfigError(f"the target {target!r} encodes to no tokens")
    return ids


def subject_last_index(tokenizer, text: str, subject: str, search_from: int = 0) -> int:
    """Index of the token holding the last character of ``subject`` (first occurrence after ``search_from``)."""
    start = text.find(subject, search_from)
    if start < 0:
        raise EditorConfigError(f"subject {subject!r} does not occur in {text!r}")
    last_char = start + len(subject) - 1
    if getattr(tokenizer, "is_fast", False):
        offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        for index, (begin, end) in enumerate(offsets):
            if begin <= last_char < end:
                return index
    # Slow tokenizers (or a character no token spans): the subject ends where its prefix's tokens end.
    return len(encode(tokenizer, text[: last_char + 1])) - 1


def pad_right(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``input_ids`` and ``attention_mask``: every real token keeps its position id."""
    width = max(len(ids) for ids in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, ids in enumerate(sequences):
        input_ids[row, : len(ids)] = torch.tensor(list(ids), dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
    return input_ids, attention_mask


def pad_id(tokenizer) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if candidate is not None:
            return candidate
    return 0
