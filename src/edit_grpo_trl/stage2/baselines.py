"""The stage-2 baselines Edit-GRPO is measured against, built from the same recipe and the same AGT data.

``refinement`` in a recipe picks the stage-2 method:

- ``edit_grpo``: :class:`EditGRPOTrainer` (AGT rewards, case groups, PGAA advantages). The product.
- ``grpo``: TRL's own ``GRPOTrainer`` with the same AGT reward functions and data: per-prompt groups,
  TRL's advantages, no anchor exclusion, no alignment term ("vanilla GRPO").
- ``sft``: TRL's ``SFTTrainer`` on the AGT rows' accepted answers (the new object for anchor and
  generalization rows, the pre-edit answer for locality rows): the non-RL baseline. Each prompt is seen as
  often as under GRPO: the batch holds ``per_device_train_batch_size / num_generations`` prompts, for the
  same number of steps.

The functions here are pure translations (settings -> config, AGT rows -> SFT rows); the trainers are
built in :mod:`edit_grpo_trl.stage2.training`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

REFINEMENT_METHODS = ("edit_grpo", "grpo", "sft")


def _init_fields(config_class) -> set[str]:
    return {f.name for f in dataclasses.fields(config_class) if f.init}


def grpo_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The recipe's training settings that TRL's ``GRPOConfig`` takes.

    Filtering by ``GRPOConfig``'s own fields drops PGAA's (``alignment_coef``, ``center_alignment``, ...):
    they exist only on ``EditGRPOConfig``.
    """
    from trl import GRPOConfig

    valid = _init_fields(GRPOConfig)
    return {key: value for key, value in settings.items() if key in valid}


def sft_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The recipe's training settings that ``SFTConfig`` shares with GRPO, with the batch in prompts.

    Only ``TrainingArguments`` fields carry over (optimizer, schedule, steps, logging, saving); sampling
    fields (temperature, num_generations, ...) mean nothing to supervised training.
    """
    from transformers import TrainingArguments

    shared = _init_fields(TrainingArguments)
    result = {key: value for key, value in settings.items() if key in shared}
    generations = int(settings.get("num_generations", 8))
    batch = int(settings.get("per_device_train_batch_size", generations))
    # GRPO's batch counts completions: G per prompt. SFT sees each prompt once per batch instead.
    result["per_device_train_batch_size"] = max(1, batch // generations)
    return result


def sft_rows(agt_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Prompt-completion rows from AGT rows, completed with the first accepted answer.

    Plain prompts complete as `` <answer> .``, the way the world's text states facts. Conversational
    prompts (``prompt_style: chat``) get an assistant turn ``\\boxed{<answer>}``, the form their reward
    asks for; TRL's SFTTrainer applies the chat template to both.
    """
    rows = []
    for index, row in enumerate(agt_rows):
        answers = row.get("answers") or []
        if not answers:
            raise ValueError(
                f"AGT row {index} (case {row.get('case_id')!r}) has no accepted answer to train on"
            )
        prompt = row["prompt"]
        if isinstance(prompt, str):
            completion: Any = f" {answers[0]} ."
        else:
            completion = [{"role": "assistant", "content": f"\\boxed{{{answers[0]}}}"}]
        rows.append({"prompt": prompt, "completion": completion})
    return rows
