"""The old name of :mod:`edit_grpo_trl.stage2`.

Kept so that ``edit_grpo_trl.trainer`` and its modules (``edit_grpo_trl.trainer.pgaa``, ...) keep
importing, as the very same module objects, for user code and for pickles that name them (the
``training_args.bin`` of checkpoints saved before the move). It loads TRL, as it always did.
"""

import sys

from edit_grpo_trl.stage2 import (
    config,
    ghost,
    layer_features,
    locality,
    pgaa,
    rewards,
    sampler,
    scope,
    trainer,
)
from edit_grpo_trl.stage2.config import EditGRPOConfig
from edit_grpo_trl.stage2.rewards import REWARD_FUNCTIONS, resolve_reward_functions
from edit_grpo_trl.stage2.trainer import EditGRPOTrainer

for _module in (config, ghost, layer_features, locality, pgaa, rewards, sampler, scope, trainer):
    sys.modules[f"{__name__}.{_module.__name__.rsplit('.', 1)[1]}"] = _module

__all__ = ["REWARD_FUNCTIONS", "EditGRPOConfig", "EditGRPOTrainer", "resolve_reward_functions"]
