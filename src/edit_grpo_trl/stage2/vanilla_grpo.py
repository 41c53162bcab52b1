"""The vanilla-GRPO baseline: TRL's own ``GRPOTrainer``, with the stage-2 switches that any GRPO trainer can
take, so that Edit-GRPO is compared with it under the same ones: the dense locality loss
(:mod:`~edit_grpo_trl.stage2.locality`) and target injection (:mod:`~edit_grpo_trl.stage2.target_injection`).
Its advantages, groups and loss are TRL's."""

from __future__ import annotations

from trl import GRPOTrainer

from edit_grpo_trl.stage2.locality import LocalityLossMixin
from edit_grpo_trl.stage2.target_injection import TargetInjectionMixin


class VanillaGRPOTrainer(TargetInjectionMixin, LocalityLossMixin, GRPOTrainer):
    """TRL's GRPOTrainer with the locality loss and target injection of Edit-GRPO (both off by default)."""
