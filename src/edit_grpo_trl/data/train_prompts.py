"""Where the AGT training prompts come from: the ``data.train_prompts`` recipe section.

Real edit data (KnowEdit, CounterFact, QAEdit, ...) holds an edit prompt and *evaluation* probes, and
evaluation probes must never be trained on. The training paraphrases AGT needs are built in the
``agt_data`` stage from the sources named here, in order, each filtered by
:func:`edit_grpo_trl.data.pools.filter_training_prompts` (no evaluation probe, no anchor, subject
present, answer not stated):

* ``fields``: prompts a record already holds in the named fields (CounterFact's ``paraphrase_prompts``,
  anything a user's file carries), kept by the loaders in ``metadata["record_extra"]``;
* ``templates``: templates with a ``{subject}`` slot (one list, or a mapping ``relation -> list`` where
  the data names relations) or a ``{prompt}`` slot, filled with the anchor (question frames such as
  ``"Question: {prompt}\\nAnswer:"``, which work for any data);
* ``generated``: paraphrases of the anchor written by the *pre-edit* model through its chat template.

This module holds only the settings (no torch import), so reading a recipe stays fast; the sources
themselves live in :mod:`edit_grpo_trl.data.pools`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

SUBJECT_SLOT = "{subject}"
PROMPT_SLOT = "{prompt}"
SOURCE_KINDS = ("fields", "templates", "generated")

DEFAULT_PARAPHRASE_INSTRUCTION = (
    "Rewrite the following text in {n} different ways. Keep its meaning, keep the name "
    '"{subject}" exactly as written, keep it unfinished in the same place if it is an unfinished '
    "statement, and do not add the answer. Write one rewrite per line and nothing else.\n\n{prompt}"
)


@dataclass
class ParaphraseGenerationConfig:
    """How the ``generated`` source asks the model. ``do_sample=False`` decodes greedily."""

    num_paraphrases: int = 5
    instruction: str = DEFAULT_PARAPHRASE_INSTRUCTION  # slots: {prompt}, {subject}, {n}
    do_sample: bool = False
    temperature: float = 0.8
    top_p: float = 0.95
    max_new_tokens: int = 256
    batch_size: int = 8
    seed: int = 0
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.num_paraphrases < 1:
            raise ValueError(f"num_paraphrases must be >= 1, got {self.num_paraphrases}")
        if "{prompt}" not in self.instruction:
            raise ValueError("the paraphrase instruction must contain a {prompt} slot")
        if self.batch_size < 1 or self.max_new_tokens < 1:
            raise ValueError("batch_size and max_new_tokens must be >= 1")
        if not self.temperature > 0 or not 0 < self.top_p <= 1:
            raise ValueError(
                f"temperature must be > 0 and top_p in (0, 1], got {self.temperature}, {self.top_p}"
            )


def check_template(template: Any) -> None:
    """A template is a string with a ``{subject}`` or ``{prompt}`` slot."""
    if not isinstance(template, str):
        raise TypeError(f"a template must be a string, got {type(template).__name__} ({template!r:.60})")
    if SUBJECT_SLOT not in template and PROMPT_SLOT not in template:
        raise ValueError(f"template {template!r} has neither a {SUBJECT_SLOT} nor a {PROMPT_SLOT} slot")


@dataclass
class TrainPromptsConfig:
    """The training pool: which sources build it, and how much of it a case keeps.

    An empty ``sources`` list builds no pool: the cases must bring their own training prompts (the
    knowledge world does).
    """

    sources: list[str] = field(default_factory=list)  # any of "fields", "templates", "generated", in order
    fields: list[str] = field(default_factory=list)  # record fields that hold extra prompts
    missing_fields: str = "skip"  # a record without any of `fields`: skip (no prompts from it) | error
    templates: list[str] | dict[str, list[str]] = field(default_factory=list)
    paraphrases: ParaphraseGenerationConfig = field(default_factory=ParaphraseGenerationConfig)
    max_per_case: int | None = 8  # training prompts a case keeps at most (None: all)
    require_subject: bool = True  # refuse prompts that do not name the subject
    reject_answer_leak: bool = True  # refuse prompts that state the new or the old object

    def __post_init__(self) -> None:
        if isinstance(self.paraphrases, Mapping):
            self.paraphrases = ParaphraseGenerationConfig(**self.paraphrases)
        if isinstance(self.sources, str):
            self.sources = [self.sources]
        for source in self.sources:
            if source not in SOURCE_KINDS:
                raise ValueError(
                    f"unknown training-prompt source {source!r}; sources are {', '.join(SOURCE_KINDS)}"
                )
        if len(set(self.sources)) != len(self.sources):
            raise ValueError(f"a training-prompt source is listed twice: {self.sources}")
        if "fields" in self.sources and not self.fields:
            raise ValueError("the 'fields' source needs train_prompts.fields: the record fields to read")
        if "templates" in self.sources and not self.templates:
            raise ValueError("the 'templates' source needs train_prompts.templates")
        if self.missing_fields not in ("skip", "error"):
            raise ValueError(f"missing_fields must be 'skip' or 'error', got {self.missing_fields!r}")
        lists = self.templates.values() if isinstance(self.templates, Mapping) else [self.templates]
        for templates in lists:
            if isinstance(templates, str) or not isinstance(templates, list):
                raise TypeError(
                    f"templates must be a list of strings (or relation -> list), got {templates!r}"
                )
            for template in templates:
                check_template(template)
        if self.max_per_case is not None and self.max_per_case < 1:
            raise ValueError(f"max_per_case must be >= 1 or null, got {self.max_per_case}")

    @property
    def enabled(self) -> bool:
        return bool(self.sources)

    @property
    def needs_model(self) -> bool:
        return "generated" in self.sources


__all__ = [
    "DEFAULT_PARAPHRASE_INSTRUCTION",
    "PROMPT_SLOT",
    "SOURCE_KINDS",
    "SUBJECT_SLOT",
    "ParaphraseGenerationConfig",
    "TrainPromptsConfig",
    "check_template",
]
