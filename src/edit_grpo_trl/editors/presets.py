"""Editor hyperparameters from YAML: packaged presets per editor and model, or a user's file.

A preset lives at ``editors/hparams/<editor>/<model>.yaml`` and reads::

    editor: rome
    model:                 # the model the settings were chosen for; checked against its config
      model_type: qwen3
      num_hidden_layers: 36
      hidden_size: 4096
    hparams:               # the editor's typed hyperparameters (EasyEdit's field names)
      layers: [5]
      ...

:func:`resolve_hparams` picks the preset (by name, path, or the model's own config), applies overrides and
validates every layer and module name against the model's config before any weight is loaded.

EasyEdit's own flat hparams files (``alg_name: ROME`` and the fields) are read too. Every key in them is
either honoured or refused by name: the editor's fields are used as they are; the keys EasyEdit needs for
its own bookkeeping are listed in :data:`EASYEDIT_KEYS` with what this project does in their place, and a
value that would make the edit differ from what EasyEdit does (FT-L's ``objective_optimization:
prompt_last``, ``batch_size`` above 1, ``fp16: true``, ...) is refused with a message that names the key.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from edit_grpo_trl.editors.arch import EditorConfigError, architecture_for, num_layers, validate_template
from edit_grpo_trl.editors.base import EditorHParams
from edit_grpo_trl.editors.registry import canonical_editor_name, editor_class

logger = logging.getLogger(__name__)

# Config fields a preset may pin, and the names they go by in GPT-2-style configs.
_MODEL_FIELDS = {
    "num_hidden_layers": ("num_hidden_layers", "n_layer"),
    "hidden_size": ("hidden_size", "n_embd"),
}


@dataclass
class HParamsFile:
    editor: str
    hparams: EditorHParams
    model: dict[str, Any]
    source: str
    # EasyEdit module templates that are no field of this editor, checked against the model's config
    module_templates: dict[str, str] = field(default_factory=dict)


def _anything(value: Any) -> bool:
    return True


def _off(value: Any) -> bool:
    return value in (False, None, 0, "false", "False")


def _on(value: Any) -> bool:
    return value in (True, 1, "true", "True")


# EasyEdit keys that are not a field of the editor here: (which values behave as EasyEdit would, what this
# project does in the key's place). Editors that have the key as a field honour it as a field instead.
EASYEDIT_KEYS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "alg_name": (_anything, "names the editor; checked against editor.name"),
    "model_name": (_anything, "the model edited is the recipe's model.model_name_or_path"),
    "device": (_anything, "the recipe's model.device places the model"),
    "stats_dir": (_anything, "key statistics are computed once and cached in the project cache"),
    "P_loc": (_anything, "AlphaEdit's null-space projector is computed from the cached key statistics"),
    "max_length": (_anything, "EasyEdit's evaluation truncation; prompts here are never truncated"),
    "kl_factor": (_anything, "EasyEdit's FT declares it but never uses it"),
    "ln_f_module": (_anything, "the model's final norm, found from its architecture"),
    "lm_head_module": (_anything, "the model's output head, found from its architecture"),
    "attn_module_tmp": (_anything, "checked against the model's attention modules (no editor here uses it)"),
    "layer_module_tmp": (_anything, "checked against the model's layers (FT finds its layer by name)"),
    "mlp_module_tmp": (_anything, "checked against the model's MLPs (FT finds its layer by name)"),
    "model_parallel": (_off, "stage 1 runs on one device; set it to false or remove it"),
    "fp16": (
        _off,
        "stage 1 edits in float32 here (EasyEdit's fp16 loads the model in half precision); "
        "set it to false or remove it",
    ),
    "batch_size": (
        lambda value: value == 1,
        "cases are edited one at a time (editor.mode: sequential) or all in one update (editor.mode: batch), "
        "not in chunks; set it to 1 or remove it and choose editor.mode",
    ),
    "layer_selection": (
        lambda value: value == "all",
        "the layers edited are exactly 'layers'; EasyEdit's 'random' selection is not implemented",
    ),
    "mom2_adjustment": (
        _on,
        "MEMIT and AlphaEdit here always solve with the key second moment, as EasyEdit's mom2_adjustment: "
        "true does",
    ),
    "objective_optimization": (
        lambda value: value == "target_new",
        "FT here is FT-M (objective_optimization: target_new, the loss on the target tokens); FT-L "
        "(prompt_last) is not implemented",
    ),
}
_TEMPLATE_KEYS = ("attn_module_tmp", "layer_module_tmp", "mlp_module_tmp")


def _easyedit_extras(data: Mapping[str, Any], fields: set[str], path: Path) -> tuple[dict, dict]:
    """Split a flat EasyEdit file into the editor's fields and the module templates to check; refuse,
    naming it, every other key whose value would make the edit differ from EasyEdit's."""
    kept, templates, accepted = {}, {}, []
    for key, value in data.items():
        if key in fields:
            kept[key] = value
            continue
        if key not in EASYEDIT_KEYS:
            kept[key] = value  # the editor's own check names it, with the valid fields
            continue
        fits, meaning = EASYEDIT_KEYS[key]
        if not fits(value):
            raise EditorConfigError(f"{path}: {key}: {value!r} is not supported: {meaning}")
        if key in _TEMPLATE_KEYS:
            templates[key] = str(value)
        accepted.append(f"{key} ({meaning})")
    if accepted:
        logger.info("%s: EasyEdit keys taken care of here: %s", path, "; ".join(accepted))
    return kept, templates


def preset_dir() -> Path:
    return Path(str(resources.files("edit_grpo_trl.editors") / "hparams"))


def preset_names(editor: str) -> list[str]:
    folder = preset_dir() / canonical_editor_name(editor)
    return sorted(path.stem for path in folder.glob("*.yaml"))


def _config_value(config, name: str):
    for attribute in _MODEL_FIELDS.get(name, (name,)):
        value = getattr(config, attribute, None)
        if value is not None:
            return value
    return None


def load_hparams_file(path: str | Path, editor: str | None = None) -> HParamsFile:
    """Read one hparams YAML (ours, with ``hparams:``; or a flat EasyEdit-style file)."""
    path = Path(path)
    if not path.is_file():
        raise EditorConfigError(f"no hparams file at {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise EditorConfigError(f"{path}: not valid YAML ({error})") from error
    if not isinstance(data, dict):
        raise EditorConfigError(f"{path}: expected a mapping at the top level")
    templates: dict[str, str] = {}
    if "hparams" in data:
        file_editor = data.get("editor")
        model = data.get("model") or {}
        fields = data["hparams"]
    else:  # EasyEdit's flat layout: alg_name plus the fields, and its own bookkeeping keys
        file_editor = data.get("alg_name")
        model = {}
        keep = set(editor_class(file_editor or editor or "").hparams_class.__dataclass_fields__)
        fields, templates = _easyedit_extras(data, keep, path)
    name = canonical_editor_name(editor or file_editor or "")
    if editor and file_editor and canonical_editor_name(file_editor) != name:
        raise EditorConfigError(f"{path}: the file is for editor {file_editor!r}, not {editor!r}")
    if not isinstance(fields, dict):
        raise EditorConfigError(f"{path}: 'hparams' must be a mapping")
    hparams = editor_class(name).hparams_class.from_dict(fields, source=str(path))
    return HParamsFile(
        editor=name, hparams=hparams, model=dict(model), source=str(path), module_templates=templates
    )


def check_model_block(hparams_file: HParamsFile, config, layers_chosen: bool = False) -> None:
    """The preset's ``model:`` block must match the config (type, depth, width).

    With ``layers_chosen`` (the user overrode ``layers`` for this model), another depth or width is only
    logged: the layers, the one setting tied to depth, are then checked against the model itself.
    """
    arch = architecture_for(config)
    for name, expected in hparams_file.model.items():
        if name == "name":
            continue
        actual = getattr(config, "model_type", None) if name == "model_type" else _config_value(config, name)
        if actual != expected:
            message = (
                f"{hparams_file.source}: written for {name}={expected!r}, but the model ({arch.family}, "
                f"{num_layers(config)} layers) has {name}={actual!r}"
            )
            if layers_chosen and name != "model_type":
                logger.warning("%s; using it with the layers you chose", message)
                continue
            raise EditorConfigError(
                f"{message}; pick a preset for this model, or set editor.overrides.layers"
            )


def default_preset(editor: str, config, model_dir: str | Path | None = None) -> str:
    """The packaged preset for this model: ``world-<size>`` for a knowledge world, else the config's match."""
    names = preset_names(editor)
    world_file = Path(model_dir) / "world.json" if model_dir is not None else None
    if world_file is not None and world_file.is_file():
        size = json.loads(world_file.read_text()).get("size")
        if f"world-{size}" in names:
            return f"world-{size}"
        raise EditorConfigError(f"no {editor} preset for the knowledge world size {size!r}; presets: {names}")
    for name in names:
        candidate = load_hparams_file(preset_dir() / canonical_editor_name(editor) / f"{name}.yaml", editor)
        if candidate.model and all(
            (getattr(config, "model_type", None) if k == "model_type" else _config_value(config, k)) == v
            for k, v in candidate.model.items()
            if k != "name"
        ):
            return name
    raise EditorConfigError(
        f"no packaged {editor} preset matches this {architecture_for(config).family} model "
        f"({num_layers(config)} layers); name one of {names} or a YAML file"
    )


def resolve_hparams(
    editor: str,
    config,
    hparams: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    model_dir: str | Path | None = None,
) -> HParamsFile:
    """Load, override and validate an editor's hyperparameters against ``config`` (no weights needed).

    ``hparams`` is a YAML path, a packaged preset name (``qwen3-8b``, ``world-tiny``, ...), or ``None`` for the
    model's default preset.
    """
    editor = canonical_editor_name(editor)
    if hparams is None:
        hparams = default_preset(editor, config, model_dir)
    path = Path(hparams)
    # A preset name ("qwen2.5-7b") has dots too: only a .yaml/.yml name or a folder part makes it a path.
    if path.suffix not in (".yaml", ".yml") and len(path.parts) == 1:
        path = preset_dir() / editor / f"{hparams}.yaml"
        if not path.is_file():
            raise EditorConfigError(f"no {editor} preset {hparams!r}; presets: {preset_names(editor)}")
    loaded = load_hparams_file(path, editor)
    if overrides:
        merged = {**loaded.hparams.to_dict(), **dict(overrides)}
        loaded.hparams = editor_class(editor).hparams_class.from_dict(merged, source=f"{path} + overrides")
    check_model_block(loaded, config, layers_chosen="layers" in (overrides or {}))
    loaded.hparams.validate(config)
    for role, template in loaded.module_templates.items():
        validate_template(config, role, template)
    return loaded
