"""``null_space_projection``: a training step leaves the edited down_proj's outputs on the preserved keys
unchanged, and moves them without the switch; the refusals name what to change."""

import json
import random

import pytest
import torch

from edit_grpo_trl import EditGRPOConfig, EditGRPOTrainer
from edit_grpo_trl.editors.checkpoint import manifest_template
from edit_grpo_trl.stage2.null_space import (
    KeyStatisticsSource,
    NullSpaceError,
    attach_null_space_projection,
)
from edit_grpo_trl.stage2.training import attach_null_space

from .conftest import WORDS, make_model
from .test_trainer import COMMON, varied_reward

# Preserved text: 4 texts of 5 words, 20 keys per layer, so the keys span at most 20 of down_proj's 48 inputs.
PRESERVED = [
    "Ana was born in Paris",
    "Bo lives in the city",
    "the home town of Cyd",
    "Dee is where Eli was",
]
LAYERS = [0, 1]


def preserved_keys(model, tokenizer, layer):
    """The down_proj inputs of ``layer`` on the preserved texts, (tokens, in), captured by a hook."""
    captured = []
    module = model.model.layers[layer].mlp.down_proj
    handle = module.register_forward_hook(
        lambda _m, args, _o: captured.append(args[0].detach().reshape(-1, args[0].shape[-1]))
    )
    try:
        with torch.no_grad():
            for text in PRESERVED:
                ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
                model(input_ids=ids)
    finally:
        handle.remove()
    return torch.cat(captured).double()


def gap_threshold(keys):
    """A threshold between the zero eigenvalues of E[k k^T] and its smallest non-zero one."""
    eigenvalues = torch.linalg.eigvalsh(keys.T @ keys / len(keys))
    rank = int(torch.linalg.matrix_rank(keys))
    free = len(eigenvalues) - rank
    assert free >= 20, "the test needs a null space"
    return float((eigenvalues[free - 1].clamp_min(1e-30) * eigenvalues[free]).sqrt())


def train_one_step(tmp_path, tokenizer, agt_dataset, project: bool):
    model = make_model(seed=7)
    keys = {layer: preserved_keys(model, tokenizer, layer) for layer in LAYERS}
    threshold = min(gap_threshold(k) for k in keys.values())
    before = {layer: model.model.layers[layer].mlp.down_proj.weight.detach().clone() for layer in LAYERS}
    trainer = EditGRPOTrainer(
        model,
        reward_funcs=[varied_reward],
        args=EditGRPOConfig(
            output_dir=str(tmp_path / "out"),
            **{**COMMON, "log_completions": False},
            alignment_layer=1,
            max_steps=2,
        ),
        train_dataset=agt_dataset,
        processing_class=tokenizer,
    )
    if project:
        corpus = tmp_path / "preserved.txt"
        corpus.write_text("\n".join(PRESERVED) + "\n")
        source = KeyStatisticsSource(str(corpus), n_samples=len(PRESERVED))
        attach_null_space_projection(trainer, LAYERS, source, threshold, cache_dir=tmp_path / "stats")
    trainer.train()
    moved = {}
    for layer in LAYERS:
        delta = (trainer.model.model.layers[layer].mlp.down_proj.weight.detach() - before[layer]).double()
        moved[layer] = (delta, keys[layer])
    return moved


def one_step_trainer(model, tmp_path, tokenizer, agt_dataset) -> EditGRPOTrainer:
    """An Edit-GRPO trainer of one step on ``model``, for the checks that need a trainer to attach to."""
    return EditGRPOTrainer(
        model,
        reward_funcs=[varied_reward],
        args=EditGRPOConfig(output_dir=str(tmp_path / "out"), **COMMON, alignment_layer=1, max_steps=1),
        train_dataset=agt_dataset,
        processing_class=tokenizer,
    )


def test_projected_updates_keep_the_preserved_keys_outputs(tmp_path, tokenizer, agt_dataset):
    for layer, (delta, keys) in train_one_step(tmp_path / "on", tokenizer, agt_dataset, project=True).items():
        assert delta.norm() > 1e-3, f"layer {layer}: the projection left no update at all"
        relative = (delta @ keys.T).norm() / (delta.norm() * keys.norm())
        assert relative < 1e-5, (
            f"layer {layer}: the update moves the preserved keys' outputs ({relative:.2e})"
        )
    for layer, (delta, keys) in train_one_step(
        tmp_path / "off", tokenizer, agt_dataset, project=False
    ).items():
        relative = (delta @ keys.T).norm() / (delta.norm() * keys.norm())
        assert relative > 1e-2, f"layer {layer}: without the switch the update should reach the keys"


def test_the_switch_is_refused_where_it_cannot_work(tmp_path, tokenizer, agt_dataset):
    trainer = one_step_trainer(make_model(seed=1), tmp_path, tokenizer, agt_dataset)
    source = KeyStatisticsSource("world", 10)
    with pytest.raises(NullSpaceError, match="names no edited layer"):
        attach_null_space_projection(trainer, [], source, 0.02)
    with pytest.raises(NullSpaceError, match="has no edit_manifest.json"):
        attach_null_space(trainer, [1], str(tmp_path), 0.02)
    manifest_template(tmp_path, "ft", "base", ["c0"], [1], hyperparameters={"layers": [1], "lr": 1e-4})
    with pytest.raises(NullSpaceError, match="names no mom2_dataset"):
        attach_null_space(trainer, [1], str(tmp_path), 0.02)
    hyperparameters = json.loads((tmp_path / "edit_manifest.json").read_text())["hyperparameters"]
    assert KeyStatisticsSource.from_hyperparameters(
        {**hyperparameters, "mom2_dataset": "world", "mom2_n_samples": 50}, "here"
    ) == KeyStatisticsSource("world", 50, "float32")
    trainer.is_deepspeed_enabled = True
    with pytest.raises(NullSpaceError, match="DeepSpeed or FSDP"):
        attach_null_space_projection(trainer, [1], source, 0.02)


def test_an_empty_null_space_is_refused(tmp_path, tokenizer, agt_dataset):
    trainer = one_step_trainer(make_model(seed=1), tmp_path, tokenizer, agt_dataset)
    # 40 random 8-word texts: 320 keys span all 48 inputs, so every eigenvalue is well above 1e-12
    rng = random.Random(0)
    words = [w for w in WORDS if not w.startswith("<")]
    corpus = tmp_path / "wide.txt"
    corpus.write_text("\n".join(" ".join(rng.choices(words, k=8)) for _ in range(40)) + "\n")
    with pytest.raises(NullSpaceError, match="null space is empty"):
        attach_null_space_projection(
            trainer, [1], KeyStatisticsSource(str(corpus), 40), 1e-12, cache_dir=tmp_path / "stats"
        )


def test_config_fields(tmp_path):
    config = EditGRPOConfig(output_dir=str(tmp_path), **COMMON, alignment_layer=1)
    assert config.null_space_projection is False and config.null_space_threshold == 2e-2
    with pytest.raises(ValueError, match="null_space_threshold must be a finite number > 0, got 0"):
        EditGRPOConfig(output_dir=str(tmp_path), **COMMON, alignment_layer=1, null_space_threshold=0)
    with pytest.raises(ValueError, match="null_space_projection must be true or false"):
        EditGRPOConfig(output_dir=str(tmp_path), **COMMON, alignment_layer=1, null_space_projection="yes")


def test_the_edit_manifest_names_the_keys_corpus(tmp_path, tokenizer, agt_dataset, monkeypatch):
    """``attach_null_space`` (what ``build_trainer`` calls) reads mom2_dataset and mom2_n_samples from the
    manifest and projects the down_proj of every layer it is given."""
    monkeypatch.setenv("EDIT_GRPO_CACHE", str(tmp_path / "cache"))
    corpus = tmp_path / "preserved.txt"
    corpus.write_text("\n".join(PRESERVED) + "\n")
    hyperparameters = {"layers": LAYERS, "mom2_dataset": str(corpus), "mom2_n_samples": 3}
    manifest_template(tmp_path, "memit", "base", ["c0"], LAYERS, hyperparameters=hyperparameters)
    model = make_model(seed=1)
    trainer = one_step_trainer(model, tmp_path, tokenizer, agt_dataset)
    callback = attach_null_space(trainer, LAYERS, str(tmp_path), 1e-9)
    assert callback in trainer.callback_handler.callbacks
    projected = [weight for weight, _ in callback.weights]
    expected = [model.model.layers[layer].mlp.down_proj.weight for layer in LAYERS]
    assert len(projected) == len(expected) and all(a is b for a, b in zip(projected, expected, strict=True))
    # three texts of five words: 15 keys, so at least 48 - 15 free directions per layer, and no more than 48
    for _, projector in callback.weights:
        assert 33 <= round(projector.trace().item()) < 48
    (cached,) = (tmp_path / "cache" / "stats").glob("*/*/layer1-n3-float32.pt")
    assert cached.is_file()
