"""KnowEdit-style evaluation: teacher-forced and generation-based metrics, and reports.

The names below load on first use, so the settings (:mod:`edit_grpo_trl.evaluation.config`, a recipe's
``evaluation`` section) import without torch.
"""

from importlib import import_module

_LAZY = {
    "EvalBaseline": "edit_grpo_trl.evaluation.evaluate",
    "EvalConfig": "edit_grpo_trl.evaluation.config",
    "EvalResult": "edit_grpo_trl.evaluation.evaluate",
    "evaluate_cases": "edit_grpo_trl.evaluation.evaluate",
    "markdown_table": "edit_grpo_trl.evaluation.report",
    "write_report": "edit_grpo_trl.evaluation.report",
}

__all__ = ["EvalBaseline", "EvalConfig", "EvalResult", "evaluate_cases", "markdown_table", "write_report"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edit_grpo_trl.evaluation' has no attribute {name!r}")
