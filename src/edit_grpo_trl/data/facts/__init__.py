"""Real-fact edit cases: a bank of well-known true facts (``real.yaml``), the cases drawn from it, and the
filter that keeps the facts a pre-edit model already knows (docs/facts.md).

``load_edit_cases("facts:real[:<seed>]", limit=N)`` reads the same cases as :func:`fact_cases`.
"""

from edit_grpo_trl.data.facts.bank import BankError, FactBank, FactRelation, available_banks, load_bank
from edit_grpo_trl.data.facts.cases import (
    DEFAULT_BANK,
    editable_facts,
    fact_cases,
    max_cases,
    parse_facts_spec,
)
from edit_grpo_trl.data.facts.recall import RecallReport, TemplateRecall, filter_known_cases, true_answers

__all__ = [
    "DEFAULT_BANK",
    "BankError",
    "FactBank",
    "FactRelation",
    "RecallReport",
    "TemplateRecall",
    "available_banks",
    "editable_facts",
    "fact_cases",
    "filter_known_cases",
    "load_bank",
    "max_cases",
    "parse_facts_spec",
    "true_answers",
]
