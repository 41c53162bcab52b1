"""Which facts a model knows before the edit: keep only those, and report recall per relation and template.

Editing a fact the model never knew measures nothing (there is no old answer to overwrite, and the
held-out templates cannot show spread). :func:`filter_known_cases` asks the pre-edit model every case's
anchor and held-out prompts with greedy decoding (:func:`edit_grpo_trl.generation.greedy_generate`, which
stops at a sentence end) and scores the completion with :func:`edit_grpo_trl.answers.contains_match`
against every true answer (``target_true`` and ``metadata["target_true_aliases"]``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from edit_grpo_trl.answers import contains_match
from edit_grpo_trl.data.agt_config import AGTDataConfig
from edit_grpo_trl.data.cases import EditCase, ProbeKind
from edit_grpo_trl.generation import greedy_generate

Generate = Callable[[Sequence[str]], list[str]]
ANCHOR_SLOT = "anchor"


@dataclass
class TemplateRecall:
    """How often one template of one relation was answered with the true object."""

    relation: str
    slot: str  # "anchor" or "heldout[i]"
    template: str
    correct: int = 0
    total: int = 0

    @property
    def recall(self) -> float:
        return self.correct / self.total if self.total else 0.0


@dataclass
class RelationRecall:
    cases: int = 0
    kept: int = 0


@dataclass
class RecallReport:
    """Per relation: cases and kept cases; per (relation, template): correct answers out of asked."""

    cases: int = 0
    kept: int = 0
    heldout_share: float = 1.0
    relations: dict[str, RelationRecall] = field(default_factory=dict)
    templates: dict[tuple[str, str], TemplateRecall] = field(default_factory=dict)
    completions: dict[str, dict[str, str]] = field(default_factory=dict)  # case id -> slot -> completion

    def to_dict(self) -> dict:
        return {
            "cases": self.cases,
            "kept": self.kept,
            "heldout_share": self.heldout_share,
            "relations": {name: asdict(counts) for name, counts in self.relations.items()},
            "templates": [asdict(t) | {"recall": round(t.recall, 4)} for t in self.templates.values()],
        }

    def merge(self, other: RecallReport) -> None:
        """Add the counts of ``other`` (a report on further cases, at the same held-out share)."""
        self.cases += other.cases
        self.kept += other.kept
        for name, counts in other.relations.items():
            mine = self.relations.setdefault(name, RelationRecall())
            mine.cases += counts.cases
            mine.kept += counts.kept
        for key, item in other.templates.items():
            mine = self.templates.setdefault(key, TemplateRecall(item.relation, item.slot, item.template))
            mine.correct += item.correct
            mine.total += item.total
        self.completions.update(other.completions)

    def format(self) -> str:
        """A plain-text table: kept cases per relation, then recall per template."""
        lines = [
            f"kept {self.kept} of {self.cases} cases (anchor and {self.heldout_share:.0%} of held-out right)"
        ]
        width = max([len(name) for name in self.relations] + [8])
        lines.append(f"{'relation':<{width}}  kept / cases")
        for name, counts in self.relations.items():
            lines.append(f"{name:<{width}}  {counts.kept:>4} / {counts.cases}")
        lines.append("")
        lines.append(f"{'relation':<{width}}  {'slot':<10}  recall  template")
        for item in self.templates.values():
            template = item.template.replace("\n", "\\n")
            lines.append(
                f"{item.relation:<{width}}  {item.slot:<10}  {item.correct:>3}/{item.total:<3} {template}"
            )
        return "\n".join(lines)


def true_answers(case: EditCase) -> list[str]:
    """Every answer the unedited model may give: ``target_true`` and its listed aliases."""
    if not case.target_true:
        raise ValueError(
            f"edit case {case.case_id!r} has no target_true: its pre-edit recall cannot be checked"
        )
    answers = [case.target_true]
    answers += [a for a in case.metadata.get("target_true_aliases", ()) if a not in answers]
    return answers


def _slots(case: EditCase) -> list[tuple[str, str, str]]:
    """(slot, template, prompt) for the anchor and every held-out prompt of a case."""
    templates = case.metadata.get("templates", {})
    heldout_templates = list(templates.get("heldout", ()))
    heldout = case.probes_of(ProbeKind.EVAL_GENERALIZATION)
    slots = [(ANCHOR_SLOT, templates.get("anchor", case.prompt.replace(case.subject, "{s}")), case.prompt)]
    for index, probe in enumerate(heldout):
        # Cases from other sources carry no templates: the prompt with the subject blanked stands in.
        template = heldout_templates[index] if index < len(heldout_templates) else None
        slots.append(
            (f"heldout[{index}]", template or probe.prompt.replace(case.subject, "{s}"), probe.prompt)
        )
    return slots


def filter_known_cases(
    model,
    tokenizer,
    cases: Sequence[EditCase],
    *,
    heldout_share: float = 1.0,
    max_new_tokens: int = 16,
    batch_size: int = 64,
    generate: Generate | None = None,
    data: AGTDataConfig | None = None,
) -> tuple[list[EditCase], RecallReport]:
    """The cases whose fact the model already states, and the recall report.

    A case is kept when the anchor's greedy completion contains a true answer and so do at least
    ``ceil(heldout_share * n)`` of its ``n`` held-out prompts (all of them by default). ``generate`` replaces
    greedy decoding with another prompts -> completions function (``model``/``tokenizer`` are then unused).
    With ``data`` the prompts are asked in its style (a chat prompt, the answer read from its box or first
    sentence, an empty one when there is none); without, as the plain completions they are.
    """
    if not 0.0 <= heldout_share <= 1.0:
        raise ValueError(f"heldout_share must be between 0 and 1, got {heldout_share!r}")
    if generate is None and data is not None:

        def generate(prompts: Sequence[str]) -> list[str]:
            from edit_grpo_trl.data.agt import greedy_answers  # imports datasets: only on this path

            found = greedy_answers(model, tokenizer, prompts, data, max_new_tokens, batch_size)
            return [answer or "" for answer in found]

    elif generate is None:

        def generate(prompts: Sequence[str]) -> list[str]:
            return greedy_generate(
                model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size
            )

    slots = [(case, _slots(case), true_answers(case)) for case in cases]
    prompts = [prompt for _, case_slots, _ in slots for _, _, prompt in case_slots]
    completions = list(generate(prompts)) if prompts else []
    if len(completions) != len(prompts):
        raise ValueError(f"generate returned {len(completions)} completions for {len(prompts)} prompts")

    report = RecallReport(cases=len(cases), heldout_share=heldout_share)
    kept: list[EditCase] = []
    position = 0
    for case, case_slots, answers in slots:
        relation = case.relation or "(none)"
        report.relations.setdefault(relation, RelationRecall()).cases += 1
        right: dict[str, bool] = {}
        report.completions[case.case_id] = {}
        for slot, template, _ in case_slots:
            completion = completions[position]
            position += 1
            right[slot] = contains_match(completion, answers)
            report.completions[case.case_id][slot] = completion
            entry = report.templates.setdefault((relation, slot), TemplateRecall(relation, slot, template))
            entry.total += 1
            entry.correct += right[slot]
        heldout_right = sum(ok for slot, ok in right.items() if slot != ANCHOR_SLOT)
        needed = math.ceil(heldout_share * (len(right) - 1) - 1e-9)  # 0.7 * 10 is 7.000000000000001
        if right[ANCHOR_SLOT] and heldout_right >= needed:
            kept.append(case)
            report.relations[relation].kept += 1
    report.kept = len(kept)
    return kept, report
