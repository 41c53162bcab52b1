"""`EditGRPOConfig`: TRL's `GRPOConfig` plus the fields of AGT and PGAA."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from trl import GRPOConfig

from edit_grpo_trl.stage2.rewards import DEFAULT_REWARD_FUNCTIONS, resolve_reward_functions

ANCHOR_DIRECTIONS = ("target", "anchor_samples")
ALIGNMENT_MODES = ("cosine", "constant")
TRAIN_SCOPES = ("all", "edited_layers", "edited_modules")

# (field, smallest allowed value, whether None is allowed): the sizes and rates GRPO divides or samples by.
_RANGES = (
    ("num_generations", 2, True),  # a group of one has no spread to normalize by
    ("per_device_train_batch_size", 1, False),
    ("gradient_accumulation_steps", 1, False),
    ("steps_per_generation", 1, True),
    ("generation_batch_size", 1, True),
    ("max_completion_length", 1, True),
    ("max_prompt_length", 1, True),
    ("num_iterations", 1, False),
    ("learning_rate", 0.0, False),
    ("beta", 0.0, False),
    ("temperature", 1e-6, False),
    ("logging_steps", 0.0, False),
    ("save_steps", 0.0, False),
    ("locality_coef", 0.0, False),
    ("locality_batch_size", 1, False),
    ("split_check_batches", 0, False),
    ("num_train_epochs", 0.0, False),
    ("early_stop_window", 1, False),
    ("target_injection_gamma", 0.0, False),
)


@dataclass
class EditGRPOConfig(GRPOConfig):
    r"""Configuration of [`EditGRPOTrainer`]: every `GRPOConfig` field, plus the ones below.

    Parameters:
        alignment_coef (`float`, defaults to `0.2`):
            Weight lambda of the alignment term added to generalization samples' advantages,
            `A_i += lambda * cos(g_i, g_c)`. `0` turns the term (and its extra forward/backward) off.
        alignment_layer (`int` or `None`):
            Decoder layer whose module defines the gradients g_i and g_c: the layer the stage-1 editor
            wrote. Required when `alignment_coef` is not 0.
        alignment_module (`str`, defaults to `"mlp.down_proj"`):
            Linear module inside that decoder layer (`"mlp.c_proj"` for GPT-2).
        anchor_direction (`str`, defaults to `"target"`):
            `"target"`: g_c is the gradient of log p(new object | anchor prompt), teacher-forced.
            `"anchor_samples"`: g_c is the mean gradient of the case's sampled anchor completions.
        alignment_mode (`str`, defaults to `"cosine"`):
            `"cosine"`: each generalization sample gets `lambda * cos(g_i, g_c)`. `"constant"`: a control
            that gives every generalization sample the same bonus, `lambda` times the batch's mean cosine
            over its generalization samples (the same mean push, no direction); the feature pass still runs
            to measure that mean. Not combinable with `center_alignment` (the centred constant is 0).
        center_alignment (`bool`, defaults to `False`):
            Subtract each case's mean cosine (over its generalization samples) before adding the alignment
            term, so it re-ranks a case's samples rather than shifting them all. An ablation switch, off by
            default; its measured effect is in docs/design.md section 5.
        exclude_anchor_from_baseline (`bool`, defaults to `True`):
            Take each case's baseline mean and std over its generalization samples only.
        locality_coef (`float`, defaults to `0.0`):
            Weight of the dense locality loss: the mean NLL of the pre-edit answers on `locality_batch_size`
            locality-pool prompts, added to the loss at every micro-batch (`edit_grpo_trl.stage2.locality`).
            `0` turns it off.
        locality_batch_size (`int`, defaults to `16`):
            Locality-pool prompts per micro-batch.
        train_scope (`str`, defaults to `"all"`):
            Which weights stage 2 trains: `"all"`; `"edited_layers"`, every weight of the decoder layers the
            stage-1 editor wrote; `"edited_modules"`, only the edited module (`alignment_module`) there.
            The layers come from the edit manifest. With LoRA, the adapters go on those layers only.
        early_stop_reward (`float` or `None`, defaults to `None`):
            Stop training once the running means of the sampled anchor accuracy and of the sampled
            generalization accuracy (TRL's logged `rewards/anchor_accuracy/mean` and
            `rewards/generalization_accuracy/mean`), each over the last `early_stop_window` logs that carry
            them, both reach this value, in (0, 1]. `None` trains the full schedule. Needs both reward
            functions in `agt_reward_funcs`; applies alike to the vanilla-GRPO baseline, and is refused for
            SFT, which samples nothing (`edit_grpo_trl.stage2.early_stop`).
        early_stop_window (`int`, defaults to `3`):
            Logs averaged by `early_stop_reward`.
        null_space_projection (`bool`, defaults to `False`):
            After every optimizer step, project the update of each edited layer's `down_proj` weight onto the
            null space of the preserved keys (that weight's inputs over the stage-1 editor's key-statistics
            corpus), as AlphaEdit does for edits: `W + dW` keeps `W k0` for those keys. Needs an edit manifest
            with `mom2_dataset`; refused with LoRA, WISE, DeepSpeed and FSDP
            (`edit_grpo_trl.stage2.null_space`). Applies alike to the GRPO and SFT baselines.
        null_space_threshold (`float`, defaults to `0.02`):
            Eigenvalues of the keys' second moment `E[k0 k0^T]` below this span the null space (AlphaEdit's
            `nullspace_threshold`, same meaning and default).
        target_injection (`bool`, defaults to `False`):
            When every sampled completion of a case's anchor misses the new object, replace the last one by
            the new object itself, weighted in the loss by `p / (p + target_injection_gamma)` (`p`: the policy's
            geometric-mean probability of its tokens). For anchors RL cannot reach by sampling
            (`edit_grpo_trl.stage2.target_injection`). Applies alike to the vanilla-GRPO baseline; refused for
            SFT and with vLLM.
        target_injection_gamma (`float`, defaults to `0.1`):
            The `gamma` of that regularized importance weight, >= 0 (`0`: the injected completion is trained at
            full weight).
        split_check_batches (`int`, defaults to `0`):
            Under a multi-process launch, recompute this many generation batches (the first ones) on one
            process from the gathered per-row features, compare the advantages and alignment cosines every
            process used with that computation, log the result, and stop with an error past 1e-5. A check
            of how cases split across processes; it does nothing on one process.
        agt_reward_funcs (`list[str]`):
            AGT reward functions by name, used when the trainer gets no `reward_funcs` of its own. See
            `edit_grpo_trl.stage2.rewards.REWARD_FUNCTIONS`.
    """

    alignment_coef: float = field(
        default=0.2,
        metadata={
            "help": "Weight of the PGAA alignment term cos(g_i, g_c) on generalization advantages (0: off)."
        },
    )
    alignment_layer: int | None = field(
        default=None,
        metadata={"help": "Decoder layer of the alignment module: the layer the stage-1 editor wrote."},
    )
    alignment_module: str = field(
        default="mlp.down_proj",
        metadata={
            "help": "Linear module inside the alignment layer (e.g. 'mlp.down_proj'; GPT-2: 'mlp.c_proj')."
        },
    )
    anchor_direction: str = field(
        default="target",
        metadata={
            "help": "Anchor direction g_c: 'target' (teacher-forced gradient of log p(new object | anchor)) or "
            "'anchor_samples' (mean gradient of the case's anchor completions).",
            "choices": list(ANCHOR_DIRECTIONS),
        },
    )
    alignment_mode: str = field(
        default="cosine",
        metadata={
            "help": "'cosine': lambda * cos(g_i, g_c) per generalization sample; 'constant': the control giving "
            "each the batch's mean cosine times lambda (same push, no direction).",
            "choices": list(ALIGNMENT_MODES),
        },
    )
    center_alignment: bool = field(
        default=False,
        metadata={
            "help": "Centre cos(g_i, g_c) on its case's mean before adding it (the term only re-ranks)."
        },
    )
    exclude_anchor_from_baseline: bool = field(
        default=True,
        metadata={"help": "Compute each case's baseline over its generalization samples only."},
    )
    locality_coef: float = field(
        default=0.0,
        metadata={
            "help": "Weight of the dense locality loss (NLL of pre-edit answers on locality-pool prompts)."
        },
    )
    locality_batch_size: int = field(
        default=16, metadata={"help": "Locality-pool prompts per micro-batch for the locality loss."}
    )
    train_scope: str = field(
        default="all",
        metadata={
            "help": "Weights stage 2 trains: 'all', 'edited_layers' (the layers the editor wrote) or "
            "'edited_modules' (only the edited module in them).",
            "choices": list(TRAIN_SCOPES),
        },
    )
    early_stop_reward: float | None = field(
        default=None,
        metadata={
            "help": "Stop once the windowed anchor and generalization accuracy means both reach this value, in "
            "(0, 1] (None: train the full schedule)."
        },
    )
    early_stop_window: int = field(
        default=3, metadata={"help": "Logs averaged by early_stop_reward (those that carry both rewards)."}
    )
    null_space_projection: bool = field(
        default=False,
        metadata={
            "help": "Project every update of the edited down_proj weights onto the preserved keys' null space "
            "(AlphaEdit's projector)."
        },
    )
    null_space_threshold: float = field(
        default=2e-2,
        metadata={"help": "Eigenvalues of E[k0 k0^T] below this span the null space (> 0)."},
    )
    target_injection: bool = field(
        default=False,
        metadata={
            "help": "Put the new object in as one anchor completion of a case whose samples all miss it, "
            "weighted by p / (p + target_injection_gamma)."
        },
    )
    target_injection_gamma: float = field(
        default=0.1,
        metadata={"help": "gamma of the injected completion's importance weight p / (p + gamma), >= 0."},
    )
    split_check_batches: int = field(
        default=0,
        metadata={
            "help": "Multi-process runs: check this many generation batches against a one-process "
            "recomputation of their advantages and alignment cosines (0: off)."
        },
    )
    agt_reward_funcs: list[str] = field(
        default_factory=lambda: list(DEFAULT_REWARD_FUNCTIONS),
        metadata={"help": "AGT reward functions by name (anchor_accuracy, generalization_accuracy, ...)."},
    )

    def __post_init__(self) -> None:
        self._check_ranges()  # before GRPOConfig's own arithmetic (num_generations 0 divides by zero there)
        super().__post_init__()
        if not isinstance(self.alignment_coef, int | float) or not math.isfinite(self.alignment_coef):
            raise ValueError(f"alignment_coef must be a finite number, got {self.alignment_coef!r}")
        if self.anchor_direction not in ANCHOR_DIRECTIONS:
            raise ValueError(
                f"anchor_direction must be one of {', '.join(ANCHOR_DIRECTIONS)}; got {self.anchor_direction!r}"
            )
        if self.alignment_mode not in ALIGNMENT_MODES:
            raise ValueError(
                f"alignment_mode must be one of {', '.join(ALIGNMENT_MODES)}; got {self.alignment_mode!r}"
            )
        if self.alignment_mode == "constant" and self.center_alignment:
            raise ValueError(
                "alignment_mode 'constant' gives every generalization sample the batch's mean cosine; centring "
                "it on its case's mean (center_alignment) would leave 0: use one or the other"
            )
        if self.train_scope not in TRAIN_SCOPES:
            raise ValueError(
                f"train_scope must be one of {', '.join(TRAIN_SCOPES)}; got {self.train_scope!r}"
            )
        if self.alignment_layer is not None and (
            not isinstance(self.alignment_layer, int) or self.alignment_layer < 0
        ):
            raise ValueError(f"alignment_layer must be a layer index >= 0, got {self.alignment_layer!r}")
        if self.alignment_coef != 0 and self.alignment_layer is None:
            raise ValueError(
                "alignment_coef is not 0, so alignment_layer is required: set it to the decoder layer your "
                "stage-1 editor wrote (or set alignment_coef=0 to train without the alignment term)"
            )
        if not self.alignment_module or not isinstance(self.alignment_module, str):
            raise ValueError(f"alignment_module must name a module, got {self.alignment_module!r}")
        if self.scale_rewards not in ("group", "none"):
            raise ValueError(
                f"scale_rewards={self.scale_rewards!r} is not supported by PGAA, which normalizes per edit case: "
                "use 'group' (divide by the case's std) or 'none'"
            )
        if self.multi_objective_aggregation != "sum_then_normalize":
            raise ValueError(
                "PGAA normalizes the weighted sum of the AGT rewards: multi_objective_aggregation must be "
                f"'sum_then_normalize', got {self.multi_objective_aggregation!r}"
            )
        resolve_reward_functions(self.agt_reward_funcs)  # an unknown name fails here, not mid-training
        self._check_early_stop()
        threshold = self.null_space_threshold
        if (
            isinstance(threshold, bool)
            or not isinstance(threshold, int | float)
            or not 0 < threshold < math.inf
        ):
            raise ValueError(f"null_space_threshold must be a finite number > 0, got {threshold!r}")
        if not isinstance(self.null_space_projection, bool):
            raise ValueError(
                f"null_space_projection must be true or false, got {self.null_space_projection!r}"
            )

    def _check_early_stop(self) -> None:
        from edit_grpo_trl.stage2.early_stop import REQUIRED_REWARD_FUNCTIONS

        if not isinstance(self.early_stop_window, int) or isinstance(self.early_stop_window, bool):
            raise ValueError(
                f"early_stop_window must be a whole number of logs, got {self.early_stop_window!r}"
            )
        if self.early_stop_reward is None:
            return
        value = self.early_stop_reward
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
            raise ValueError(
                f"early_stop_reward is a share of accepted answers, in (0, 1] (or None: off); got {value!r}"
            )
        missing = [name for name in REQUIRED_REWARD_FUNCTIONS if name not in self.agt_reward_funcs]
        if missing:
            raise ValueError(
                f"early_stop_reward stops on the logged means of {list(REQUIRED_REWARD_FUNCTIONS)}, but "
                f"agt_reward_funcs lacks {missing}: add them, or unset early_stop_reward"
            )

    def _check_ranges(self) -> None:
        for name, minimum, optional in _RANGES:
            value = getattr(self, name, None)
            if value is None and (optional or not hasattr(self, name)):
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= minimum:
                raise ValueError(f"{name} must be a number >= {minimum}, got {value!r}")
        if not (self.max_steps == -1 or self.max_steps >= 1):
            raise ValueError(
                f"max_steps must be >= 1 (or -1: train num_train_epochs), got {self.max_steps!r}"
            )
