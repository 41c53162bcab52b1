"""The AGT dataset: edit cases -> one row per training prompt, in the columns the trainer and rewards read.

Every case becomes exactly ``1 + K + L`` consecutive rows (docs/design.md section 4):

* one ``anchor`` row: the edit prompt itself;
* ``K`` ``generalization`` rows, drawn from the case's *training* generalization probes only (evaluation
  probes never reach training). A case with fewer than ``K`` training prompts repeats them: they are
  shuffled once (seeded) and cycled, so each appears ``floor(K/n)`` or ``ceil(K/n)`` times. A case with none
  is skipped and counted (``on_missing="skip"``, the default) or is an error (``"error"``);
* ``L`` ``locality`` rows from the case's *training* locality probes (``TRAIN_LOCALITY``), chosen and
  cycled the same way. A case that has none falls back to its evaluation locality probes, counted in
  ``locality_rows_from_evaluation`` and logged: its locality score then includes probes it trained on.

The trainer packs whole cases into generation batches, so the fixed case size is part of the contract.

Beside the rows, the builder returns the *locality pool*: every case's training locality prompt (up to
``locality_pool_size``, a seeded sample) with the pre-edit answer, for the trainer's dense locality loss.
A pool prompt that is an evaluation probe or the anchor of *any* case is left out (counted): nothing the
evaluation asks is trained on, even through another case.

Columns: ``prompt`` (a string for ``prompt_style="plain"``; for ``"chat"`` TRL's conversational form
``[{"role": "user", "content": ...}]`` whose content asks for a final ``\\boxed{...}`` answer: TRL applies
the tokenizer's chat template itself), ``case_id``, ``role``, ``answers`` (the new object and its aliases;
on locality rows the pre-edit answer), ``old_answers`` (the old object and its aliases, for the
"states the old object" penalty; empty when the source has none), ``answer_style`` (``"plain"`` or
``"boxed"``).

Locality answers come from the dataset's ground truth, or (``locality_answers="model"``) from greedy
decoding of the *pre-edit* model when the dataset is built, in the same prompt style as training, read
with the same answer extraction the rewards use. A pre-edit completion with no answer in it (a chat
completion without a box) falls back to the dataset's answers for that row, logged and counted.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import datasets

from edit_grpo_trl.answers import extract_answer, normalize_answer
from edit_grpo_trl.data.agt_config import (
    DEFAULT_CHAT_INSTRUCTION,
    PROMPT_PLACEHOLDER,
    AGTDataConfig,
    PromptStyle,
)
from edit_grpo_trl.data.cases import EVALUATION_KINDS, EditCase, Probe, ProbeKind
from edit_grpo_trl.generation import greedy_generate
from edit_grpo_trl.roles import ANCHOR, GENERALIZATION, LOCALITY, ROLES

logger = logging.getLogger(__name__)


def chat_messages(prompt: str, instruction: str = DEFAULT_CHAT_INSTRUCTION) -> list[dict[str, str]]:
    """TRL's conversational prompt: one user message asking for the answer in ``\\boxed{}``."""
    return [{"role": "user", "content": instruction.replace(PROMPT_PLACEHOLDER, prompt)}]


def render_chat_prompt(
    tokenizer, messages: Sequence[Mapping[str, str]], chat_template_kwargs: Mapping[str, Any] | None = None
) -> str:
    """The text a chat model sees for ``messages``, with the assistant turn opened (no tokenization)."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            "prompt_style='chat' needs a tokenizer with a chat template (tokenizer.chat_template is empty); "
            "use prompt_style='plain' for a base model"
        )
    return tokenizer.apply_chat_template(
        list(messages), tokenize=False, add_generation_prompt=True, **dict(chat_template_kwargs or {})
    )


def render_prompts(tokenizer, prompts: Sequence[str], config: AGTDataConfig) -> list[str]:
    """The texts the model sees for case prompts in ``config``'s style: as they are, or chat-rendered."""
    if config.prompt_style != "chat":
        return list(prompts)
    return [
        render_chat_prompt(tokenizer, chat_messages(p, config.chat_instruction), config.chat_template_kwargs)
        for p in prompts
    ]


def greedy_answers(
    model, tokenizer, prompts: Sequence[str], config: AGTDataConfig, max_new_tokens: int, batch_size: int = 64
) -> list[str | None]:
    """The answer greedy decoding gives to each case prompt, asked and read as ``config`` says (None: a
    boxed answer was asked for and the completion has no box, or the answer is empty)."""
    completions = greedy_generate(
        model,
        tokenizer,
        render_prompts(tokenizer, prompts, config),
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        # A plain answer ends at the sentence end; a boxed one is read from its box, wherever it ends.
        stop_at_sentence_end=config.answer_style == "plain",
        show_progress=len(prompts) > batch_size,
    )
    return [extract_answer(completion, config.answer_style) or None for completion in completions]


def _pick(probes: Sequence[Probe], count: int, rng: random.Random) -> list[Probe]:
    """``count`` probes: a seeded shuffle, cycled when there are fewer probes than ``count``."""
    if count == 0:
        return []
    order = rng.sample(list(probes), len(probes))
    return [order[i % len(order)] for i in range(count)]


def _old_answers(case: EditCase) -> list[str]:
    answers = [case.target_true] if case.target_true else []
    for alias in case.metadata.get("target_true_aliases", ()):
        if alias not in answers:
            answers.append(alias)
    return answers


@dataclass
class AGTBuildReport:
    """What building the dataset did beyond the obvious: skipped cases, repeated prompts, fallbacks."""

    cases_in: int = 0
    cases_built: int = 0
    rows_per_case: int = 0
    skipped: dict[str, str] = field(default_factory=dict)  # case id -> reason
    cases_cycling_generalization: int = 0  # fewer training prompts than K: some repeat
    cases_cycling_locality: int = 0
    locality_fallbacks: int = 0  # pre-edit completion gave no answer: dataset answers used
    # Cases without TRAIN_LOCALITY probes: their evaluation locality probes were trained on.
    locality_rows_from_evaluation: int = 0
    locality_pool: int = 0  # prompts in the locality pool
    locality_pool_dropped: int = 0  # training locality prompts another case evaluates (or edits)


@dataclass
class AGTRecords:
    rows: list[dict[str, Any]]
    report: AGTBuildReport
    locality_pool: list[dict[str, Any]] = field(default_factory=list)  # {"prompt", "answers", "answer_style"}


def build_agt_records(
    cases: Sequence[EditCase], config: AGTDataConfig, tokenizer=None, model=None
) -> AGTRecords:
    """The AGT rows as plain dicts, with a report (see :func:`build_agt_dataset`)."""
    seen: set[str] = set()
    for case in cases:
        if case.case_id in seen:
            raise ValueError(f"case id {case.case_id!r} appears twice; AGT rows are grouped by case id")
        seen.add(case.case_id)

    report = AGTBuildReport(cases_in=len(cases), rows_per_case=config.rows_per_case)
    plan: list[tuple[EditCase, list[Probe], list[Probe]]] = []
    for case in cases:
        training = case.probes_of(ProbeKind.TRAIN_GENERALIZATION)
        locality = case.probes_of(ProbeKind.TRAIN_LOCALITY)
        if config.num_locality and not locality:
            locality = case.probes_of(ProbeKind.LOCALITY)
            report.locality_rows_from_evaluation += bool(locality)
        missing = None
        if config.num_generalization and not training:
            missing = "no training generalization prompts (build a training pool first)"
        elif config.num_locality and not locality:
            missing = "no locality probes"
        if missing:
            if config.on_missing == "error":
                raise ValueError(
                    f"edit case {case.case_id!r} has {missing}; every case needs them for "
                    f"num_generalization={config.num_generalization}, num_locality={config.num_locality} "
                    "(or set on_missing='skip')"
                )
            report.skipped[case.case_id] = missing
            continue
        rng = random.Random(f"{config.seed}:{case.case_id}")
        report.cases_cycling_generalization += 0 < len(training) < config.num_generalization
        report.cases_cycling_locality += 0 < len(locality) < config.num_locality
        plan.append(
            (case, _pick(training, config.num_generalization, rng), _pick(locality, config.num_locality, rng))
        )

    if report.skipped:
        logger.warning(
            "AGT dataset: skipped %d of %d case(s); first: %s",
            len(report.skipped),
            len(cases),
            next(iter(report.skipped.items())),
        )
    if report.locality_rows_from_evaluation:
        logger.warning(
            "AGT dataset: %d case(s) have no training locality probes; their locality rows use evaluation "
            "locality probes, which their locality score then includes (data.locality_holdout_share keeps "
            "a share of them for training only)",
            report.locality_rows_from_evaluation,
        )
    pool = _locality_pool_prompts(cases, config, report)
    asked = [probe.prompt for _, _, locality in plan for probe in locality] + [p.prompt for p in pool]
    locality_answers = _locality_answers(asked, config, tokenizer, model)

    rows: list[dict[str, Any]] = []
    style = config.answer_style
    for case, generalization, locality in plan:
        old = _old_answers(case)
        new = list(case.target_new)
        rows.append(_row(config, case.prompt, case.case_id, ANCHOR, new, old, style))
        for probe in generalization:
            rows.append(_row(config, probe.prompt, case.case_id, GENERALIZATION, new, old, style))
        for probe in locality:
            model_answer = locality_answers.get(probe.prompt)
            if config.locality_answers == "model" and model_answer is None:
                report.locality_fallbacks += 1
            answers = [model_answer] if model_answer is not None else list(probe.answers)
            rows.append(_row(config, probe.prompt, case.case_id, LOCALITY, answers, old, style))
    report.cases_built = len(plan)
    pool_rows = []
    for probe in pool:
        answer = locality_answers.get(probe.prompt)
        answers = [answer] if answer is not None else list(probe.answers)
        pool_rows.append(_row(config, probe.prompt, "", LOCALITY, answers, [], style))
    if report.cases_cycling_generalization:
        logger.info(
            "AGT dataset: %d case(s) have fewer than %d training prompts; their prompts repeat",
            report.cases_cycling_generalization,
            config.num_generalization,
        )
    pool_rows = [{key: row[key] for key in ("prompt", "answers", "answer_style")} for row in pool_rows]
    return AGTRecords(rows=rows, report=report, locality_pool=pool_rows)


def _locality_pool_prompts(
    cases: Sequence[EditCase], config: AGTDataConfig, report: AGTBuildReport
) -> list[Probe]:
    """Every case's training locality probes that no case evaluates or edits, one per prompt, a seeded
    sample of at most ``locality_pool_size``."""
    if not config.locality_pool_size:
        return []
    asked = {normalize_answer(case.prompt) for case in cases}
    asked |= {
        normalize_answer(p.prompt)
        for case in cases
        for kind in EVALUATION_KINDS
        for p in case.probes_of(kind)
    }
    pool: dict[str, Probe] = {}
    for case in cases:
        for probe in case.probes_of(ProbeKind.TRAIN_LOCALITY):
            key = normalize_answer(probe.prompt)
            if key in asked:
                report.locality_pool_dropped += 1
            else:
                pool.setdefault(key, probe)
    chosen = list(pool.values())
    if len(chosen) > config.locality_pool_size:
        chosen = random.Random(f"{config.seed}:locality-pool").sample(chosen, config.locality_pool_size)
    report.locality_pool = len(chosen)
    return chosen


def _row(config: AGTDataConfig, prompt: str, case_id: str, role: str, answers, old, style) -> dict[str, Any]:
    shown = chat_messages(prompt, config.chat_instruction) if config.prompt_style == "chat" else prompt
    return {
        "prompt": shown,
        "case_id": case_id,
        "role": role,
        "answers": list(answers),
        "old_answers": list(old),
        "answer_style": style,
        "answer_match": config.answer_match,
    }


def _locality_answers(
    prompts: Sequence[str], config: AGTDataConfig, tokenizer, model
) -> dict[str, str | None]:
    """The pre-edit model's answer per distinct locality prompt (None: no answer in its completion).

    Empty for ``locality_answers="dataset"``: every locality row then keeps its probe's answers.
    """
    prompts = list(dict.fromkeys(prompts))
    if config.locality_answers == "dataset" or not prompts:
        return {}
    if model is None or tokenizer is None:
        raise ValueError(
            "locality_answers='model' records the PRE-EDIT model's greedy answers: pass model= and tokenizer= "
            "(the unedited model), or set locality_answers='dataset'"
        )
    found = greedy_answers(
        model, tokenizer, prompts, config, config.max_new_tokens, config.locality_batch_size
    )
    answers = dict(zip(prompts, found, strict=True))
    missing = sum(answer is None for answer in answers.values())
    if missing:
        logger.warning(
            "AGT dataset: the pre-edit model gave no %s answer for %d of %d locality prompt(s); "
            "those rows keep the dataset's answers",
            config.answer_style,
            missing,
            len(prompts),
        )
    return answers


def agt_features(prompt_style: PromptStyle) -> datasets.Features:
    """The dataset's column types (explicit, so empty answer lists keep their string type)."""
    text = datasets.Value("string")
    prompt = (
        datasets.List({"role": text, "content": text}) if prompt_style == "chat" else datasets.Value("string")
    )
    return datasets.Features(
        {
            "prompt": prompt,
            "case_id": text,
            "role": text,
            "answers": datasets.List(text),
            "old_answers": datasets.List(text),
            "answer_style": text,
            "answer_match": text,
        }
    )


def build_agt_dataset(
    cases: Sequence[EditCase], config: AGTDataConfig, tokenizer=None, model=None
) -> datasets.Dataset:
    """One row per AGT prompt, ``config.rows_per_case`` consecutive rows per case (module docstring).

    With ``config.locality_answers == "model"``, ``model`` and ``tokenizer`` must be the PRE-EDIT model:
    locality rows reward keeping the answer the model gave before any edit.
    """
    records = build_agt_records(cases, config, tokenizer=tokenizer, model=model)
    report = records.report
    logger.info(
        "AGT dataset: %d case(s) x %d rows = %d rows (%s prompts, locality answers from the %s)",
        report.cases_built,
        report.rows_per_case,
        len(records.rows),
        config.prompt_style,
        config.locality_answers,
    )
    return datasets.Dataset.from_list(records.rows, features=agt_features(config.prompt_style))


__all__ = [
    "ANCHOR",
    "DEFAULT_CHAT_INSTRUCTION",
    "GENERALIZATION",
    "LOCALITY",
    "ROLES",
    "AGTBuildReport",
    "AGTDataConfig",
    "AGTRecords",
    "agt_features",
    "build_agt_dataset",
    "build_agt_records",
    "chat_messages",
    "greedy_answers",
    "render_chat_prompt",
    "render_prompts",
]
