"""Every shipped Hub recipe fits a model of its architecture, and runs end to end on every real data format.

A recipe runs as a user would run it on their own machine, with only the model (a tiny model of the recipe's
architecture, with a byte-level BPE tokenizer, pretrained for seconds on the fixture text), the data source,
the editor's layer list and the step count overridden. One more override is forced by the sandbox: the
key-statistics corpus of MEMIT and AlphaEdit (Wikipedia, from the Hub) becomes a local text file.

The twelve recipes take the seven data formats in turn, so every format, editor and architecture is
covered; each run costs seconds to a minute on two CPU cores.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch

from edit_grpo_trl.data.cases import ProbeKind, load_cases
from edit_grpo_trl.pipeline import STAGES, run_pipeline
from edit_grpo_trl.recipe import load_recipe
from edit_grpo_trl.testing import save_tiny_model, texts_of_files

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
ARCHITECTURE = {"qwen3-8b": "qwen3", "qwen2.5-7b": "qwen2", "llama3-8b": "llama"}
# The large-model recipes (the SmolLM2 recipes run the real model: tests/test_models.py).
HUB_RECIPES = sorted(path for name in ARCHITECTURE for path in (ROOT / "recipes" / name).glob("*.yaml"))
DATA_FILES = {
    "knowedit-zsre": FIXTURES / "knowedit" / "ZsRE" / "ZsRE-test-all.json",
    "knowedit-counterfact": FIXTURES / "knowedit" / "wiki_counterfact" / "test_cf.json",
    "knowedit-recent": FIXTURES / "knowedit" / "wiki_recent" / "recent_test.json",
    "knowedit-wikibio": FIXTURES / "knowedit" / "WikiBio" / "wikibio-test-all.json",
    "easyedit-flat": FIXTURES / "easyedit_flat.json",
    "zsre-mend": FIXTURES / "zsre_mend.json",
    "qaedit": FIXTURES / "qaedit.json",
}
# The tiny models have 2 decoder layers: one-layer editors write the last, MEMIT-style ranges both.
LAYERS = {"rome": [1], "ft": [1], "memit": [0, 1], "alphaedit": [0, 1]}
RUNS = [
    (f"{path.parent.name}/{path.stem}", data)
    for path, data in zip(HUB_RECIPES, itertools.cycle(DATA_FILES), strict=False)
]


@pytest.fixture(scope="module")
def fixture_texts() -> list[str]:
    return texts_of_files(sorted(FIXTURES.rglob("*.json")))


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory, fixture_texts) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {
        # Pretrained on the fixture text for a few seconds, so that its generations stop as a real model's do.
        arch: save_tiny_model(root / arch, arch, fixture_texts, pretrain_steps=200)
        for arch in sorted(set(ARCHITECTURE.values()))
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, fixture_texts) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "fixture-text.txt"
    path.write_text("\n".join(" ".join(text.split()) for text in fixture_texts if len(text.split()) > 3))
    return path


def test_runs_cover_every_recipe_format_editor_and_architecture():
    assert len(HUB_RECIPES) == 12 == len({name for name, _ in RUNS})
    assert {data for _, data in RUNS} == set(DATA_FILES)
    assert {name.split("/")[1] for name, _ in RUNS} == set(LAYERS)
    assert {ARCHITECTURE[name.split("/")[0]] for name, _ in RUNS} == set(ARCHITECTURE.values())


def overrides_for(
    recipe_path: Path, data_file: Path, models: dict[str, Path], corpus: Path, run: Path
) -> dict:
    editor = recipe_path.stem
    overrides = {
        "model": {"model_name_or_path": str(models[ARCHITECTURE[recipe_path.parent.name]])},
        "data": {"source": str(data_file)},
        "editor": {"overrides": {"layers": LAYERS[editor]}},
        "training": {"max_steps": 2},
        "output_dir": str(run),
    }
    if editor in ("memit", "alphaedit"):
        overrides["editor"]["overrides"] |= {"mom2_dataset": str(corpus), "mom2_n_samples": 200}
    return overrides


@pytest.mark.parametrize(("recipe_name", "data_name"), RUNS, ids=[f"{r}-{d}" for r, d in RUNS])
def test_shipped_recipe_reaches_the_report(
    recipe_name, data_name, tiny_models, corpus, tmp_path, monkeypatch
):
    monkeypatch.setenv("WANDB_MODE", "disabled")  # the recipes log to W&B; no account here
    recipe_path = ROOT / "recipes" / f"{recipe_name}.yaml"
    editor = recipe_path.stem
    overrides = overrides_for(recipe_path, DATA_FILES[data_name], tiny_models, corpus, tmp_path / "run")
    recipe = load_recipe(recipe_path, overrides)
    report = run_pipeline(recipe)

    run = tmp_path / "run"
    for stage in STAGES:
        assert (run / "stages" / f"{stage}.done.json").is_file(), stage
    assert set(report) == {"pre_edit", "post_edit", "post_refinement"}
    assert (run / "report" / "report.md").is_file() and (run / "stage2" / "final" / "config.json").is_file()
    train = json.loads((run / "stages" / "train.done.json").read_text())
    assert train["global_step"] == 2
    # The training pool was built from the recipe's sources, and never holds an evaluation probe.
    agt = json.loads((run / "stages" / "agt_data.done.json").read_text())
    assert agt["train_prompts"]["kept"]["templates"] > 0 and agt["rows"] > 0
    evaluation = {
        probe.prompt
        for case in load_cases(run / "cases.jsonl")
        for probe in case.probes
        if probe.kind != ProbeKind.TRAIN_GENERALIZATION
    }
    pool = [json.loads(line) for line in (run / "train_prompts.jsonl").read_text().splitlines()]
    trained = {prompt for row in pool for prompt in row["prompts"]}
    assert trained and not trained & evaluation
    # Stage 2 took its alignment layer from what stage 1 wrote, not from a number in the recipe.
    args = torch.load(run / "stage2" / "final" / "training_args.bin", weights_only=False)
    assert args.alignment_layer == max(LAYERS[editor])
