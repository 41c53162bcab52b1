"""The refined model's folder (model card, manifest, recipe, report) and its opt-in push, against a local
stand-in for the Hub (nothing here reaches the network)."""

import shutil
from pathlib import Path

import pytest

from edit_grpo_trl.data.cases import EditCase
from edit_grpo_trl.hub import HubTarget, complete_refined_folder, hub_target, model_card, push_refined
from edit_grpo_trl.recipe import RecipeError, load_recipe
from edit_grpo_trl.stage2.training import training_settings


class LocalHub:
    """``HfApi``'s create_repo and upload_folder, into a folder on this machine."""

    def __init__(self, root: Path):
        self.root = root
        self.calls = []

    def create_repo(self, repo_id, private=None, exist_ok=False, repo_type="model"):
        self.calls.append(("create_repo", repo_id, private))
        (self.root / repo_id).mkdir(parents=True, exist_ok=exist_ok)

    def upload_folder(self, repo_id, folder_path, repo_type="model", commit_message=""):
        self.calls.append(("upload_folder", repo_id, commit_message))
        shutil.copytree(folder_path, self.root / repo_id, dirs_exist_ok=True)


CASES = [EditCase(f"c{i}", f"Ana{i}", f"Ana{i} was born in", ("Paris",), "Rome") for i in range(25)]


def test_model_card_names_the_base_editor_edits_and_report():
    card = model_card(
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        "rome",
        "edit_grpo",
        CASES,
        {"learning_rate": 1e-5, "max_steps": 24, "report_to": "none"},
        lora=False,
        headline="| metric | pre-edit |\n| --- | --- |\n| Edit Succ. | 0.0 |",
    )
    assert card.startswith(
        "---\nlibrary_name: transformers\nbase_model: HuggingFaceTB/SmolLM2-135M-Instruct\n"
    )
    assert "- rome\n" in card and "25 fact(s) edited by **rome**" in card
    assert "| Ana0 | Ana0 was born in | Rome | Paris |" in card and "... and 5 more" in card
    assert "- learning_rate: 1e-05" in card and "report_to" not in card
    assert "| Edit Succ. | 0.0 |" in card
    # a knowledge world or a local folder is no Hub id: no base_model line
    assert "base_model" not in model_card("world:tiny", "rome", "sft", CASES[:1], {}, True, "")


def test_refined_folder_is_completed_and_pushed_to_a_stand_in(tmp_path):
    folder = tmp_path / "final"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    report = tmp_path / "report"
    report.mkdir()
    (report / "report.md").write_text("# report")
    (report / "report.json").write_text("{}")
    (tmp_path / "recipe.json").write_text("{}")
    (tmp_path / "edit_manifest.json").write_text("{}")
    files = complete_refined_folder(
        folder, "card", tmp_path / "edit_manifest.json", tmp_path / "recipe.json", report
    )
    assert sorted(files) == ["README.md", "edit_manifest.json", "recipe.json", "report.json", "report.md"]
    hub = LocalHub(tmp_path / "hub")
    address = push_refined(folder, HubTarget("me/refined", private=True), api=hub)
    assert address == "https://huggingface.co/me/refined"
    assert hub.calls[0] == ("create_repo", "me/refined", True)
    assert sorted(p.name for p in (tmp_path / "hub" / "me" / "refined").iterdir()) == sorted(
        [*files, "config.json"]
    )


def test_push_needs_a_repository_name_and_the_trainer_pushes_no_checkpoint(tmp_path):
    assert hub_target({"push_to_hub": False}) is None
    with pytest.raises(RecipeError, match="hub_model_id names no repository"):
        hub_target({"push_to_hub": True})
    recipe = load_recipe(None, ["--training.push_to_hub", "true", "--training.hub_model_id", "me/refined"])
    assert training_settings(recipe)["push_to_hub"] is False
    assert hub_target(recipe.training) == HubTarget("me/refined")
