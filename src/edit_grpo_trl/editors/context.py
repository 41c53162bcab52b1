"""Random-prefix context templates, as ROME uses them to average keys and values over contexts.

A key computed at the subject's last token of one sentence is specific to that sentence; averaging it over
a few short texts *the model itself generates* (each followed by ". {}") gives a key that fires for the
subject wherever it appears. ``"{}"`` (no prefix) is always the first template.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from edit_grpo_trl.editors.tokens import encode

DEFAULT_STARTS = ("The", "Therefore", "Because", "I", "You")


def _usable_starts(tokenizer, starts: Sequence[str]) -> list[list[int]]:
    """Start words the tokenizer knows (a word-level tokenizer maps unknown words to its unk token)."""
    usable = []
    for start in starts:
        ids = encode(tokenizer, start)
        if ids and tokenizer.unk_token_id not in ids:
            usable.append(ids)
    if not usable:
        for fallback in (tokenizer.bos_token_id, tokenizer.eos_token_id):
            if fallback is not None:
                return [[fallback]]
        raise ValueError("the tokenizer knows none of the start words and has no BOS/EOS token to start from")
    return usable


@torch.no_grad()
def generate_context_templates(
    model,
    tokenizer,
    length_params: Sequence[Sequence[int]] = ((5, 10), (10, 10)),
    starts: Sequence[str] = DEFAULT_STARTS,
    seed: int = 0,
) -> list[str]:
    """``["{}"]`` plus, for each ``(length, count)``, ``count`` sampled texts of ``length`` new tokens.

    Sampling is top-5 from the model under a fixed seed (the global RNG state is left as it was).
    """
    templates = ["{}"]
    start_ids = _usable_starts(tokenizer, starts)
    device = next(model.parameters()).device
    special = set(tokenizer.all_special_ids)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for length, count in length_params:
            for sample in range(count):
                prompt = torch.tensor([start_ids[sample % len(start_ids)]], device=device)
                output = model.generate(
                    input_ids=prompt,
                    attention_mask=torch.ones_like(prompt),
                    max_new_tokens=length,
                    do_sample=True,
                    top_k=5,
                    pad_token_id=tokenizer.pad_token_id
                    if tokenizer.pad_token_id is not None
                    else tokenizer.eos_token_id,
                )
                kept = [token for token in output[0].tolist() if token not in special]
                text = tokenizer.decode(kept, skip_special_tokens=True)
                # Braces would break str.format; new lines would leave the prompt's one-line shape.
                text = " ".join(text.replace("{", " ").replace("}", " ").split())
                templates.append(text + ". {}")
    return templates
