"""Early stopping once the anchor and generalization rewards saturate (``early_stop_reward``).

Once a trainer's sampled anchors and paraphrases are (nearly) always answered right, more steps bring
little to the edit and cost unrelated knowledge: every further update is a chance to move a fact nobody
asked to move. :class:`RewardSaturationStop` ends training at the first log at which the running mean, over
the last ``window`` logs that carry both figures, of the anchor reward and of the generalization reward
each reach ``threshold``.

The figures are TRL's own per-reward-function means, ``rewards/anchor_accuracy/mean`` and
``rewards/generalization_accuracy/mean``: the share of sampled anchor (generalization) completions whose
answer is accepted, over the whole gathered generation batch. ``GRPOTrainer`` logs them, and so does
``EditGRPOTrainer``, which lets TRL score before recomputing the advantages; so Edit-GRPO and vanilla GRPO
stop on the same criterion. (Edit-GRPO's ``pgaa/reward/<role>/mean`` is the weighted sum of every reward
function on a role's rows, which moves with ``boxed_format`` or ``old_object_penalty``; it is not used.)

SFT samples nothing and so has no such figure: its ``mean_token_accuracy`` is teacher-forced and mixes
anchor, generalization and locality rows, a different quantity. Stage 2 refuses the switch for
``refinement: sft`` rather than stop it on something else.

The window is read from ``state.log_history`` at each log, so a resumed run decides from the logs before
the interruption too. Logs without the figures (GRPO scores only at the steps that generate) do not count.
Every process sees the same gathered figures, so every process stops at the same step.
"""

from __future__ import annotations

import logging
import math

from transformers import TrainerCallback

logger = logging.getLogger(__name__)

ANCHOR_REWARD_KEY = "rewards/anchor_accuracy/mean"
GENERALIZATION_REWARD_KEY = "rewards/generalization_accuracy/mean"
# The reward functions whose figures the stop reads (edit_grpo_trl.stage2.rewards).
REQUIRED_REWARD_FUNCTIONS = ("anchor_accuracy", "generalization_accuracy")


def saturated_means(
    log_history: list[dict],
    window: int,
    keys: tuple[str, ...] = (ANCHOR_REWARD_KEY, GENERALIZATION_REWARD_KEY),
) -> tuple[float, ...] | None:
    """The mean of each key over the last ``window`` logs that carry every key with a finite value, or
    None while fewer than ``window`` such logs exist."""
    usable = [
        entry
        for entry in log_history
        if all(isinstance(entry.get(key), int | float) and math.isfinite(entry[key]) for key in keys)
    ]
    if len(usable) < window:
        return None
    recent = usable[-window:]
    return tuple(sum(entry[key] for entry in recent) / window for key in keys)


class RewardSaturationStop(TrainerCallback):
    """Stop training once the windowed anchor and generalization reward means both reach ``threshold``.

    ``stopped_at_step`` is the global step training stopped at (None while it has not stopped early).
    """

    def __init__(
        self,
        threshold: float,
        window: int,
        keys: tuple[str, ...] = (ANCHOR_REWARD_KEY, GENERALIZATION_REWARD_KEY),
    ) -> None:
        if not isinstance(window, int) or isinstance(window, bool) or window < 1:
            raise ValueError(f"window must be an integer >= 1, got {window!r}")
        self.threshold, self.window, self.keys = float(threshold), window, tuple(keys)
        self.stopped_at_step: int | None = None
        self.means: tuple[float, ...] | None = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        means = saturated_means(state.log_history, self.window, self.keys)
        if means is None or self.stopped_at_step is not None:
            return control
        self.means = means
        if all(mean >= self.threshold for mean in means):
            self.stopped_at_step = state.global_step
            control.should_training_stop = True
            figures = ", ".join(f"{key} {mean:.3f}" for key, mean in zip(self.keys, means, strict=True))
            logger.info(
                "early stop at step %d: over the last %d logs %s, all >= %g",
                state.global_step,
                self.window,
                figures,
                self.threshold,
            )
        return control


def attach_reward_saturation_stop(
    trainer, threshold: float | None, window: int
) -> RewardSaturationStop | None:
    """Add a :class:`RewardSaturationStop` to a GRPO trainer (none when ``threshold`` is None).

    Refuses a trainer that does not score with both accuracy rewards: its logs would never carry the
    figures, and the switch would silently never fire.
    """
    if threshold is None:
        return None
    names = list(getattr(trainer, "reward_func_names", None) or [])
    missing = [name for name in REQUIRED_REWARD_FUNCTIONS if name not in names]
    if missing:
        raise ValueError(
            f"early_stop_reward stops on the logged means of the reward functions {list(REQUIRED_REWARD_FUNCTIONS)}, "
            f"but this trainer scores with {names} (missing {missing}): add them to agt_reward_funcs, or unset "
            "early_stop_reward"
        )
    callback = RewardSaturationStop(threshold, window)
    trainer.add_callback(callback)
    return callback


def early_stop_step(trainer) -> int | None:
    """The step a trainer's :class:`RewardSaturationStop` stopped it at (None: it did not stop early)."""
    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, RewardSaturationStop):
            return callback.stopped_at_step
    return None
