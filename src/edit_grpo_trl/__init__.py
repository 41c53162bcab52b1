"""edit-grpo-trl: refine knowledge-edited language models with Edit-GRPO on Hugging Face TRL.

The pipeline reads top to bottom: ``data`` (edit cases, the AGT dataset) and ``world`` (the synthetic
knowledge world, a test bed) -> ``editors`` (stage 1: ROME, MEMIT, FT-M, AlphaEdit) -> ``stage2``
(EditGRPOTrainer with AGT rewards and PGAA advantages, the baselines) -> ``evaluation`` (KnowEdit-style
metrics and reports).

Heavy modules (trl, transformers) load on first use, so ``import edit_grpo_trl`` stays cheap.
"""

from importlib import import_module

__version__ = "0.1.0"

_LAZY = {
    "EditGRPOTrainer": "edit_grpo_trl.stage2.trainer",
    "EditGRPOConfig": "edit_grpo_trl.stage2.config",
    "EditCase": "edit_grpo_trl.data.cases",
    "Probe": "edit_grpo_trl.data.cases",
    "ProbeKind": "edit_grpo_trl.data.cases",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edit_grpo_trl' has no attribute {name!r}")
