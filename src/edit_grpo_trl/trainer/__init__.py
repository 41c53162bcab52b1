"""Stage 2: EditGRPOTrainer (TRL GRPOTrainer + AGT rewards + PGAA advantages) and its pure math."""

from edit_grpo_trl.trainer.config import EditGRPOConfig
from edit_grpo_trl.trainer.rewards import REWARD_FUNCTIONS, resolve_reward_functions
from edit_grpo_trl.trainer.trainer import EditGRPOTrainer

__all__ = ["REWARD_FUNCTIONS", "EditGRPOConfig", "EditGRPOTrainer", "resolve_reward_functions"]
