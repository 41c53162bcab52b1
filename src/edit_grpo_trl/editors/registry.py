"""Editor names and classes: ``rome``, ``memit``, ``ft`` (FT-M; also ``ft-m``), ``alphaedit``, ``wise``."""

from __future__ import annotations

from edit_grpo_trl.editors.arch import EditorConfigError

_ALIASES = {"ft-m": "ft", "ftm": "ft", "fine-tune": "ft", "alpha-edit": "alphaedit"}


def _classes() -> dict[str, type]:
    from edit_grpo_trl.editors.alphaedit import AlphaEditEditor
    from edit_grpo_trl.editors.ft import FTEditor
    from edit_grpo_trl.editors.memit import MemitEditor
    from edit_grpo_trl.editors.rome import RomeEditor
    from edit_grpo_trl.editors.wise import WiseEditor

    return {cls.name: cls for cls in (RomeEditor, MemitEditor, FTEditor, AlphaEditEditor, WiseEditor)}


def editor_names() -> list[str]:
    return sorted(_classes())


def canonical_editor_name(name: str) -> str:
    key = (name or "").strip().lower()
    key = _ALIASES.get(key, key)
    if key not in _classes():
        raise EditorConfigError(f"unknown editor {name!r}; editors: {', '.join(editor_names())}")
    return key


def editor_class(name: str) -> type:
    return _classes()[canonical_editor_name(name)]
