"""Stage 2: EditGRPOTrainer (TRL GRPOTrainer + AGT rewards + PGAA advantages) and its pure math.

The names below load on first use, so importing one of the pure modules (``pgaa``, ``ghost``, ``sampler``)
does not import TRL.
"""

from importlib import import_module

_LAZY = {
    "EditGRPOConfig": "edit_grpo_trl.stage2.config",
    "EditGRPOTrainer": "edit_grpo_trl.stage2.trainer",
    "REWARD_FUNCTIONS": "edit_grpo_trl.stage2.rewards",
    "resolve_reward_functions": "edit_grpo_trl.stage2.rewards",
}

__all__ = ["REWARD_FUNCTIONS", "EditGRPOConfig", "EditGRPOTrainer", "resolve_reward_functions"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edit_grpo_trl.stage2' has no attribute {name!r}")
