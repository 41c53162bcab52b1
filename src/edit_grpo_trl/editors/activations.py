"""Reading a module's input and output at chosen token positions (the keys and values of an MLP).

The MLP output projection's input at the subject's last token is the *key* an edit writes under; its output
(or the decoder layer's output, for MEMIT) is the *value*. Keys are averaged over the context templates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from edit_grpo_trl.data.cases import EditCase
from edit_grpo_trl.editors.arch import get_module
from edit_grpo_trl.editors.tokens import encode, pad_id, pad_right, subject_last_index


@dataclass(frozen=True)
class LocatedPrompt:
    """Token ids of one (context-prefixed) prompt and the index of its subject's last token."""

    ids: list[int]
    subject_index: int


FACT_TOKENS = ("subject_last", "last")


def locate(
    tokenizer, template: str, prompt: str, subject: str, fact_token: str = "subject_last"
) -> LocatedPrompt:
    """Fill a context template with the prompt and find the token an edit is keyed on.

    ``subject_last``: the subject's last token inside the prompt part (ROME's choice); ``last``: the prompt's
    last token (for models that look the fact up there rather than at the subject).
    """
    prefix = template[: template.index("{}")]
    text = template.format(prompt)
    ids = encode(tokenizer, text)
    if fact_token == "last":
        return LocatedPrompt(ids, len(ids) - 1)
    if fact_token != "subject_last":
        raise ValueError(f"fact_token must be one of {FACT_TOKENS}, got {fact_token!r}")
    return LocatedPrompt(ids, subject_last_index(tokenizer, text, subject, search_from=len(prefix)))


def _output_tensor(output):
    return output[0] if isinstance(output, tuple) else output


@torch.no_grad()
def module_io(
    model, tokenizer, module_name: str, located: Sequence[LocatedPrompt], batch_size: int = 32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Input and output of ``module_name`` at each prompt's subject token: ``(n, in)`` and ``(n, out)``."""
    module = get_module(model, module_name)
    device = next(model.parameters()).device
    inputs, outputs = [], []
    captured: dict[str, torch.Tensor] = {}

    def hook(_module, args, output):
        captured["input"] = args[0]
        captured["output"] = _output_tensor(output)

    handle = module.register_forward_hook(hook)
    try:
        for start in range(0, len(located), batch_size):
            batch = located[start : start + batch_size]
            input_ids, attention_mask = pad_right([item.ids for item in batch], pad_id(tokenizer))
            model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device))
            rows = torch.arange(len(batch), device=device)
            columns = torch.tensor([item.subject_index for item in batch], device=device)
            inputs.append(captured["input"][rows, columns].float())
            outputs.append(captured["output"][rows, columns].float())
    finally:
        handle.remove()
    return torch.cat(inputs), torch.cat(outputs)


def subject_keys(
    model,
    tokenizer,
    module_name: str,
    cases: Sequence[EditCase],
    templates: Sequence[str],
    fact_token: str = "subject_last",
) -> torch.Tensor:
    """Per case, the module's input at the fact token averaged over templates: ``(n, in)``."""
    located = [
        locate(tokenizer, t, case.prompt, case.subject, fact_token) for case in cases for t in templates
    ]
    inputs, _ = module_io(model, tokenizer, module_name, located)
    return inputs.view(len(cases), len(templates), -1).mean(dim=1)


def bare_prompt_io(
    model, tokenizer, module_name: str, cases: Sequence[EditCase], fact_token: str = "subject_last"
) -> tuple[torch.Tensor, torch.Tensor]:
    """The module's input and output at the fact token of each bare anchor prompt."""
    located = [locate(tokenizer, "{}", case.prompt, case.subject, fact_token) for case in cases]
    return module_io(model, tokenizer, module_name, located)
