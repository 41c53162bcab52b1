"""Edited checkpoints: Hugging Face folders with the tokenizer and an ``edit_manifest.json``.

A checkpoint is complete or absent: it is written under a temporary name beside the destination and renamed
at the end, so a crash mid-save leaves nothing that looks like a model. It is never written over the source
model, nor over a non-empty folder unless ``overwrite`` is given.

A checkpoint another tool edited (EasyEdit, say) is accepted as stage-1 input once the user puts an
``edit_manifest.json`` in it; :func:`manifest_template` writes one to fill in.

A WISE checkpoint is such a folder whose weights also hold the side memory and the router threshold of the
routed projection (``<down_proj>.side.weight``, ``<down_proj>.router_threshold``), named in the manifest's
``wise`` section. :func:`load_edited_model` rebuilds the routed model from any checkpoint (and loads every
other folder as ``from_pretrained`` does); a plain ``from_pretrained`` of a WISE folder gives the main memory
only, i.e. the unedited model (transformers warns that those weights were not used).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

MANIFEST_NAME = "edit_manifest.json"
MANIFEST_VERSION = 1
# Files a source model folder may carry that describe its data rather than its weights (the knowledge
# world's facts): copied along so the edited checkpoint loads the same way.
_CARRIED_FILES = ("world.json",)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written or read as asked."""


@dataclass
class EditManifest:
    """What stage 1 did to a model. ``tool`` is ``edit-grpo-trl`` or the outside tool's name."""

    editor: str
    source_model: str
    case_ids: list[str]
    layers: list[int]
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    update_norms: dict[str, float] = field(default_factory=dict)
    mode: str | None = None
    seconds: float | None = None
    tool: str = "edit-grpo-trl"
    created: str = ""
    # WISE only: the side memory and router state (state-dict names) and the alignment module for stage 2.
    wise: dict[str, Any] | None = None
    format_version: int = MANIFEST_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_record(cls, record, source_model: str) -> EditManifest:
        """From an :class:`~edit_grpo_trl.editors.base.EditRecord`."""
        return cls(
            editor=record.editor,
            source_model=str(source_model),
            case_ids=list(record.case_ids),
            layers=list(record.layers),
            hyperparameters=dict(record.hparams),
            update_norms=dict(record.update_norms),
            mode=record.mode,
            seconds=record.seconds,
            created=time.strftime("%Y-%m-%dT%H:%M:%S"),
        )

    @classmethod
    def from_dict(cls, data: Any, where: str = MANIFEST_NAME) -> EditManifest:
        """Validate field by field; every problem is named with the file and the field."""
        if not isinstance(data, dict):
            raise CheckpointError(f"{where}: the manifest must be a JSON object, got {type(data).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise CheckpointError(f"{where}: unknown field(s) {unknown}; valid fields: {sorted(fields)}")
        required = [
            name
            for name, f in fields.items()
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        missing = [name for name in required if name not in data]
        if missing:
            raise CheckpointError(
                f"{where}: missing required field(s) {missing}; a manifest needs {required} "
                "(editor name, the model it was edited from, the edited case ids, the edited layers)"
            )
        problems = []
        if not isinstance(data["editor"], str) or not data["editor"]:
            problems.append(f"'editor' must be a non-empty string, got {data['editor']!r}")
        if not isinstance(data["source_model"], str) or not data["source_model"]:
            problems.append(f"'source_model' must be a non-empty string, got {data['source_model']!r}")
        case_ids = data["case_ids"]
        if not isinstance(case_ids, list) or not all(isinstance(c, str) and c for c in case_ids):
            problems.append(f"'case_ids' must be a list of non-empty strings, got {case_ids!r}")
        layers = data["layers"]
        if not isinstance(layers, list) or not all(
            isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in layers
        ):
            problems.append(f"'layers' must be a list of non-negative integers, got {layers!r}")
        for name in ("hyperparameters", "update_norms"):
            if name in data and not isinstance(data[name], dict):
                problems.append(f"'{name}' must be an object, got {type(data[name]).__name__}")
        if problems:
            raise CheckpointError(f"{where}: " + "; ".join(problems))
        return cls(**data)


def read_manifest(folder: str | Path) -> EditManifest:
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        raise CheckpointError(
            f"no {MANIFEST_NAME} in {folder}; a checkpoint edited by another tool needs one: write it with "
            "edit_grpo_trl.editors.checkpoint.manifest_template(folder, ...) and fill it in"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path}: not valid JSON ({error})") from error
    return EditManifest.from_dict(data, where=str(path))


def _same_folder(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def save_edited(
    model,
    tokenizer,
    manifest: EditManifest,
    output_dir: str | Path,
    source_model: str | Path | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``model``, ``tokenizer`` and the manifest to ``output_dir`` atomically; return the folder."""
    output_dir = Path(output_dir)
    source = Path(source_model if source_model is not None else manifest.source_model)
    if _same_folder(output_dir, source) or (
        source.is_dir() and output_dir.resolve().is_relative_to(source.resolve())
    ):
        raise CheckpointError(f"refusing to write the edited model into its source model folder {source}")
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())) and not overwrite:
        raise CheckpointError(f"{output_dir} exists and is not empty; pass overwrite=True to replace it")
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    temporary = output_dir.with_name(f".{output_dir.name}.tmp-{uuid.uuid4().hex[:8]}")
    manifest = _with_wise_section(model, manifest)
    try:
        model.save_pretrained(temporary)
        tokenizer.save_pretrained(temporary)
        for name in _CARRIED_FILES:
            if (source / name).is_file():
                shutil.copy2(source / name, temporary / name)
        (temporary / MANIFEST_NAME).write_text(json.dumps(manifest.to_dict(), indent=1), encoding="utf-8")
        if output_dir.exists():
            # Swap: the old folder leaves only once the new one is complete.
            retired = output_dir.with_name(f".{output_dir.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(output_dir, retired)
            os.replace(temporary, output_dir)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(temporary, output_dir)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    logger.info("edited checkpoint written to %s", output_dir)
    return output_dir


@dataclass
class EditedCheckpoint:
    """A stage-1 checkpoint folder and its validated manifest."""

    path: Path
    manifest: EditManifest

    def load(self, **model_kwargs):
        """``(model, tokenizer)`` from the folder."""
        from transformers import AutoTokenizer

        return load_edited_model(self.path, **model_kwargs), AutoTokenizer.from_pretrained(self.path)

    def __str__(self) -> str:
        return f"{self.path} ({self.manifest.editor} from {self.manifest.source_model}, {len(self.manifest.case_ids)} case(s), layers {self.manifest.layers})"


def load_edited(path: str | Path) -> EditedCheckpoint:
    """Check a stage-1 checkpoint (ours or another tool's): HF config, weights, tokenizer, valid manifest."""
    folder = Path(path)
    if not folder.is_dir():
        raise CheckpointError(f"no edited checkpoint folder at {folder}")
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"{folder} has no config.json; is it a Hugging Face model folder?")
    weights = list(folder.glob("*.safetensors")) + list(folder.glob("*.bin"))
    if not weights:
        raise CheckpointError(f"{folder} has no weight files (*.safetensors or *.bin)")
    if not any((folder / name).is_file() for name in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        raise CheckpointError(f"{folder} has no tokenizer files; save the tokenizer with the edited model")
    return EditedCheckpoint(folder, read_manifest(folder))


def manifest_template(
    folder: str | Path, editor: str, source_model: str, case_ids: list[str], layers: list[int], **extra: Any
) -> Path:
    """Write ``edit_manifest.json`` for a checkpoint edited elsewhere (``tool`` defaults to ``external``)."""
    manifest = EditManifest(
        editor=editor,
        source_model=source_model,
        case_ids=list(case_ids),
        layers=list(layers),
        tool=extra.pop("tool", "external"),
        created=time.strftime("%Y-%m-%dT%H:%M:%S"),
        **extra,
    )
    EditManifest.from_dict(manifest.to_dict())  # same checks as on reading
    path = Path(folder) / MANIFEST_NAME
    path.write_text(json.dumps(manifest.to_dict(), indent=1), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------------------------------------
# WISE: the routed side memory travels inside the weights and is rebuilt on loading


def _with_wise_section(model, manifest: EditManifest) -> EditManifest:
    from edit_grpo_trl.editors.wise import SIDE_SUFFIX, THRESHOLD_SUFFIX, side_module_suffix, wise_modules

    modules = wise_modules(model)
    if not modules or manifest.wise is not None:
        return manifest
    return dataclasses.replace(
        manifest,
        wise={
            "modules": sorted(modules),
            "side_memory": [f"{name}.{SIDE_SUFFIX}" for name in sorted(modules)],
            "router_threshold": [f"{name}.{THRESHOLD_SUFFIX}" for name in sorted(modules)],
            "thresholds": {name: float(module.router_threshold) for name, module in sorted(modules.items())},
            "alignment_module": side_module_suffix(sorted(modules)[0]),
            "load_with": "edit_grpo_trl.editors.checkpoint.load_edited_model",
        },
    )


def _weight_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.safetensors"))


def wise_state_in(path: str | Path) -> dict[str, Any]:
    """The WISE tensors (side memories, thresholds) stored in a model folder's weights; empty if none."""
    from safetensors import safe_open

    from edit_grpo_trl.editors.wise import SIDE_SUFFIX, THRESHOLD_SUFFIX

    folder = Path(path)
    state: dict[str, Any] = {}
    if not folder.is_dir():
        return state
    for file in _weight_files(folder):
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 - safe_open has keys(), no __iter__
                if key.endswith("." + SIDE_SUFFIX) or key.endswith("." + THRESHOLD_SUFFIX):
                    state[key] = handle.get_tensor(key)
    return state


def wise_manifest_section(path: str | Path) -> dict[str, Any] | None:
    """The manifest's ``wise`` section, or a minimal one for a folder whose weights hold a side memory."""
    folder = Path(path)
    if (folder / MANIFEST_NAME).is_file():
        section = read_manifest(folder).wise
        if section:
            return section
    state = wise_state_in(folder)
    if state:
        from edit_grpo_trl.editors.wise import SIDE_SUFFIX, side_module_suffix

        name = sorted(key for key in state if key.endswith("." + SIDE_SUFFIX))[0][: -len(SIDE_SUFFIX) - 1]
        return {"alignment_module": side_module_suffix(name)}
    return None


def load_edited_model(path: str | Path, **from_pretrained_kwargs):
    """The model in ``path`` as ``AutoModelForCausalLM.from_pretrained`` loads it, with any WISE side memory.

    The one loader for edited checkpoints: a WISE folder gets its routed projections back (side memory and
    router threshold from its weights; ``stage2_train_router`` and ``router_score`` from its manifest); any
    other folder or Hub id is exactly ``from_pretrained``.
    """
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    state = wise_state_in(path)
    if not state:
        return AutoModelForCausalLM.from_pretrained(path, **from_pretrained_kwargs)
    from edit_grpo_trl.editors.wise import restore_wise

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the side-memory keys are "unused" by the plain model: expected here
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **from_pretrained_kwargs)
    finally:
        hf_logging.set_verbosity(verbosity)
    train_router, router_score = False, "mean"
    if (Path(path) / MANIFEST_NAME).is_file():
        hyperparameters = read_manifest(path).hyperparameters
        train_router = bool(hyperparameters.get("stage2_train_router", False))
        router_score = str(hyperparameters.get("router_score", "mean"))
    names = restore_wise(model, state, train_router=train_router, router_score=router_score)
    logger.info("WISE checkpoint %s: side memory rebuilt at %s", path, ", ".join(names))
    return model
