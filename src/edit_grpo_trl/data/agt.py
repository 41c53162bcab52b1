"""The AGT dataset: edit cases -> one row per training prompt, in the columns the trainer and rewards read.

Every case becomes exactly ``1 + K + L`` consecutive rows (DESIGN section 3):

* one ``anchor`` row: the edit prompt itself;
* ``K`` ``generalization`` rows, drawn from the case's *training* generalization probes only (evaluation
  probes never reach training). A case with fewer than ``K`` training prompts repeats them: they are
  shuffled once (seeded) and cycled, so each appears ``floor(K/n)`` or ``ceil(K/n)`` times. A case with none
  is an error, or is skipped and counted (``on_missing="skip"``);
* ``L`` ``locality`` rows from the case's *training* locality probes (``TRAIN_LOCALITY``), chosen and
  cycled the same way. A case that has none falls back to its evaluation locality probes, counted in
  ``locality_rows_from_evaluation`` and logged: its locality score then includes probes it trained on.

The trainer packs whole cases into generation batches, so the fixed case size is part of the contract.

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
from typing import Any, Literal

import datasets

from edit_grpo_trl.answers import extract_answer
from edit_grpo_trl.data.cases import EditCase, Probe, ProbeKind
from edit_grpo_trl.generation import greedy_generate

logger = logging.getLogger(__name__)

ANCHOR = "anchor"
GENERALIZATION = "generalization"
LOCALITY = "locality"
ROLES = (ANCHOR, GENERALIZATION, LOCALITY)

PROMPT_PLACEHOLDER = "{prompt}"
DEFAULT_CHAT_INSTRUCTION = (
    "Complete the statement or answer the question.\n\n{prompt}\n\n"
    r"Give only the answer, as your final answer inside \boxed{}."
)

PromptStyle = Literal["plain", "chat"]


@dataclass
class AGTDataConfig:
    """How cases become AGT rows. ``rows_per_case`` = 1 + ``num_generalization`` + ``num_locality``."""

    num_generalization: int = 4
    num_locality: int = 1
    prompt_style: PromptStyle = "plain"
    locality_answers: Literal["model", "dataset"] = "model"
    # How rewards match answers: "exact" (normalized) or "contains" (whole words, for freely phrased answers).
    answer_match: Literal["exact", "contains"] = "exact"
    seed: int = 0
    # A case without training prompts (or without locality probes while num_locality > 0).
    on_missing: Literal["error", "skip"] = "error"
    # Chat style: the user message; "{prompt}" is replaced by the case's prompt.
    chat_instruction: str = DEFAULT_CHAT_INSTRUCTION
    # Passed to apply_chat_template when decoding locality answers; give TRL the same ones
    # (GRPOConfig.chat_template_kwargs), so the pre-edit answers come from the prompts training shows.
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)
    # Greedy decoding of pre-edit locality answers (None: 50 tokens for plain prompts, 256 for chat).
    locality_max_new_tokens: int | None = None
    locality_batch_size: int = 64

    def __post_init__(self) -> None:
        if self.num_generalization < 0:
            raise ValueError(f"num_generalization must be >= 0, got {self.num_generalization}")
        if self.num_locality < 0:
            raise ValueError(f"num_locality must be >= 0, got {self.num_locality}")
        if self.prompt_style not in ("plain", "chat"):
            raise ValueError(f"prompt_style must be 'plain' or 'chat', got {self.prompt_style!r}")
        if self.locality_answers not in ("model", "dataset"):
            raise ValueError(f"locality_answers must be 'model' or 'dataset', got {self.locality_answers!r}")
        if self.answer_match not in ("exact", "contains"):
            raise ValueError(f"answer_match must be 'exact' or 'contains', got {self.answer_match!r}")
        if self.on_missing not in ("error", "skip"):
            raise ValueError(f"on_missing must be 'error' or 'skip', got {self.on_missing!r}")
        if PROMPT_PLACEHOLDER not in self.chat_instruction:
            raise ValueError(
                f"chat_instruction must contain {PROMPT_PLACEHOLDER!r}: {self.chat_instruction!r}"
            )
        if self.locality_max_new_tokens is not None and self.locality_max_new_tokens < 1:
            raise ValueError(f"locality_max_new_tokens must be >= 1, got {self.locality_max_new_tokens}")

    @property
    def rows_per_case(self) -> int:
        return 1 + self.num_generalization + self.num_locality

    @property
    def answer_style(self) -> str:
        return "boxed" if self.prompt_style == "chat" else "plain"

    @property
    def max_new_tokens(self) -> int:
        if self.locality_max_new_tokens is not None:
            return self.locality_max_new_tokens
        return 256 if self.prompt_style == "chat" else 50


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
    locality_rows_from_evaluation: int = (
        0  # cases without TRAIN_LOCALITY probes: evaluation probes trained on
    )


@dataclass
class AGTRecords:
    rows: list[dict[str, Any]]
    report: AGTBuildReport


def build_agt_records(
    cases: Sequence[EditCase], config: AGTDataConfig, tokenizer=None, model=None
) -> AGTRecords:
    """The AGT rows as plain dicts, with a report (see :func:`build_agt_dataset`)."""
    if config.locality_answers == "model" and config.num_locality and (model is None or tokenizer is None):
        raise ValueError(
            "locality_answers='model' records the PRE-EDIT model's greedy answers: pass model= and tokenizer= "
            "(the unedited model), or set locality_answers='dataset'"
        )
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
    locality_answers = _locality_answers(plan, config, tokenizer, model, report)

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
    if report.cases_cycling_generalization:
        logger.info(
            "AGT dataset: %d case(s) have fewer than %d training prompts; their prompts repeat",
            report.cases_cycling_generalization,
            config.num_generalization,
        )
    return AGTRecords(rows=rows, report=report)


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
    plan: Sequence[tuple[EditCase, list[Probe], list[Probe]]],
    config: AGTDataConfig,
    tokenizer,
    model,
    report: AGTBuildReport,
) -> dict[str, str | None]:
    """The pre-edit model's answer per distinct locality prompt (None: no answer in its completion).

    Empty for ``locality_answers="dataset"``: every locality row then keeps its probe's answers.
    """
    prompts = list(dict.fromkeys(probe.prompt for _, _, locality in plan for probe in locality))
    if config.locality_answers == "dataset" or not prompts:
        return {}
    if config.prompt_style == "chat":
        texts = [
            render_chat_prompt(
                tokenizer, chat_messages(p, config.chat_instruction), config.chat_template_kwargs
            )
            for p in prompts
        ]
    else:
        texts = prompts
    completions = greedy_generate(
        model,
        tokenizer,
        texts,
        max_new_tokens=config.max_new_tokens,
        batch_size=config.locality_batch_size,
        # Plain answers end at the sentence end; a chat answer is read from its box, wherever it ends.
        stop_at_sentence_end=config.prompt_style == "plain",
        show_progress=len(texts) > config.locality_batch_size,
    )
    answers = {
        prompt: extract_answer(completion, config.answer_style) or None
        for prompt, completion in zip(prompts, completions, strict=True)
    }
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
    "render_chat_prompt",
]
