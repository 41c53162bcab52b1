"""EditGRPOTrainer end to end on a tiny model: validation, parity with TRL, the alignment features,
training steps, logging."""

import math
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

from edit_grpo_trl import EditGRPOConfig, EditGRPOTrainer
from edit_grpo_trl.stage2.layer_features import AlignmentModuleError
from edit_grpo_trl.stage2.sampler import CaseBatchError
from edit_grpo_trl.stage2.trainer import DatasetSchemaError

from .conftest import make_agt_rows, make_model

COMMON = dict(
    per_device_train_batch_size=8,
    steps_per_generation=2,  # generation batch: 16 completions = 2 cases x 4 prompts x G=2
    num_generations=2,
    max_completion_length=4,
    learning_rate=5e-2,
    logging_steps=1,
    report_to="none",
    save_strategy="no",
    gradient_checkpointing=False,
    use_cpu=True,
    bf16=False,  # GRPOConfig turns bf16 autocast on by default, also on the CPU
    seed=0,
    temperature=1.0,
    log_completions=True,
)


def config(tmp_path, **overrides):
    return EditGRPOConfig(output_dir=str(tmp_path), **{**COMMON, "alignment_layer": 1, **overrides})


def varied_reward(completions, **_):
    """A reward with spread on a random model: the completion's length in characters, NaN-free."""
    return [float(len(c)) for c in completions]


def test_config_validation_messages(tmp_path):
    with pytest.raises(ValueError, match="alignment_layer is required"):
        EditGRPOConfig(output_dir=str(tmp_path), **{**COMMON})
    with pytest.raises(ValueError, match="anchor_direction"):
        config(tmp_path, anchor_direction="mean")
    with pytest.raises(ValueError, match="not supported by PGAA"):
        config(tmp_path, scale_rewards="batch")
    with pytest.raises(ValueError, match="Did you mean"):
        config(tmp_path, agt_reward_funcs=["anchor_acc"])


def test_dataset_and_model_validation(tmp_path, tokenizer, agt_dataset):
    args = config(tmp_path)
    with pytest.raises(DatasetSchemaError, match=r"lacks the column\(s\) \['case_id'"):
        EditGRPOTrainer(
            make_model(),
            args=args,
            train_dataset=agt_dataset.remove_columns("case_id"),
            processing_class=tokenizer,
        )
    bad_role = agt_dataset.map(
        lambda row, i: {"role": "paraphrase" if i == 2 else row["role"]}, with_indices=True
    )
    with pytest.raises(DatasetSchemaError, match="row 2"):
        EditGRPOTrainer(make_model(), args=args, train_dataset=bad_role, processing_class=tokenizer)
    with pytest.raises(CaseBatchError, match="multiple of 8"):
        EditGRPOTrainer(
            make_model(),
            args=config(tmp_path, per_device_train_batch_size=6),
            train_dataset=agt_dataset,
            processing_class=tokenizer,
        )
    with pytest.raises(AlignmentModuleError, match="valid: 0-1"):
        EditGRPOTrainer(
            make_model(),
            args=config(tmp_path, alignment_layer=7),
            train_dataset=agt_dataset,
            processing_class=tokenizer,
        )


def one_prompt_per_case_dataset():
    rows = make_agt_rows(4)
    anchors = [i for i, role in enumerate(rows["role"]) if role == "anchor"]
    return Dataset.from_dict({key: [values[i] for i in anchors] for key, values in rows.items()})


def test_parity_with_trl_advantages(tmp_path, tokenizer):
    """alignment_coef=0, no anchor exclusion, one group per prompt: TRL's advantages exactly."""
    dataset = one_prompt_per_case_dataset()
    shared = {**COMMON, "per_device_train_batch_size": 4, "steps_per_generation": 2, "num_generations": 4}
    ours = EditGRPOTrainer(
        make_model(seed=1),
        reward_funcs=[varied_reward],
        args=EditGRPOConfig(
            output_dir=str(tmp_path / "a"), alignment_coef=0, exclude_anchor_from_baseline=False, **shared
        ),
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    theirs = GRPOTrainer(
        make_model(seed=1),
        reward_funcs=[varied_reward],
        args=GRPOConfig(output_dir=str(tmp_path / "b"), **shared),
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    batch = [dataset[i] for i in (0, 0, 0, 0, 1, 1, 1, 1)]
    outputs = []
    for trainer in (ours, theirs):
        trainer.model.train()
        torch.manual_seed(123)
        outputs.append(trainer._generate_and_score_completions([dict(row) for row in batch]))
    assert torch.equal(outputs[0]["completion_ids"], outputs[1]["completion_ids"])
    assert outputs[1]["advantages"].abs().sum() > 0  # the comparison is not between zeros
    torch.testing.assert_close(outputs[0]["advantages"], outputs[1]["advantages"], rtol=0, atol=1e-6)


def brute_force_gradient(model, weight, prompt, completion):
    """d log p(completion | prompt) / d weight, one unpadded sequence at a time."""
    ids = torch.tensor([prompt + completion])
    logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float()
    logp = torch.log_softmax(logits, -1).gather(-1, torch.tensor(completion)[:, None]).sum()
    return torch.autograd.grad(logp, weight)[0].flatten()


def test_sequence_features_match_brute_force_gradients(tmp_path, tokenizer, agt_dataset):
    """The trainer's own feature pass (TRL's log-prob path, chunked) against per-sample autograd."""
    from edit_grpo_trl.stage2.ghost import ghost_inner_products

    trainer = EditGRPOTrainer(
        make_model(seed=2),
        args=config(tmp_path, per_device_train_batch_size=2, steps_per_generation=8),
        train_dataset=agt_dataset,
        processing_class=tokenizer,
    )
    prompt_ids, prompt_mask = trainer._padded([[5, 6, 7], [8, 9]], side="left")
    completion_ids, completion_mask = trainer._padded([[10, 11], [12, 13, 14]], side="right")
    x, d, _ = trainer._sequence_features(prompt_ids, prompt_mask, completion_ids, completion_mask)
    gram = ghost_inner_products(x, d, x, d)
    weight = trainer._alignment_module.weight
    grads = torch.stack(
        [
            brute_force_gradient(trainer.model, weight, [5, 6, 7], [10, 11]),
            brute_force_gradient(trainer.model, weight, [8, 9], [12, 13, 14]),
        ]
    )
    brute = grads @ grads.T
    assert ((gram - brute).abs().max() / brute.abs().max()) < 1e-5


def test_feature_pass_runs_the_same_number_of_forwards_whatever_its_rows(tmp_path, tokenizer, agt_dataset):
    """ZeRO-3 gathers parameters in every forward: a process with fewer rows must not run fewer forwards."""
    trainer = EditGRPOTrainer(
        make_model(seed=2),
        args=config(tmp_path, per_device_train_batch_size=2, steps_per_generation=8),
        train_dataset=agt_dataset,
        processing_class=tokenizer,
    )
    calls = []
    handle = trainer.model.register_forward_hook(lambda *_: calls.append(1))
    prompt_ids, prompt_mask = trainer._padded([[5, 6, 7]], side="left")
    completion_ids, completion_mask = trainer._padded([[10, 11]], side="right")
    x, d, _ = trainer._sequence_features(
        prompt_ids, prompt_mask, completion_ids, completion_mask, num_chunks=3
    )
    assert len(calls) == 3 and x.size(0) == d.size(0) == 1
    one_x, one_d, _ = trainer._sequence_features(
        prompt_ids, prompt_mask, completion_ids, completion_mask, num_chunks=1
    )
    handle.remove()
    torch.testing.assert_close(x, one_x)
    torch.testing.assert_close(d, one_d)


def test_target_direction_cosines_match_brute_force(tmp_path, tokenizer, agt_dataset):
    """cos(g_i, g_c) for a generation batch, with g_c = d log p(" " + new object | anchor prompt)."""
    trainer = EditGRPOTrainer(
        make_model(seed=3),
        args=config(tmp_path, per_device_train_batch_size=4, steps_per_generation=4),
        train_dataset=agt_dataset,
        processing_class=tokenizer,
    )
    rows = [dict(agt_dataset[i]) for i in range(8)]  # cases 0 and 1, whole
    completions = [[10 + (i % 5)] * (1 + i % 3) for i in range(8)]  # ragged: padding on both sides
    prompt_lists = [tokenizer(row["prompt"])["input_ids"] for row in rows]
    prompt_ids, prompt_mask = trainer._padded(prompt_lists, "left")
    completion_ids, completion_mask = trainer._padded(completions, "right")
    output = {
        "prompt_ids": prompt_ids,
        "prompt_mask": prompt_mask,
        "completion_ids": completion_ids,
        "completion_mask": completion_mask,
    }
    cosines = trainer._local_alignment_cosines(rows, output, {"case-0": 0, "case-1": 1})
    assert cosines.abs().max() > 1e-3  # a real signal, not a comparison of zeros
    weight = trainer._alignment_module.weight
    for i, row in enumerate(rows):
        if row["role"] != "generalization":
            assert cosines[i] == 0
            continue
        anchor = next(r for r in rows if r["case_id"] == row["case_id"] and r["role"] == "anchor")
        target = tokenizer(" " + anchor["answers"][0], add_special_tokens=False)["input_ids"]
        g_c = brute_force_gradient(trainer.model, weight, tokenizer(anchor["prompt"])["input_ids"], target)
        g_i = brute_force_gradient(trainer.model, weight, prompt_lists[i], completions[i])
        expected = torch.nn.functional.cosine_similarity(g_i, g_c, dim=0)
        assert abs(cosines[i].item() - expected.item()) < 1e-5 * max(1.0, abs(expected.item()))


@pytest.mark.parametrize("anchor_direction", ["target", "anchor_samples"])
def test_training_changes_weights_and_logs_pgaa(tmp_path, tokenizer, agt_dataset, anchor_direction):
    model = make_model(seed=4)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainer = EditGRPOTrainer(
        model,
        args=config(tmp_path, max_steps=2, anchor_direction=anchor_direction),
        train_dataset=agt_dataset,
        processing_class=tokenizer,
    )
    trainer.train()
    changed = [name for name, p in trainer.model.named_parameters() if not torch.equal(p, before[name])]
    assert changed, "no weight moved"
    logged = {key for entry in trainer.state.log_history for key in entry}
    for key in (
        "pgaa/alignment_cos/mean",
        "pgaa/alignment_cos/std",
        "pgaa/reward/anchor/mean",
        "pgaa/reward/generalization/mean",
        "pgaa/reward/locality/mean",
        "pgaa/frac_cases_zero_std_generalization",
    ):
        assert key in logged, key
    cosines = [
        entry["pgaa/alignment_cos/mean"]
        for entry in trainer.state.log_history
        if "pgaa/alignment_cos/mean" in entry
    ]
    assert all(-1 <= c <= 1 and math.isfinite(c) for c in cosines)
    assert any(c != 0 for c in cosines)


def one_logged_step(tmp_path, tokenizer, agt_dataset, **settings):
    """One training step; returns the trainer, the logged advantages and PGAA's own advantages (no
    alignment term) recomputed from the logged rewards, and each row's role."""
    import pandas as pd

    from edit_grpo_trl.stage2.pgaa import Role, pgaa_advantages

    trainer = EditGRPOTrainer(
        make_model(seed=5),
        args=config(tmp_path, max_steps=1, **settings),
        train_dataset=agt_dataset,
        processing_class=tokenizer,
    )
    trainer.train()
    table = pd.read_parquet(next((tmp_path / "completions").glob("*.parquet")))
    prompts = table["prompt"].tolist()
    role_of = dict(zip(agt_dataset["prompt"], agt_dataset["role"], strict=True))
    case_of = dict(zip(agt_dataset["prompt"], agt_dataset["case_id"], strict=True))
    codes = {c: i for i, c in enumerate(dict.fromkeys(case_of[p] for p in prompts))}
    reward = table[["anchor_accuracy", "generalization_accuracy", "locality_preservation"]].sum(
        axis=1, min_count=1
    )
    roles = torch.tensor([int(Role.parse(role_of[p])) for p in prompts])
    baseline = pgaa_advantages(
        torch.tensor(reward.to_numpy(), dtype=torch.float32),
        torch.tensor([codes[case_of[p]] for p in prompts]),
        roles,
    ).advantages
    logged = torch.tensor(table["advantage"].to_numpy(), dtype=torch.float32)
    return trainer, logged, baseline, roles


def test_completions_table_shows_pgaa_advantages(tmp_path, tokenizer, agt_dataset):
    _, logged, expected, _ = one_logged_step(tmp_path, tokenizer, agt_dataset, alignment_coef=0)
    torch.testing.assert_close(logged, expected)


def test_wandb_offline_run_is_written(tmp_path, tokenizer, agt_dataset, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    trainer = EditGRPOTrainer(
        make_model(seed=6),
        args=config(tmp_path / "out", max_steps=1, report_to="wandb", run_name="pgaa-test"),
        train_dataset=agt_dataset,
        processing_class=tokenizer,
    )
    trainer.train()
    import wandb

    assert wandb.run is not None, "the trainer did not start a W&B run"
    run_dir = Path(wandb.run.dir).parent  # .../offline-run-<time>-<id>/files -> the run directory
    wandb.finish()
    assert run_dir.name.startswith("offline-run-")
    record = next(run_dir.glob("*.wandb")).read_bytes()  # the run's protobuf log holds the metric names
    for key in ("train/pgaa/alignment_cos/mean", "train/pgaa/reward/anchor/mean"):
        assert key.encode() in record, key
    assert list(run_dir.rglob("completions_*.table.json")), "the completions table was not logged"


@pytest.mark.parametrize("alignment_mode", ["constant", "cosine"])
def test_alignment_mode_sets_the_bonus_the_completions_get(tmp_path, tokenizer, agt_dataset, alignment_mode):
    """The logged advantages minus PGAA's are lambda * (batch mean cosine) on every generalization row
    under the constant control, and differ from row to row under the cosine term."""
    from edit_grpo_trl.stage2.pgaa import Role

    coef = 0.5
    trainer, logged, base, roles = one_logged_step(
        tmp_path, tokenizer, agt_dataset, alignment_coef=coef, alignment_mode=alignment_mode
    )
    bonus = logged - base
    generalization = roles == int(Role.GENERALIZATION)
    torch.testing.assert_close(bonus[~generalization], torch.zeros(int((~generalization).sum())))
    (mean_cos,) = [
        e["pgaa/alignment_cos/mean"] for e in trainer.state.log_history if "pgaa/alignment_cos/mean" in e
    ]
    if alignment_mode == "constant":
        torch.testing.assert_close(
            bonus[generalization], torch.full((int(generalization.sum()),), coef * mean_cos)
        )
    else:
        assert bonus[generalization].std() > 1e-3
        torch.testing.assert_close(
            bonus[generalization].mean(), torch.tensor(coef * mean_cos, dtype=torch.float32)
        )


def test_alignment_mode_is_validated(tmp_path):
    assert config(tmp_path).alignment_mode == "cosine"
    with pytest.raises(ValueError, match="alignment_mode must be one of cosine, constant; got 'mean'"):
        config(tmp_path, alignment_mode="mean")
    with pytest.raises(ValueError, match="centring it"):
        config(tmp_path, alignment_mode="constant", center_alignment=True)
