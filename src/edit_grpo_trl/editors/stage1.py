"""Stage 1 in one call: load a model, write the edit cases into it, save the edited checkpoint.

Everything that can be checked without weights is checked first (editor name, hyperparameters against the
model's config, the output folder), so a bad setting fails in a second rather than after the model loads.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from edit_grpo_trl.data.cases import EditCase, load_cases
from edit_grpo_trl.editors.arch import EditorConfigError
from edit_grpo_trl.editors.checkpoint import CheckpointError, EditManifest, load_edited_model, save_edited
from edit_grpo_trl.editors.presets import resolve_hparams
from edit_grpo_trl.editors.registry import editor_class
from edit_grpo_trl.editors.stats import load_key_statistics

logger = logging.getLogger(__name__)


def build_editor(
    name: str, hparams, model=None, tokenizer=None, model_dir=None, stats_dir=None, show_progress=True
):
    """An editor with its key statistics loaded (from the cache or computed over ``hparams.mom2_dataset``)."""
    cls = editor_class(name)
    editor = cls(hparams)
    layers = editor.statistics_layers()
    if layers:
        if model is None:
            raise EditorConfigError(f"{name} needs key statistics: pass the model to compute them")
        statistics = load_key_statistics(
            model,
            tokenizer,
            layers,
            hparams.mom2_dataset,
            hparams.mom2_n_samples,
            hparams.mom2_dtype,
            cache_dir=stats_dir,
            model_dir=model_dir,
            show_progress=show_progress,
        )
        editor = cls(hparams, statistics)
    return editor


def _check_output(output_dir: Path, model_path: str | Path, overwrite: bool) -> None:
    source = Path(model_path)
    if source.exists() and output_dir.resolve() == source.resolve():
        raise CheckpointError(f"output_dir {output_dir} is the source model's folder; pick another")
    if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
        raise CheckpointError(f"{output_dir} exists and is not empty; pass overwrite=True to replace it")


def run_stage1(
    model_path: str | Path,
    cases: Sequence[EditCase] | str | Path,
    editor: str = "rome",
    hparams: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    mode: str = "sequential",
    output_dir: str | Path = "runs/stage1/model",
    device: str | None = None,
    batch_size: int | None = None,
    dtype: str = "float32",
    stats_dir: str | Path | None = None,
    overwrite: bool = False,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Edit the model at ``model_path`` with ``cases`` and write the checkpoint to ``output_dir``.

    ``hparams``: a YAML path, a packaged preset (``qwen3-8b``, ``world-tiny``, ...) or None for the model's
    default; ``overrides`` replace single fields. ``mode``: ``sequential`` or ``batch`` (``batch_size`` cases per
    update, all when None). Returns the checkpoint folder, the hyperparameters' source and the edit record.
    """
    from transformers import AutoConfig, AutoTokenizer

    from edit_grpo_trl.loading import source_dtype

    if isinstance(cases, (str, Path)):
        cases = load_cases(cases)
    cases = list(cases)
    if not cases:
        raise EditorConfigError("no edit cases given to stage 1")
    output_dir = Path(output_dir)
    config = AutoConfig.from_pretrained(model_path)
    settings = resolve_hparams(editor, config, hparams, overrides, model_dir=model_path)
    if mode == "batch" and not editor_class(settings.editor).supports_batch:
        raise EditorConfigError(f"{settings.editor} has no batch mode; use mode='sequential'")
    _check_output(output_dir, model_path, overwrite)

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_edited_model(model_path, dtype=getattr(torch, dtype)).to(
        device
    )  # a WISE input keeps its side memory
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model.eval()
    edit = build_editor(
        settings.editor, settings.hparams, model, tokenizer, model_path, stats_dir, show_progress
    )
    result = edit.edit(model, tokenizer, cases, mode=mode, batch_size=batch_size, show_progress=show_progress)
    manifest = EditManifest.from_record(result.record, source_model=str(model_path))
    result.model.to(source_dtype(config) or result.model.dtype)  # saved as the source model was (bf16, ...)
    save_edited(result.model, tokenizer, manifest, output_dir, source_model=model_path, overwrite=overwrite)
    return {
        "output_dir": str(output_dir),
        "editor": settings.editor,
        "hparams_source": settings.source,
        "cases": len(cases),
        "seconds": result.record.seconds,
        "seconds_per_case": result.record.seconds_per_case,
        "update_norms": result.record.update_norms,
        "layers": result.record.layers,
    }
