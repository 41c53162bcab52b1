"""Training pools: the generalization prompts AGT trains on (TRAIN_GENERALIZATION probes), and
:func:`hold_out_locality`, which sets part of a case's locality probes aside for training.

Three kinds of source, combinable:

* :class:`FieldPromptSource`: prompts a data file already holds in fields the user names (for example a
  list of extra paraphrases); the loaders keep unmapped record fields in ``metadata["record_extra"]``.
* :class:`TemplatePromptSource`: templates with a ``{subject}`` slot (or a ``{prompt}`` slot, filled with
  the anchor), one list for all cases, one list per relation, or any callable ``case -> prompts``.
* :class:`GeneratedParaphraseSource`: paraphrases written at build time by a causal LM through its chat
  template (greedy or sampled), one paraphrase per output line.

:func:`build_training_pools` runs the sources, then filters every candidate *before* any probe is built:
normalized duplicates, the anchor itself, every evaluation probe of the case (held-out paraphrases,
portability and locality prompts), prompts without the subject, and prompts that state the answer are
refused and counted by source and reason. Evaluation probes therefore never enter training;
:class:`EditCase` checks the disjointness once more when the case is rebuilt.

:func:`sources_from_config` turns a recipe's :class:`~edit_grpo_trl.data.train_prompts.TrainPromptsConfig`
into these sources.
"""

from __future__ import annotations

import logging
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from tqdm.auto import tqdm

from edit_grpo_trl.answers import normalize_answer
from edit_grpo_trl.data.agt import render_chat_prompt
from edit_grpo_trl.data.cases import EVALUATION_KINDS, EditCase, Probe, ProbeKind
from edit_grpo_trl.data.train_prompts import (
    DEFAULT_PARAPHRASE_INSTRUCTION,
    PROMPT_SLOT,
    SUBJECT_SLOT,
    ParaphraseGenerationConfig,
    TrainPromptsConfig,
    check_template,
)

logger = logging.getLogger(__name__)

# Reasons a candidate training prompt is refused.
EMPTY = "empty"
DUPLICATE = "duplicate"
ANCHOR = "equals the anchor"
EVALUATION = "equals an evaluation probe"
NO_SUBJECT = "does not contain the subject"
STATES_NEW = "states the new object"
STATES_OLD = "states the old object"

PromptSource = Callable[[Sequence[EditCase]], Mapping[str, Sequence[str]]]
"""Anything that maps cases to candidate prompts: ``sources(cases) -> {case_id: [prompt, ...]}``."""


@dataclass(frozen=True)
class FieldPromptSource:
    """Prompts from record fields (string or list of strings), read from ``metadata["record_extra"]``.

    ``missing="error"`` raises when a case lacks every named field; ``"skip"`` gives it no prompts.
    """

    fields: tuple[str, ...]
    missing: Literal["error", "skip"] = "error"
    name: str = "fields"

    def __call__(self, cases: Sequence[EditCase]) -> dict[str, list[str]]:
        result: dict[str, list[str]] = {}
        for case in cases:
            extra = case.metadata.get("record_extra", {})
            present = [name for name in self.fields if name in extra]
            if not present and self.missing == "error":
                raise ValueError(
                    f"edit case {case.case_id!r} (record {case.metadata.get('index')} of "
                    f"{case.metadata.get('file', case.source)}) has none of the fields {list(self.fields)}; "
                    f"its unmapped fields are {sorted(extra)}"
                )
            prompts: list[str] = []
            for name in present:
                value = extra[name]
                items = [value] if isinstance(value, str) else value
                if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
                    raise ValueError(
                        f"edit case {case.case_id!r}: field {name!r} must hold a string or a list of strings, "
                        f"got {value!r:.80}"
                    )
                prompts.extend(items)
            result[case.case_id] = prompts
        return result


@dataclass(frozen=True)
class TemplatePromptSource:
    """Prompts from templates with a ``{subject}`` slot, or a ``{prompt}`` slot that takes the anchor.

    ``templates`` is one list for every case, a mapping ``relation -> list`` (cases whose relation has no
    entry get none), or a callable ``case -> prompts`` that returns finished prompts.
    """

    templates: Sequence[str] | Mapping[str, Sequence[str]] | Callable[[EditCase], Iterable[str]]
    name: str = "templates"

    def __post_init__(self) -> None:
        if callable(self.templates):
            return
        lists = self.templates.values() if isinstance(self.templates, Mapping) else [self.templates]
        for templates in lists:
            if isinstance(templates, str):
                raise TypeError(f"templates must be a list of strings, got the string {templates!r}")
            for template in templates:
                check_template(template)

    def __call__(self, cases: Sequence[EditCase]) -> dict[str, list[str]]:
        result: dict[str, list[str]] = {}
        for case in cases:
            if callable(self.templates):
                result[case.case_id] = list(self.templates(case))
                continue
            if isinstance(self.templates, Mapping):
                templates = self.templates.get(case.relation or "", ())
            else:
                templates = self.templates
            # replace, not str.format: templates may hold other braces.
            result[case.case_id] = [
                t.replace(PROMPT_SLOT, case.prompt).replace(SUBJECT_SLOT, case.subject) for t in templates
            ]
        return result


_LIST_MARKER = re.compile(r"^\s*(?:[-*\u2022]+|\(?\d{1,2}[.):]|[a-zA-Z][.)])\s+")
_THINKING = re.compile(r"<think>.*?(?:</think>|$)", re.DOTALL)


def parse_paraphrase_lines(text: str) -> list[str]:
    """One paraphrase per line: list markers, quotes and thinking blocks removed; header lines dropped."""
    text = _THINKING.sub("", text)
    lines = []
    for line in text.splitlines():
        line = _LIST_MARKER.sub("", line).strip()
        if len(line) >= 2 and line[0] == line[-1] and line[0] in "\"'":
            line = line[1:-1].strip()
        # "Here are five rewrites:" introduces the list; it is not one of them.
        if not line or line.endswith(":"):
            continue
        lines.append(line)
    return lines


class GeneratedParaphraseSource:
    """Paraphrases of each case's anchor, generated by ``model`` through ``tokenizer``'s chat template."""

    name = "generated"

    def __init__(self, model, tokenizer, config: ParaphraseGenerationConfig | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.config = config or ParaphraseGenerationConfig()

    def request(self, case: EditCase) -> str:
        """The rendered chat prompt that asks for the case's paraphrases."""
        content = (
            self.config.instruction.replace("{prompt}", case.prompt)
            .replace("{subject}", case.subject)
            .replace("{n}", str(self.config.num_paraphrases))
        )
        messages = [{"role": "user", "content": content}]
        return render_chat_prompt(self.tokenizer, messages, self.config.chat_template_kwargs)

    def __call__(self, cases: Sequence[EditCase]) -> dict[str, list[str]]:
        texts = generate_texts(
            self.model, self.tokenizer, [self.request(case) for case in cases], self.config
        )
        return {
            case.case_id: parse_paraphrase_lines(text)[: self.config.num_paraphrases]
            for case, text in zip(cases, texts, strict=True)
        }


@torch.no_grad()
def generate_texts(model, tokenizer, texts: Sequence[str], config: ParaphraseGenerationConfig) -> list[str]:
    """Free-form completions (the whole answer, newlines included) of already rendered prompts."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    torch.manual_seed(config.seed)  # sampled paraphrases repeat from run to run
    was_training = model.training
    model.eval()
    outputs: list[str] = []
    try:
        for start in tqdm(range(0, len(texts), config.batch_size), desc="paraphrase", disable=len(texts) < 2):
            batch = [
                tokenizer(t, add_special_tokens=False)["input_ids"]
                for t in texts[start : start + config.batch_size]
            ]
            width = max(len(ids) for ids in batch)
            input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, ids in enumerate(batch):  # left padding: every row's next token is the last column
                input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
                attention_mask[row, width - len(ids) :] = 1
            sampling = {"temperature": config.temperature, "top_p": config.top_p} if config.do_sample else {}
            generated = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                max_new_tokens=config.max_new_tokens,
                do_sample=config.do_sample,
                pad_token_id=pad_id,
                **sampling,
            )
            outputs.extend(
                tokenizer.decode(row, skip_special_tokens=True) for row in generated[:, width:].tolist()
            )
    finally:
        if was_training:
            model.train()
    return outputs


def _states(answer_texts: Iterable[str], text: str, subject: str) -> bool:
    """Whether ``text`` names one of the answers outside the subject (a subject may contain its object)."""
    outside_subject = re.sub(re.escape(subject), " ", text, flags=re.IGNORECASE)
    padded = f" {normalize_answer(outside_subject)} "
    return any(f" {key} " in padded for key in map(normalize_answer, answer_texts) if key)


def filter_training_prompts(
    case: EditCase,
    candidates: Iterable[str],
    require_subject: bool = True,
    reject_answer_leak: bool = True,
) -> tuple[list[str], Counter]:
    """Candidates that may train ``case``, in order, and a count of the refused ones by reason.

    Comparison is on normalized text (:func:`normalize_answer`): a candidate that differs from an
    evaluation prompt only in case or punctuation is the same prompt.
    """
    taken = {normalize_answer(p.prompt) for p in case.probes_of(ProbeKind.TRAIN_GENERALIZATION)}
    evaluation = {normalize_answer(p.prompt) for kind in EVALUATION_KINDS for p in case.probes_of(kind)}
    anchor = normalize_answer(case.prompt)
    old = [case.target_true] if case.target_true else []
    old += list(case.metadata.get("target_true_aliases", ()))
    kept: list[str] = []
    refused: Counter = Counter()
    for candidate in candidates:
        text = candidate.strip() if isinstance(candidate, str) else ""
        key = normalize_answer(text)
        reason = None
        if not key:
            reason = EMPTY
        elif key == anchor:
            reason = ANCHOR
        elif key in evaluation:
            reason = EVALUATION
        elif key in taken:
            reason = DUPLICATE
        elif require_subject and case.subject.lower() not in text.lower():
            reason = NO_SUBJECT
        elif reject_answer_leak and _states(case.target_new, text, case.subject):
            reason = STATES_NEW
        elif reject_answer_leak and _states(old, text, case.subject):
            reason = STATES_OLD
        if reason:
            refused[reason] += 1
            continue
        taken.add(key)
        kept.append(text)
    return kept, refused


@dataclass
class PoolReport:
    """Candidates per source, what the filter refused and why, and cases left without training prompts."""

    candidates: Counter = field(default_factory=Counter)  # source name -> candidates offered
    kept: Counter = field(default_factory=Counter)  # source name -> prompts kept
    refused: Counter = field(default_factory=Counter)  # reason -> count
    refused_by_source: dict[str, Counter] = field(default_factory=dict)  # source name -> reason -> count
    cases_without_training: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "candidates": dict(self.candidates),
            "kept": dict(self.kept),
            "refused": dict(self.refused),
            "refused_by_source": {name: dict(reasons) for name, reasons in self.refused_by_source.items()},
            "cases_without_training": list(self.cases_without_training),
        }


@dataclass
class PoolResult:
    cases: list[EditCase]
    report: PoolReport


def build_training_pools(
    cases: Sequence[EditCase],
    sources: Sequence[PromptSource],
    max_per_case: int | None = None,
    require_subject: bool = True,
    reject_answer_leak: bool = True,
) -> PoolResult:
    """Cases with TRAIN_GENERALIZATION probes added from ``sources`` (in order), filtered first.

    Each kept prompt's answers are the case's ``target_new`` (new object and aliases). ``max_per_case``
    caps the training prompts a case ends with (existing ones count).
    """
    if max_per_case is not None and max_per_case < 0:
        raise ValueError(f"max_per_case must be >= 0 or None, got {max_per_case}")
    report = PoolReport()
    offered = [(getattr(source, "name", type(source).__name__), source(cases)) for source in sources]
    result: list[EditCase] = []
    for case in cases:
        current = case
        for name, by_case in offered:
            candidates = list(by_case.get(case.case_id, ()))
            report.candidates[name] += len(candidates)
            kept, refused = filter_training_prompts(current, candidates, require_subject, reject_answer_leak)
            report.refused.update(refused)
            report.refused_by_source.setdefault(name, Counter()).update(refused)
            if max_per_case is not None:
                room = max(0, max_per_case - len(current.probes_of(ProbeKind.TRAIN_GENERALIZATION)))
                kept = kept[:room]
            report.kept[name] += len(kept)
            if kept:
                new = [Probe(prompt, current.target_new, ProbeKind.TRAIN_GENERALIZATION) for prompt in kept]
                current = current.with_probes([*current.probes, *new])
        if not current.probes_of(ProbeKind.TRAIN_GENERALIZATION):
            report.cases_without_training.append(case.case_id)
        result.append(current)
    for name, _ in offered:
        logger.info(
            "training prompts from %s: kept %d of %d candidates; refused %s",
            name,
            report.kept[name],
            report.candidates[name],
            dict(report.refused_by_source.get(name, {})) or "none",
        )
    logger.info(
        "training pools: %d of %d case(s) without training prompts",
        len(report.cases_without_training),
        len(cases),
    )
    return PoolResult(cases=result, report=report)


def hold_out_locality(cases: Sequence[EditCase], share: float, seed: int = 0) -> tuple[list[EditCase], int]:
    """Move ``share`` of each case's locality probes to training (``TRAIN_LOCALITY``), for data that brings
    none: a seeded choice per case, at least one moved and one left to evaluate, so cases with fewer than
    two locality probes keep theirs. Cases that already have training locality probes are left as they are.
    Returns the cases and how many probes moved. Run it before any evaluation: it changes what is measured.
    """
    if not 0 <= share < 1:
        raise ValueError(f"the locality holdout share must be in [0, 1), got {share!r}")
    moved, result = 0, []
    for case in cases:
        locality = case.probes_of(ProbeKind.LOCALITY)
        if share == 0 or len(locality) < 2 or case.probes_of(ProbeKind.TRAIN_LOCALITY):
            result.append(case)
            continue
        count = min(len(locality) - 1, max(1, round(share * len(locality))))
        chosen = set(random.Random(f"{seed}:{case.case_id}:locality").sample(range(len(locality)), count))
        training = {id(probe) for index, probe in enumerate(locality) if index in chosen}
        probes = [
            Probe(p.prompt, p.answers, ProbeKind.TRAIN_LOCALITY, p.key) if id(p) in training else p
            for p in case.probes
        ]
        result.append(case.with_probes(probes))
        moved += count
    return result, moved


def sources_from_config(config: TrainPromptsConfig, model=None, tokenizer=None) -> list[PromptSource]:
    """The prompt sources a recipe's ``data.train_prompts`` names, in its order.

    ``model`` and ``tokenizer`` (the pre-edit model) are needed only by the ``generated`` source.
    """
    sources: list[PromptSource] = []
    for kind in config.sources:
        if kind == "fields":
            sources.append(FieldPromptSource(tuple(config.fields), missing=config.missing_fields))
        elif kind == "templates":
            sources.append(TemplatePromptSource(config.templates))
        elif kind == "generated":
            if model is None or tokenizer is None:
                raise ValueError(
                    "the 'generated' training-prompt source needs the pre-edit model and tokenizer"
                )
            sources.append(GeneratedParaphraseSource(model, tokenizer, config.paraphrases))
        else:  # TrainPromptsConfig refuses unknown kinds; this guards a new kind added there only
            raise ValueError(f"no prompt source for {kind!r}")
    return sources


def build_pools_from_config(
    cases: Sequence[EditCase], config: TrainPromptsConfig, model=None, tokenizer=None
) -> PoolResult:
    """:func:`build_training_pools` with the sources and filters of ``config``."""
    return build_training_pools(
        cases,
        sources_from_config(config, model, tokenizer),
        max_per_case=config.max_per_case,
        require_subject=config.require_subject,
        reject_answer_leak=config.reject_answer_leak,
    )


__all__ = [
    "DEFAULT_PARAPHRASE_INSTRUCTION",
    "FieldPromptSource",
    "GeneratedParaphraseSource",
    "ParaphraseGenerationConfig",
    "PoolReport",
    "PoolResult",
    "PromptSource",
    "TemplatePromptSource",
    "TrainPromptsConfig",
    "build_pools_from_config",
    "build_training_pools",
    "filter_training_prompts",
    "generate_texts",
    "hold_out_locality",
    "parse_paraphrase_lines",
    "sources_from_config",
]
