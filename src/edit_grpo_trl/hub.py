"""The refined model as a self-describing folder, and its opt-in push to the Hugging Face Hub.

After the report, ``stage2/final`` gets a model card (``README.md``: base model, editor, the edits, the
stage-2 settings, the report's headline table), the edit manifest of stage 1, the run's ``recipe.json``
and the report (``report.md``, ``report.json``). With ``training.push_to_hub: true`` and
``training.hub_model_id`` (TRL's own keys), that folder, the refined model, is pushed to that repository;
the trainer itself pushes nothing (its checkpoints are not the result).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edit_grpo_trl.recipe import RecipeError

logger = logging.getLogger(__name__)

CARD_NAME = "README.md"
EDITS_SHOWN = 20
TRAINING_KEYS = (
    "learning_rate",
    "max_steps",
    "num_train_epochs",
    "num_generations",
    "per_device_train_batch_size",
    "beta",
    "alignment_coef",
    "seed",
)


@dataclass(frozen=True)
class HubTarget:
    repo_id: str
    private: bool | None = None
    token: str | None = None


def hub_target(training: Mapping[str, Any]) -> HubTarget | None:
    """Where the refined model goes, from the recipe's ``training`` section; None when not asked to push."""
    if not training.get("push_to_hub"):
        return None
    repo_id = training.get("hub_model_id")
    if not repo_id:
        raise RecipeError(
            "training.push_to_hub is true but training.hub_model_id names no repository: set it to "
            "<user or organization>/<name>; the refined model (stage2/final) is pushed there after the report"
        )
    return HubTarget(str(repo_id), training.get("hub_private_repo"), training.get("hub_token"))


def _hub_id(name: str) -> str | None:
    """A model name the card's ``base_model`` can hold: a Hub id, not a local folder or a world."""
    if ":" in name or Path(name).exists() or name.count("/") != 1:
        return None
    return name


def model_card(
    base_model: str,
    editor: str,
    refinement: str,
    cases: Sequence[Any],
    training: Mapping[str, Any],
    lora: bool,
    headline: str,
) -> str:
    """The model card text (Hugging Face front matter, then Markdown)."""
    tags = ["edit-grpo", "knowledge-editing", editor, refinement, "trl"]
    front = ["---", "library_name: transformers"]
    if _hub_id(base_model):
        front.append(f"base_model: {_hub_id(base_model)}")
    front += ["tags:", *(f"- {tag}" for tag in tags), "---", ""]
    lines = [
        "# Edit-GRPO refined model",
        "",
        f"`{base_model}` with {len(cases)} fact(s) edited by **{editor}** (stage 1), then refined with "
        f"**{refinement}** (stage 2, on TRL) by edit-grpo-trl, so that the edits reach paraphrases and "
        "related questions while unrelated facts stay put.",
        "",
        "## Edits",
        "",
        "| subject | prompt | old | new |",
        "| --- | --- | --- | --- |",
    ]
    for case in cases[:EDITS_SHOWN]:
        cells = [case.subject, case.prompt, case.target_true or "-", case.new_object]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    if len(cases) > EDITS_SHOWN:
        lines.append(f"\n... and {len(cases) - EDITS_SHOWN} more (`edit_manifest.json` lists every case id).")
    lines += ["", "## Stage 2", ""]
    lines += [f"- {key}: {training[key]}" for key in TRAINING_KEYS if key in training]
    lines += [f"- LoRA: {'merged into the weights' if lora else 'no (full fine-tuning)'}", ""]
    lines += ["Every setting is in `recipe.json`.", "", "## Evaluation", "", headline, ""]
    lines += [
        "Percent (fluency: n-gram entropy x100), computed as EasyEdit does; the full table is in "
        "`report.md`.",
        "",
        "## Files",
        "",
        "- `edit_manifest.json`: what stage 1 changed (editor, layers, hyperparameters, case ids)",
        "- `recipe.json`: the run's recipe",
        "- `report.md`, `report.json`: the evaluation before editing, after it, and after refinement",
        "",
    ]
    return "\n".join(front + lines)


def complete_refined_folder(
    folder: Path,
    card: str,
    manifest: Path | None,
    recipe_file: Path,
    report_dir: Path,
) -> list[str]:
    """Write the card and copy the manifest, recipe and report into the refined model's folder."""
    folder = Path(folder)
    written = []
    (folder / CARD_NAME).write_text(card, encoding="utf-8")
    written.append(CARD_NAME)
    copies = [(recipe_file, "recipe.json"), (report_dir / "report.md", "report.md")]
    copies += [(report_dir / "report.json", "report.json")]
    if manifest is not None:
        copies.append((manifest, manifest.name))
    for source, name in copies:
        if Path(source).is_file():
            shutil.copyfile(source, folder / name)
            written.append(name)
    return written


def push_refined(folder: Path, target: HubTarget, api=None) -> str:
    """Push the refined model's folder to ``target.repo_id`` (created if absent); returns its address.

    ``api``: an object with ``huggingface_hub.HfApi``'s ``create_repo`` and ``upload_folder`` (a stand-in
    in tests); by default an ``HfApi`` with the recipe's token (or the logged-in one)."""
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=target.token)
    api.create_repo(repo_id=target.repo_id, private=target.private, exist_ok=True, repo_type="model")
    api.upload_folder(
        repo_id=target.repo_id,
        folder_path=str(folder),
        repo_type="model",
        commit_message="Edit-GRPO: refined model, model card, edit manifest, recipe and report",
    )
    address = f"https://huggingface.co/{target.repo_id}"
    logger.info("pushed %s to %s", folder, address)
    return address
