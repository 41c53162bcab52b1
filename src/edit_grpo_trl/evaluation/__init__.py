"""KnowEdit-style evaluation: teacher-forced and generation-based metrics, and reports."""

from edit_grpo_trl.evaluation.evaluate import EvalBaseline, EvalConfig, EvalResult, evaluate_cases
from edit_grpo_trl.evaluation.report import markdown_table, write_report

__all__ = ["EvalBaseline", "EvalConfig", "EvalResult", "evaluate_cases", "markdown_table", "write_report"]
