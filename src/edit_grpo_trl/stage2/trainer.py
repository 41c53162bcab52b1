"""`EditGRPOTrainer`: TRL's `GRPOTrainer` with case-grouped sampling, AGT rewards and PGAA advantages.

TRL has no advantage hook, so the subclass stays as thin as it can (docs/design.md section 7):

1. ``_get_train_sampler`` returns a :class:`CaseGroupedSampler`, so every generation batch holds whole
   edit cases.
2. ``_calculate_rewards`` keeps the reward matrix TRL gathers from all processes.
3. ``_generate_and_score_completions`` lets TRL generate and score, then gathers the batch's
   ``case_id`` and ``role`` in the same process order, recomputes the advantages with PGAA
   (``pgaa.py``), adds the alignment term from ghost cosines (``ghost.py``), keeps this process's slice,
   and replaces the figures TRL logged from its positional groups.

The loss is TRL's, untouched: PGAA changes only what each completion's advantage is.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import torch
from accelerate.utils import gather_object
from datasets import Dataset, IterableDataset
from trl import GRPOTrainer
from trl.models.utils import disable_gradient_checkpointing

from edit_grpo_trl.answers import answer_token_ids
from edit_grpo_trl.stage2.config import EditGRPOConfig
from edit_grpo_trl.stage2.early_stop import attach_reward_saturation_stop
from edit_grpo_trl.stage2.ghost import alignment_cosines, mask_features
from edit_grpo_trl.stage2.layer_features import (
    capture_module_features,
    output_gradients,
    resolve_alignment_module,
)
from edit_grpo_trl.stage2.locality import LocalityLossMixin
from edit_grpo_trl.stage2.pgaa import (
    Role,
    add_alignment_term,
    add_constant_alignment_term,
    pgaa_advantages,
)
from edit_grpo_trl.stage2.rewards import resolve_reward_functions
from edit_grpo_trl.stage2.sampler import CaseGroupedSampler, cases_per_generation_batch
from edit_grpo_trl.stage2.target_injection import TargetInjectionMixin

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("prompt", "case_id", "role")


# How far a distributed batch's advantages and alignment cosines may sit from a one-process computation.
SPLIT_CHECK_TOLERANCE = 1e-5


class DatasetSchemaError(ValueError):
    """The training dataset lacks what case-grouped PGAA needs."""


class DistributedConsistencyError(RuntimeError):
    """A batch split across processes got other advantages than one process would have given it."""


def validate_agt_dataset(dataset: Dataset, require_answers: bool = True) -> None:
    """Check columns and roles of an AGT dataset, naming the first bad row."""
    if isinstance(dataset, IterableDataset):
        raise DatasetSchemaError(
            "EditGRPOTrainer needs a map-style datasets.Dataset: cases are packed whole into generation batches, "
            "which an IterableDataset cannot be indexed for"
        )
    required = (*REQUIRED_COLUMNS, "answers") if require_answers else REQUIRED_COLUMNS
    missing = [column for column in required if column not in dataset.column_names]
    if missing:
        raise DatasetSchemaError(
            f"the training dataset lacks the column(s) {missing}; it has {dataset.column_names}. Build it with "
            "edit_grpo_trl.data.agt.build_agt_dataset, which writes prompt, case_id, role and answers."
        )
    for index, role in enumerate(dataset["role"]):
        try:
            Role.parse(role)
        except ValueError as error:
            raise DatasetSchemaError(f"training dataset row {index}: {error}") from None
    anchors_per_case: dict[Any, int] = {}
    for case_id, role in zip(dataset["case_id"], dataset["role"], strict=True):
        anchors_per_case[case_id] = anchors_per_case.get(case_id, 0) + (role == Role.ANCHOR.label)
    without_anchor = [case_id for case_id, count in anchors_per_case.items() if count != 1]
    if without_anchor:
        raise DatasetSchemaError(
            f"every edit case needs exactly one anchor row; these cases have none or several: {without_anchor[:5]}"
        )


class EditGRPOTrainer(TargetInjectionMixin, LocalityLossMixin, GRPOTrainer):
    """GRPO refinement of an edited model with AGT rewards and PGAA advantages.

    Args:
        model: the stage-1 edited model (a path or an instantiated model), as for `GRPOTrainer`.
        reward_funcs: reward functions; by default those named in ``args.agt_reward_funcs``.
        args: an :class:`EditGRPOConfig`.
        train_dataset: an AGT dataset (``build_agt_dataset``): columns ``prompt``, ``case_id``, ``role``,
            ``answers`` and optionally ``answer_style`` and ``old_answers``; every case with the same
            number of rows.
        locality_pool: rows ``{"prompt", "answers", "answer_style"}`` for the dense locality loss (needed when
            ``args.locality_coef`` > 0; see :mod:`edit_grpo_trl.stage2.locality`).
        Every other keyword goes to `GRPOTrainer` (``processing_class``, ``peft_config``, callbacks...).
    """

    _tag_names = ["trl", "grpo", "edit-grpo"]
    _name = "EditGRPO"

    def __init__(
        self,
        model,
        reward_funcs=None,
        args: EditGRPOConfig | None = None,
        train_dataset: Dataset | None = None,
        eval_dataset=None,
        **kwargs,
    ) -> None:
        if not isinstance(args, EditGRPOConfig):
            raise TypeError(
                "EditGRPOTrainer needs args=EditGRPOConfig(...) (alignment_layer at least), got "
                f"{type(args).__name__}"
            )
        if train_dataset is None:
            raise DatasetSchemaError("EditGRPOTrainer needs a train_dataset built from edit cases")
        validate_agt_dataset(train_dataset)
        # Fail on batch geometry before the model is loaded, not at the first step.
        cases_per_generation_batch(train_dataset["case_id"], args.generation_batch_size, args.num_generations)
        if reward_funcs is None:
            reward_funcs = resolve_reward_functions(args.agt_reward_funcs)
        super().__init__(
            model=model,
            reward_funcs=reward_funcs,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            **kwargs,
        )
        self._alignment_module = None
        if args.alignment_coef != 0:
            name, self._alignment_module = resolve_alignment_module(
                self.model, args.alignment_layer, args.alignment_module
            )
            logger.info("PGAA alignment gradients at %s", name)
        self._anchor_rows = {
            case_id: row
            for row, (case_id, role) in enumerate(
                zip(train_dataset["case_id"], train_dataset["role"], strict=True)
            )
            if role == Role.ANCHOR.label
        }
        self._target_token_cache: dict[Any, tuple[list[int], list[int]]] = {}
        self._gathered_rewards_per_func: torch.Tensor | None = None
        attach_reward_saturation_stop(self, args.early_stop_reward, args.early_stop_window)
        # The split check runs only where there is a split: several processes.
        self._split_checks_left = args.split_check_batches if self.accelerator.num_processes > 1 else 0
        self._split_check_features: tuple | None = None
        self.split_checks: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ sampling
    def _get_train_sampler(self, dataset: Dataset | None = None) -> CaseGroupedSampler:
        dataset = self.train_dataset if dataset is None else dataset
        case_ids = dataset["case_id"]
        return CaseGroupedSampler(
            case_ids,
            num_generations=self.num_generations,
            cases_per_batch=cases_per_generation_batch(
                case_ids, self.args.generation_batch_size, self.num_generations
            ),
            repeat_count=self.num_iterations * self.args.steps_per_generation,
            shuffle=self.shuffle_dataset,
            seed=self.args.seed,
        )

    # ------------------------------------------------------------------ rewards and advantages
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._gathered_rewards_per_func = rewards_per_func
        return rewards_per_func

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        output = super()._generate_and_score_completions(inputs)
        if not self.model.training:
            return output  # evaluation batches are not case-grouped: keep TRL's advantages there
        device = self.accelerator.device
        rewards_per_func = self._gathered_rewards_per_func
        case_ids = gather_object([row["case_id"] for row in inputs])
        role_names = gather_object([row["role"] for row in inputs])
        case_codes = {case_id: code for code, case_id in enumerate(dict.fromkeys(case_ids))}
        case_index = torch.tensor([case_codes[c] for c in case_ids], dtype=torch.long, device=device)
        roles = torch.tensor([Role.parse(r) for r in role_names], dtype=torch.long, device=device)

        weights = self.reward_weights.to(device).unsqueeze(0)
        rewards = (rewards_per_func * weights).nansum(dim=1)
        rewards[torch.isnan(rewards_per_func).all(dim=1)] = (
            torch.nan
        )  # unscorable: no reward function applied
        result = pgaa_advantages(
            rewards,
            case_index,
            roles,
            scale_rewards=self.args.scale_rewards == "group",
            exclude_anchor_from_baseline=self.args.exclude_anchor_from_baseline,
        )
        advantages = result.advantages
        cosines = None
        if self.args.alignment_coef != 0:
            local_cosines = self._local_alignment_cosines(inputs, output, case_codes)
            cosines = self.accelerator.gather(local_cosines)
            advantages = self._with_alignment_term(advantages, cosines, roles, case_index)

        output["advantages"] = advantages[self._local_slice(len(inputs))].to(output["advantages"].dtype)
        if self._split_checks_left > 0:
            self._check_split(len(inputs), rewards, case_index, roles, advantages, cosines, result.advantages)
        self._log_pgaa(rewards, roles, result, advantages, cosines)
        return output

    # ------------------------------------------------------------------ alignment term
    def _with_alignment_term(self, advantages, cosines, roles, case_index) -> torch.Tensor:
        """The advantages plus the alignment term ``alignment_mode`` names (cosine, or the constant control)."""
        if self.args.alignment_mode == "constant":  # the control: the mean push, no direction
            return add_constant_alignment_term(advantages, cosines, roles, self.args.alignment_coef)
        return add_alignment_term(
            advantages,
            cosines,
            roles,
            self.args.alignment_coef,
            case_index=case_index if self.args.center_alignment else None,
        )

    def _sequence_features(
        self,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        completion_ids: torch.Tensor,
        completion_mask: torch.Tensor,
        num_chunks: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Inputs and output gradients of the alignment module for the completion log-likelihood of each row.

        Runs the same log-prob computation as TRL's loss (``_get_per_token_logps_and_entropies``), in
        exactly ``num_chunks`` near-equal chunks (default: chunks of ``per_device_train_batch_size`` rows).
        Every process must run the same number of forwards, whatever its number of rows: ZeRO-3's forward
        gathers parameters collectively. An empty chunk therefore runs one row and drops its result.
        """
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
        attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)
        logits_to_keep = completion_ids.size(1)
        rows_total = input_ids.size(0)
        if num_chunks is None:
            num_chunks = math.ceil(rows_total / self.args.per_device_train_batch_size)
        inputs, grads = [], []
        with (
            torch.enable_grad(),
            disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs),
        ):
            for rows in torch.arange(rows_total).tensor_split(max(1, num_chunks)):
                keep = rows.numel()
                if not keep:  # nothing here: a placeholder forward keeps ZeRO-3's collectives in step
                    rows = torch.zeros(1, dtype=torch.long)
                rows = rows.to(input_ids.device)
                with capture_module_features(self._alignment_module) as captured:
                    logps, _, _ = self._get_per_token_logps_and_entropies(
                        self.model,
                        input_ids[rows],
                        attention_mask[rows],
                        logits_to_keep,
                        batch_size=len(rows),
                    )
                total = (logps.float() * completion_mask[rows]).sum()
                (output_grad,) = output_gradients(total, captured)
                (layer_input,) = captured.inputs
                inputs.append(layer_input[:keep])
                grads.append(output_grad[:keep])
        layer_inputs, output_grads = mask_features(torch.cat(inputs), torch.cat(grads), attention_mask)
        return layer_inputs, output_grads, attention_mask

    def _anchor_target_tokens(self, case_id) -> tuple[list[int], list[int]]:
        """Prompt ids and new-object ids of a case's anchor, tokenized as generation sees them."""
        if case_id not in self._target_token_cache:
            row = self.train_dataset[self._anchor_rows[case_id]]
            (prompt_ids,), _, _ = self._tokenize_prompts([row["prompt"]])
            _, target_ids = answer_token_ids(self._tokenizer, row, f"case {case_id!r}")
            self._target_token_cache[case_id] = (list(prompt_ids), target_ids)
        return self._target_token_cache[case_id]

    def _padded(self, sequences: Sequence[list[int]], side: str) -> tuple[torch.Tensor, torch.Tensor]:
        device = self.accelerator.device
        width = max(len(ids) for ids in sequences)
        ids = torch.full(
            (len(sequences), width), self._tokenizer.pad_token_id, dtype=torch.long, device=device
        )
        mask = torch.zeros((len(sequences), width), dtype=torch.long, device=device)
        for row, sequence in enumerate(sequences):
            span = slice(width - len(sequence), width) if side == "left" else slice(0, len(sequence))
            ids[row, span] = torch.tensor(sequence, dtype=torch.long, device=device)
            mask[row, span] = 1
        return ids, mask

    def _local_alignment_cosines(self, inputs, output: dict[str, Any], case_codes: dict) -> torch.Tensor:
        """cos(g_i, g_c) for this process's rows (0 for anchor and locality rows).

        The feature pass runs on the rows that need it only: the generalization samples, plus the anchor
        samples when they define g_c (``anchor_direction="anchor_samples"``). Locality rows get no term.
        """
        device = self.accelerator.device
        all_roles = torch.tensor([Role.parse(row["role"]) for row in inputs], device=device)
        needed = all_roles == Role.GENERALIZATION
        if self.args.anchor_direction != "target":
            needed |= all_roles == Role.ANCHOR
        selected = needed.nonzero().flatten()
        if (
            not selected.numel()
        ):  # no such row here: one row keeps the feature pass's shapes (its result is unused)
            selected = torch.zeros(1, dtype=torch.long, device=device)
        local_roles = all_roles[selected]
        local_groups = torch.tensor([case_codes[row["case_id"]] for row in inputs], device=device)[selected]
        prompt_ids, prompt_mask = output["prompt_ids"][selected], output["prompt_mask"][selected]
        completion_ids = output["completion_ids"][selected]
        completion_mask = output["completion_mask"][selected]
        num_samples = prompt_ids.size(0)
        # The chunk count follows the whole local batch, which is the same size on every process.
        num_chunks = math.ceil(len(inputs) / self.args.per_device_train_batch_size)
        if self.args.anchor_direction == "target":
            # The teacher-forced anchor sequences ride in the same feature pass as the samples (one forward
            # and backward instead of two). Each case's direction is computed by one process and shared, so
            # a case whose samples straddle processes is aligned to the same g_c on all of them.
            owned = list(case_codes)[self.accelerator.process_index :: self.accelerator.num_processes]
            if owned:
                prompts, targets = zip(
                    *(self._anchor_target_tokens(case_id) for case_id in owned), strict=True
                )
                prompt_ids, prompt_mask = self._stack_padded(
                    prompt_ids, prompt_mask, *self._padded(prompts, "left"), "left"
                )
                completion_ids, completion_mask = self._stack_padded(
                    completion_ids, completion_mask, *self._padded(targets, "right"), "right"
                )
            anchor_groups = torch.tensor([case_codes[c] for c in owned], dtype=torch.long, device=device)
        features_x, features_d, features_mask = self._sequence_features(
            prompt_ids, prompt_mask, completion_ids, completion_mask, num_chunks=num_chunks
        )
        sample_x, sample_d = features_x[:num_samples], features_d[:num_samples]
        if self.args.anchor_direction == "target":
            anchor_x, anchor_d = features_x[num_samples:], features_d[num_samples:]
            if self.accelerator.num_processes > 1:
                anchor_x, anchor_d, anchor_groups = self._gathered_feature_rows(
                    anchor_x, anchor_d, features_mask[num_samples:], anchor_groups
                )
        else:
            anchors = local_roles == Role.ANCHOR
            anchor_x, anchor_d, anchor_groups = self._gathered_feature_rows(
                sample_x[anchors],
                sample_d[anchors],
                features_mask[:num_samples][anchors],
                local_groups[anchors],
            )
        generalization = local_roles == Role.GENERALIZATION
        if self._split_checks_left > 0:  # kept for the check against a one-process computation
            offset = self.accelerator.process_index * len(inputs)
            tags = torch.stack([selected[generalization] + offset, local_groups[generalization]], dim=1)
            self._split_check_features = (
                sample_x[generalization],
                sample_d[generalization],
                features_mask[:num_samples][generalization],
                tags,
                anchor_x,
                anchor_d,
                anchor_groups,
            )
        cosines = torch.zeros(len(inputs), dtype=torch.float32, device=device)
        cosines[selected[generalization]] = alignment_cosines(
            sample_x[generalization],
            sample_d[generalization],
            local_groups[generalization],
            anchor_x,
            anchor_d,
            anchor_groups,
        ).float()
        return cosines

    def _stack_padded(self, ids_a, mask_a, ids_b, mask_b, side: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows of two padded batches in one, re-padded on ``side`` to the wider of the two."""
        width = max(ids_a.size(1), ids_b.size(1))

        def widen(ids, mask):
            extra = width - ids.size(1)
            pad_ids = ids.new_full((ids.size(0), extra), self._tokenizer.pad_token_id)
            pad_mask = mask.new_zeros((mask.size(0), extra))
            if side == "left":
                return torch.cat([pad_ids, ids], dim=1), torch.cat([pad_mask, mask], dim=1)
            return torch.cat([ids, pad_ids], dim=1), torch.cat([mask, pad_mask], dim=1)

        (ids_a, mask_a), (ids_b, mask_b) = widen(ids_a, mask_a), widen(ids_b, mask_b)
        return torch.cat([ids_a, ids_b]), torch.cat([mask_a, mask_b])

    @staticmethod
    def _strip_padding(features_x, features_d, mask) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Each row's features at its real (unpadded) positions, on the CPU, ready to send."""
        keep = [row.bool().cpu() for row in mask]
        xs = [x.cpu()[k] for x, k in zip(features_x, keep, strict=True)]
        ds = [d.cpu()[k] for d, k in zip(features_d, keep, strict=True)]
        return xs, ds

    def _packed(self, xs: Sequence[torch.Tensor], ds: Sequence[torch.Tensor], like: torch.Tensor):
        """Rows of different lengths in one zero-padded (N, T, d) pair on this process's device."""
        device = self.accelerator.device
        width = max((x.size(0) for x in xs), default=1)
        packed_x = like.new_zeros((len(xs), width, xs[0].size(-1) if xs else like.size(-1)), device=device)
        packed_d = like.new_zeros((len(ds), width, ds[0].size(-1) if ds else 1), device=device)
        for row, (x, d) in enumerate(zip(xs, ds, strict=True)):
            packed_x[row, : x.size(0)] = x.to(device)
            packed_d[row, : d.size(0)] = d.to(device)
        return packed_x, packed_d

    def _gathered_feature_rows(self, features_x, features_d, mask, tags):
        """The feature rows of every process, in process order, with each row's tags (a case code, or any
        integers per row); padded positions are dropped before sending.

        Used for the anchor directions (a case's anchors may have been computed on another process) and by
        the split check (every generalization row, tagged with its row in the gathered batch and its case).
        """
        xs, ds = self._strip_padding(features_x, features_d, mask)
        everything = gather_object(list(zip(tags.tolist(), xs, ds, strict=True)))
        device = self.accelerator.device
        if not everything:
            return (
                features_x.new_zeros((0, 1, features_x.size(-1))),
                features_d.new_zeros((0, 1, features_d.size(-1))),
                torch.zeros((0, *tags.shape[1:]), dtype=torch.long, device=device),
            )
        packed_x, packed_d = self._packed(
            [x for _, x, _ in everything], [d for _, _, d in everything], features_x
        )
        gathered_tags = torch.tensor([tag for tag, _, _ in everything], dtype=torch.long, device=device)
        return packed_x, packed_d, gathered_tags

    # ------------------------------------------------------------------ split check
    def _check_split(self, num_local, rewards, case_index, roles, advantages, cosines, result_advantages):
        """Recompute this generation batch on one process and compare with what the processes used.

        Every process gathers the per-row features of every generalization sample and recomputes the
        alignment cosines and PGAA advantages of the whole batch at once, as a single process would. A
        row's features depend on that row alone (its own forward and the backward of its own
        log-likelihood); what splitting a case across processes can get wrong is which anchor direction,
        group statistics and slice its samples get, and that is what this compares. All processes reach
        the same verdict, so a mismatch stops every one of them.
        """
        self._split_checks_left -= 1
        device = self.accelerator.device
        kept = self.accelerator.gather(advantages[self._local_slice(num_local)].float())
        if self.args.alignment_coef != 0:
            x, d, mask, tags, anchor_x, anchor_d, anchor_groups = self._split_check_features
            x, d, tags = self._gathered_feature_rows(x, d, mask, tags)
            reference_cosines = torch.zeros(len(roles), dtype=torch.float32, device=device)
            if len(tags):
                reference_cosines[tags[:, 0]] = alignment_cosines(
                    x, d, tags[:, 1], anchor_x, anchor_d, anchor_groups
                ).float()
            reference = self._with_alignment_term(result_advantages, reference_cosines, roles, case_index)
            cosine_gap = (cosines.float() - reference_cosines).abs().max().item()
        else:
            reference, cosine_gap = result_advantages, 0.0
        advantage_gap = (kept - reference.float()).abs().max().item()
        owners = (torch.arange(len(case_index), device=device) // num_local).tolist()
        spans: dict[int, set[int]] = {}
        for code, owner in zip(case_index.tolist(), owners, strict=True):
            spans.setdefault(code, set()).add(owner)
        straddling = sum(len(ranks) > 1 for ranks in spans.values())
        check = {
            "step": self.state.global_step,
            "processes": self.accelerator.num_processes,
            "cases": len(spans),
            "straddling_cases": straddling,
            "max_abs_diff_advantage": advantage_gap,
            "max_abs_diff_cosine": cosine_gap,
            "tolerance": SPLIT_CHECK_TOLERANCE,
        }
        self.split_checks.append(check)
        logger.info(
            "split check at step %d: %d cases over %d processes, %d straddling; max |advantage - one-process| = "
            "%.2e, max |cosine - one-process| = %.2e (tolerance %.0e)",
            check["step"],
            check["cases"],
            check["processes"],
            check["straddling_cases"],
            advantage_gap,
            cosine_gap,
            SPLIT_CHECK_TOLERANCE,
        )
        if not (advantage_gap <= SPLIT_CHECK_TOLERANCE and cosine_gap <= SPLIT_CHECK_TOLERANCE):
            raise DistributedConsistencyError(
                f"split check at step {check['step']}: the advantages or alignment cosines used across "
                f"{check['processes']} processes differ from a one-process computation of the same batch "
                f"(max |advantage diff| {advantage_gap:.3e}, max |cosine diff| {cosine_gap:.3e}, "
                f"tolerance {SPLIT_CHECK_TOLERANCE:.0e})"
            )

    def _local_slice(self, num_local: int) -> slice:
        start = self.accelerator.process_index * num_local
        return slice(start, start + num_local)

    # ------------------------------------------------------------------ logging
    def _log_pgaa(self, rewards, roles, result, advantages, cosines) -> None:
        metrics = self._metrics["train"]
        for role in Role:
            selected = rewards[(roles == role) & ~torch.isnan(rewards)]
            if selected.numel():
                metrics[f"pgaa/reward/{role.name.lower()}/mean"].append(selected.mean().item())
        if result.has_generalization.any():
            zero_std = result.zero_std_generalization[result.has_generalization].float().mean().item()
            metrics["pgaa/frac_cases_zero_std_generalization"].append(zero_std)
        # TRL logged these from its positional groups; replace them with the groups PGAA actually used.
        if metrics.get("frac_reward_zero_std"):
            metrics["frac_reward_zero_std"][-1] = result.degenerate_group.float().mean().item()
        metrics["pgaa/advantage/abs_mean"].append(advantages.abs().mean().item())
        if cosines is not None:
            generalization = cosines[roles == Role.GENERALIZATION].float()
            if generalization.numel():
                metrics["pgaa/alignment_cos/mean"].append(generalization.mean().item())
                std = generalization.std().item() if generalization.numel() > 1 else 0.0
                metrics["pgaa/alignment_cos/std"].append(std if math.isfinite(std) else 0.0)
        self._logs["advantages"].clear()
        self._logs["advantages"].extend(advantages.tolist())
