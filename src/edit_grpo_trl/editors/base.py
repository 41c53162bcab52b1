"""The one editor interface: ``Editor.edit(model, tokenizer, cases) -> EditResult``.

Each editor (ROME, MEMIT, FT-M, AlphaEdit) implements :meth:`Editor._edit_batch`, which writes one group of
cases into the model and returns the weight update it made per layer; this base class does the rest the
same way for all of them: checking the hyperparameters against the model's config before any computation,
splitting the cases into a sequential stream or batches, timing, and keeping the record (layers, per-layer
update norms, case ids) that goes into the checkpoint's ``edit_manifest.json``.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from tqdm.auto import tqdm

from edit_grpo_trl.data.cases import EditCase
from edit_grpo_trl.editors.arch import Architecture, EditorConfigError, architecture_for, validate_layers

logger = logging.getLogger(__name__)

EditMode = Literal["sequential", "batch"]


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """YAML 1.1 reads ``5e-1`` as a string (EasyEdit's files are full of them): numbers become numbers."""
    kind = str(annotation)
    if isinstance(value, str) and ("float" in kind or "int" in kind) and "str" not in kind:
        try:
            number = float(value)
        except ValueError as error:
            raise EditorConfigError(f"{where} must be a number, got {value!r}") from error
        return int(number) if "float" not in kind and number.is_integer() else number
    if isinstance(value, int) and not isinstance(value, bool) and "float" in kind and "int" not in kind:
        return float(value)
    return value


@dataclass
class EditorHParams:
    """Settings every editor has: the layers it writes and the module it writes there."""

    layers: list[int]
    rewrite_module_tmp: str = "model.layers.{}.mlp.down_proj"

    def validate(self, config) -> None:
        """Check every layer index and module template against the model's config (no weights needed)."""
        from edit_grpo_trl.editors.arch import validate_template

        validate_layers(config, self.layers, "layers")
        validate_template(config, "rewrite_module_tmp", self.rewrite_module_tmp)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "hparams") -> EditorHParams:
        """Build from a mapping; unknown or missing keys are named together with the valid ones."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        names = set(fields)
        unknown = sorted(set(data) - names)
        if unknown:
            raise EditorConfigError(
                f"{source}: unknown {cls.__name__} field(s) {unknown}; valid fields: {sorted(names)}"
            )
        required = {
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        missing = sorted(required - set(data))
        if missing:
            raise EditorConfigError(f"{source}: missing {cls.__name__} field(s) {missing}")
        values = {
            name: _coerce(value, fields[name].type, f"{source}: field {name!r}")
            for name, value in data.items()
        }
        hparams = cls(**values)
        if isinstance(hparams.layers, int):
            hparams.layers = [hparams.layers]
        hparams.layers = list(hparams.layers)
        return hparams


@dataclass
class EditRecord:
    """What an edit did: enough to reproduce it and to see how large it was."""

    editor: str
    hparams: dict[str, Any]
    case_ids: list[str]
    layers: list[int]
    mode: str
    # Frobenius norm of the total update per layer (all cases together), and per edit step.
    update_norms: dict[str, float] = field(default_factory=dict)
    step_update_norms: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def seconds_per_case(self) -> float:
        return self.seconds / max(len(self.case_ids), 1)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class EditResult:
    model: torch.nn.Module
    record: EditRecord
    # The total (out, in) update per edited layer, on the CPU in float32.
    deltas: dict[int, torch.Tensor] = field(default_factory=dict)


class Editor(ABC):
    """Base of all stage-1 editors. Subclasses set ``name``, ``hparams_class`` and ``_edit_batch``."""

    name: ClassVar[str]
    hparams_class: ClassVar[type[EditorHParams]]
    # ROME writes one fact per rank-one update; the others also take a batch in one solve.
    supports_batch: ClassVar[bool] = True

    def __init__(self, hparams: EditorHParams):
        if not isinstance(hparams, self.hparams_class):
            raise TypeError(f"{type(self).__name__} needs {self.hparams_class.__name__}, got {type(hparams)}")
        self.hparams = hparams

    def validate(self, config) -> None:
        """Fail before any computation when the settings do not fit the model."""
        self.hparams.validate(config)

    def statistics_layers(self) -> list[int]:
        """Layers whose key second moment this editor needs (none by default)."""
        return []

    @abstractmethod
    def _edit_batch(
        self, model: torch.nn.Module, tokenizer, cases: Sequence[EditCase], arch: Architecture
    ) -> dict[int, torch.Tensor]:
        """Write ``cases`` into ``model`` in place; return the (out, in) update applied per layer."""

    def edit(
        self,
        model: torch.nn.Module,
        tokenizer,
        cases: Sequence[EditCase],
        mode: EditMode = "sequential",
        batch_size: int | None = None,
        copy_model: bool = False,
        show_progress: bool = True,
    ) -> EditResult:
        """Edit ``model`` (in place, or a deep copy with ``copy_model``) with ``cases``.

        ``sequential``: one case at a time, each on the model the previous one left (the usual lifelong
        setting). ``batch``: groups of ``batch_size`` cases (all of them when ``None``) in one update each.
        """
        if mode not in ("sequential", "batch"):
            raise EditorConfigError(f"mode must be 'sequential' or 'batch', got {mode!r}")
        if not cases:
            raise EditorConfigError("no edit cases given")
        if mode == "batch" and not self.supports_batch:
            raise EditorConfigError(
                f"{self.name} writes one fact per update and has no batch mode; use mode='sequential' "
                "or a batch editor (memit, alphaedit, ft)"
            )
        if batch_size is not None and batch_size < 1:
            raise EditorConfigError(f"batch_size must be at least 1, got {batch_size}")
        self.validate(model.config)
        arch = architecture_for(model.config)
        if copy_model:
            model = copy.deepcopy(model)
        size = 1 if mode == "sequential" else (batch_size or len(cases))
        groups = [list(cases[start : start + size]) for start in range(0, len(cases), size)]
        record = EditRecord(
            editor=self.name,
            hparams=self.hparams.to_dict(),
            case_ids=[case.case_id for case in cases],
            layers=list(self.hparams.layers),
            mode=mode,
        )
        totals: dict[int, torch.Tensor] = {}
        was_training = model.training
        model.eval()
        started = time.perf_counter()
        for group in tqdm(groups, desc=f"{self.name} edits", disable=not show_progress):
            deltas = self._edit_batch(model, tokenizer, group, arch)
            record.step_update_norms.append({str(layer): float(d.norm()) for layer, d in deltas.items()})
            for layer, delta in deltas.items():
                delta = delta.detach().float().cpu()
                totals[layer] = totals[layer] + delta if layer in totals else delta
        record.seconds = time.perf_counter() - started
        record.update_norms = {str(layer): float(delta.norm()) for layer, delta in sorted(totals.items())}
        if was_training:
            model.train()
        logger.info(
            "%s: %d case(s) in %.1fs (%s), update norms %s",
            self.name,
            len(cases),
            record.seconds,
            mode,
            record.update_norms,
        )
        return EditResult(model=model, record=record, deltas=totals)
