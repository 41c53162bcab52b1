"""The checks before the first stage: a wrong setting is refused in seconds, with nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edit_grpo_trl.pipeline import Pipeline
from edit_grpo_trl.recipe import RecipeError, load_recipe
from edit_grpo_trl.testing import save_tiny_model, texts_of_files

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
RECIPE = ROOT / "recipes" / "qwen3-8b" / "rome.yaml"
DATA = FIXTURES / "easyedit_flat.json"


@pytest.fixture(scope="module")
def tiny_qwen3(tmp_path_factory) -> Path:
    texts = texts_of_files(sorted(FIXTURES.rglob("*.json")))
    return save_tiny_model(tmp_path_factory.mktemp("model") / "qwen3", "qwen3", texts)


def recipe(model: Path, run: Path, **sections):
    overrides = {
        "model": {"model_name_or_path": str(model)},
        "data": {"source": str(DATA)},
        "editor": {"overrides": {"layers": [1]}},
        "output_dir": str(run),
    }
    for name, values in sections.items():
        overrides[name] = {**overrides.get(name, {}), **values} if isinstance(values, dict) else values
    return load_recipe(RECIPE, overrides)


def refused(model: Path, run: Path, **sections) -> str:
    with pytest.raises(RecipeError) as error:
        Pipeline(recipe(model, run, **sections))
    assert not run.exists() or not any(run.iterdir()), "a refused run wrote something"
    return str(error.value)


def test_a_fitting_recipe_passes_and_resolves_the_alignment_layer(tiny_qwen3, tmp_path):
    pipeline = Pipeline(recipe(tiny_qwen3, tmp_path / "run"))
    assert pipeline.preflight.alignment_layer == 1 and pipeline.preflight.num_layers == 2
    assert not (tmp_path / "run").exists()  # checking writes nothing


def test_a_preset_written_for_another_depth_is_refused_before_stage_one(tiny_qwen3, tmp_path):
    message = refused(tiny_qwen3, tmp_path / "run", editor={"overrides": {}})
    assert "written for num_hidden_layers=36" in message and "editor.overrides.layers" in message


def test_a_layer_past_the_model_is_refused(tiny_qwen3, tmp_path):
    assert "layers" in refused(tiny_qwen3, tmp_path / "run", editor={"overrides": {"layers": [5]}})
    message = refused(tiny_qwen3, tmp_path / "run", training={"alignment_layer": 40})
    assert "alignment_layer=40 is past the model" in message
    message = refused(tiny_qwen3, tmp_path / "run", training={"alignment_module": "mlp.up_projection"})
    assert "no module 'mlp.up_projection'" in message and "down_proj" in message


def test_training_settings_out_of_range_are_named(tiny_qwen3, tmp_path):
    assert "num_generations must be a number >= 2, got 0" in refused(
        tiny_qwen3, tmp_path / "run", training={"num_generations": 0}
    )
    message = refused(tiny_qwen3, tmp_path / "run", training={"per_device_train_batch_size": 12})
    assert "not a whole number of cases of 6 prompts" in message


def test_lora_targets_must_exist(tiny_qwen3, tmp_path):
    message = refused(
        tiny_qwen3, tmp_path / "run", lora={"enabled": True, "target_modules": ["q_proj", "qkv"]}
    )
    assert "no module named 'qkv'" in message and "'q_proj'" not in message.split("qkv")[0]


def test_data_problems_are_named(tiny_qwen3, tmp_path):
    assert "absent.json" in refused(
        tiny_qwen3, tmp_path / "run", data={"source": str(tmp_path / "absent.json")}
    )
    message = refused(
        tiny_qwen3,
        tmp_path / "run",
        data={
            "train_prompts": {
                "sources": ["fields"],
                "fields": ["paraphrase_prompts"],
                "missing_fields": "error",
            }
        },
    )
    assert "paraphrase_prompts" in message
    message = refused(tiny_qwen3, tmp_path / "run", data={"train_prompts": {"sources": []}})
    assert "bring no training prompts" in message


def test_every_problem_is_listed_at_once(tiny_qwen3, tmp_path):
    message = refused(
        tiny_qwen3,
        tmp_path / "run",
        training={"alignment_layer": 40},
        lora={"enabled": True, "target_modules": ["qkv"]},
        data={"source": str(tmp_path / "absent.json")},
    )
    assert "3 problem(s)" in message


def test_a_chat_recipe_needs_a_chat_template(tiny_qwen3, tmp_path):
    model = tmp_path / "no-chat"
    save_tiny_model(model, "qwen3", texts_of_files([DATA]))
    config = json.loads((model / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    (model / "chat_template.jinja").unlink(missing_ok=True)
    assert "needs a tokenizer with a chat template" in refused(model, tmp_path / "run")


def test_an_earlier_run_is_left_as_it_was(tiny_qwen3, tmp_path):
    run = tmp_path / "run"
    (run / "stages").mkdir(parents=True)
    (run / "recipe.json").write_text('{"earlier": true}')
    with pytest.raises(RecipeError):
        Pipeline(recipe(tiny_qwen3, run, training={"num_generations": 0}))
    assert json.loads((run / "recipe.json").read_text()) == {"earlier": True}


def test_keep_known_needs_an_old_answer(tiny_qwen3, tmp_path):
    message = refused(
        tiny_qwen3, tmp_path / "run", data={"source": str(FIXTURES / "qaedit.json"), "keep_known": True}
    )
    assert "no old answer to check the model against" in message


def test_a_locality_loss_needs_training_locality_probes(tiny_qwen3, tmp_path):
    message = refused(tiny_qwen3, tmp_path / "run", training={"locality_coef": 1.0})
    assert "training.locality_coef" in message and "locality_holdout_share" in message
    held_out = {"locality_holdout_share": 0.5}
    Pipeline(recipe(tiny_qwen3, tmp_path / "ok", training={"locality_coef": 1.0}, data=held_out))
    message = refused(
        tiny_qwen3,
        tmp_path / "none",
        training={"locality_coef": 1.0},
        data={**held_out, "locality_pool_size": 0},
    )
    assert "data.locality_pool_size" in message


def test_a_wise_model_refuses_lora_and_a_train_scope(tiny_qwen3, tmp_path):
    # (training.use_vllm is refused too; without vllm installed, the missing import is refused first)
    message = refused(
        tiny_qwen3,
        tmp_path / "run",
        editor={"name": "wise", "hparams": None},
        lora={"enabled": True},
        training={"train_scope": "edited_layers"},
    )
    assert "lora.enabled: a WISE model" in message
    assert "training.train_scope: a WISE model" in message
    # LoRA on a ROME run is not refused for WISE's reasons
    Pipeline(recipe(tiny_qwen3, tmp_path / "rome", lora={"enabled": True}))


def test_early_stop_is_refused_for_sft_only(tiny_qwen3, tmp_path):
    message = refused(tiny_qwen3, tmp_path / "run", refinement="sft", training={"early_stop_reward": 0.9})
    assert "training.early_stop_reward: stops on the sampled anchor" in message
    Pipeline(recipe(tiny_qwen3, tmp_path / "grpo", refinement="grpo", training={"early_stop_reward": 0.9}))
    assert "early_stop_reward is a share" in refused(
        tiny_qwen3, tmp_path / "run", training={"early_stop_reward": 2}
    )


def test_null_space_projection_is_refused_where_it_cannot_work(tiny_qwen3, tmp_path, monkeypatch):
    on = {"null_space_projection": True}
    Pipeline(recipe(tiny_qwen3, tmp_path / "rome", training=on))  # ROME names its key-statistics corpus
    message = refused(tiny_qwen3, tmp_path / "run", training=on, lora={"enabled": True})
    assert "training.null_space_projection: a LoRA update" in message
    message = refused(tiny_qwen3, tmp_path / "run", training=on, editor={"name": "none"})
    assert "training.null_space_projection: there is no stage-1 edit" in message
    message = refused(tiny_qwen3, tmp_path / "run", training=on, editor={"name": "ft", "hparams": None})
    assert "editor 'ft' computes no key statistics" in message
    message = refused(tiny_qwen3, tmp_path / "run", training=on, editor={"name": "wise", "hparams": None})
    assert "training.null_space_projection: a WISE model" in message
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    assert "under deepspeed" in refused(tiny_qwen3, tmp_path / "run", training=on)
    Pipeline(recipe(tiny_qwen3, tmp_path / "off"))  # the switch off: DeepSpeed is none of its business
