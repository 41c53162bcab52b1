"""Recipes: one YAML file per model and editor, mapped onto typed settings dataclasses.

A recipe has the sections ``model`` (TRL's ``ModelConfig``: :class:`ModelSettings`), ``data`` (an
:class:`~edit_grpo_trl.data.agt_config.AGTDataConfig` plus where the cases come from, with
``data.train_prompts``, the training-prompt pool: :mod:`edit_grpo_trl.data.train_prompts`), ``editor``,
``training`` (the fields of :class:`~edit_grpo_trl.stage2.config.EditGRPOConfig`), ``evaluation`` (an
:class:`~edit_grpo_trl.evaluation.config.EvalConfig`), ``lora`` (``enabled`` plus ``peft.LoraConfig``'s
fields: :class:`LoraSettings`) and ``wandb``, plus ``refinement``
(``edit_grpo``, or the baselines ``grpo`` and ``sft``: :mod:`edit_grpo_trl.stage2.baselines`) and
``output_dir``. As with TRL's ``TrlParser``, the YAML gives the defaults and the command line overrides
them: ``--training.learning_rate 1e-5`` or ``--editor.name memit``. An unknown key is an error that names
the key, where it was found, and the nearest valid key; a value out of its range is an error that names the
key and the range, raised when the recipe is read, before any stage runs.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

# the module alone holds only dataclasses: importing it costs nothing like `import trl`
from trl.trainer.model_config import ModelConfig

from edit_grpo_trl.data.agt_config import AGTDataConfig
from edit_grpo_trl.data.train_prompts import TrainPromptsConfig
from edit_grpo_trl.evaluation.config import EvalConfig


class RecipeError(ValueError):
    """A recipe file or override is malformed."""


EDIT_MODES = ("sequential", "batch")


def _one_of(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


def _at_least(name: str, value: Any, minimum: float, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
        raise ValueError(
            f"{name} must be a number >= {minimum}{' or null' if optional else ''}, got {value!r}"
        )


class _RecipeLoader(yaml.SafeLoader):
    """YAML 1.2 scalars, as recipes mean them: ``1e-5`` (no dot) is a number, and only ``true``/``false`` are
    booleans (YAML 1.1 also reads ``no``, ``yes``, ``on``, ``off`` as booleans, which turns
    ``save_strategy: no`` into ``False``)."""


_RecipeLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def read_yaml(text: str):
    return yaml.load(text, Loader=_RecipeLoader)  # noqa: S506 - a SafeLoader subclass


def _trl_peft_fields() -> dict[str, str]:
    """TRL ModelConfig's PEFT fields, each with the lora-section key that sets it here."""
    names = {f.name for f in dataclasses.fields(ModelConfig)}
    peft = {name for name in names if name.startswith("lora_")} | {"use_peft", "use_rslora", "use_dora"}
    keep = {"lora_alpha", "lora_dropout"}  # the same name in peft.LoraConfig
    return {
        name: "enabled" if name == "use_peft" else name if name in keep else name.removeprefix("lora_")
        for name in names & peft
    }


@dataclass
class ModelSettings(ModelConfig):
    """The starting model: TRL's ``ModelConfig`` loading fields, by TRL's names (``model_name_or_path``,
    ``model_revision``, ``dtype``, ``attn_implementation``, ``load_in_4bit`` / ``load_in_8bit``,
    ``bnb_4bit_quant_type``, ``use_bnb_nested_quant``, ...), plus ``device`` and ``trust_remote_code``. Its PEFT
    fields are not keys here: LoRA has its own section. ``model_name_or_path`` is a Hub id, a local folder,
    or ``world:<size>[:<seed>]`` for the knowledge world."""

    model_name_or_path: str = "world:tiny"  # TRL has no default model; the tiny world runs anywhere
    device: str | None = None  # None: CUDA when available, else CPU
    # Not a ModelConfig field in this TRL; from_pretrained (and the tokenizer) still take it.
    trust_remote_code: bool = False

    # A key a recipe may not give, with the reason (the section's old names included).
    REFUSED: ClassVar[dict[str, str]] = {
        "name_or_path": "it is now 'model_name_or_path' (TRL ModelConfig's name for it)",
        **{
            name: f"LoRA has its own section: set lora.{key}"
            for name, key in _trl_peft_fields().items()
            if name != "lora_task_type"
        },
        "lora_task_type": "LoRA has its own section, whose task is always CAUSAL_LM",
    }

    @classmethod
    def recipe_keys(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)} - set(cls.REFUSED)

    def to_section(self) -> dict[str, Any]:
        """The section as a recipe writes it (recipe.json, W&B): without ModelConfig's PEFT fields."""
        keys = self.recipe_keys()
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name in keys}

    def __post_init__(self) -> None:
        if not isinstance(self.model_name_or_path, str) or not self.model_name_or_path.strip():
            raise ValueError(f"model_name_or_path must name a model, got {self.model_name_or_path!r}")
        for spec in dataclasses.fields(ModelConfig):  # TRL's own choices: dtype, bnb_4bit_quant_type
            choices = spec.metadata.get("choices")
            value = getattr(self, spec.name)
            if choices and value is not None and value not in choices:
                raise ValueError(f"{spec.name} must be one of {', '.join(choices)}, got {value!r}")
        super().__post_init__()


@dataclass
class DataSettings(AGTDataConfig):
    """Where edit cases come from and which are kept; the rest of the section is
    :class:`~edit_grpo_trl.data.agt_config.AGTDataConfig` itself (how cases become AGT rows: its field names
    and defaults), so the section is handed to the AGT builder as it is."""

    source: str = "world:tiny"  # a path, "knowedit:<split>", "world:<size>[:<seed>]", ...
    format: str = "auto"
    split: str | None = None
    num_cases: int | None = None
    skip_invalid: bool = False
    # Where the training paraphrases come from (real data holds only evaluation probes).
    train_prompts: TrainPromptsConfig = field(default_factory=TrainPromptsConfig)
    # Keep only the cases whose old fact the pre-edit model states (greedy, through the anchor and at least
    # this share of the held-out prompts), before num_cases cuts: an edit of an unknown fact measures nothing.
    keep_known: bool = False
    known_heldout_share: float = 1.0
    # Share of each case's locality probes set aside for training (data that has no training locality
    # probes of its own; applied before any evaluation). locality_pool_size (AGTDataConfig) caps how many
    # training locality prompts the locality loss (training.locality_coef) keeps.
    locality_holdout_share: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _at_least("num_cases", self.num_cases, 1, optional=True)
        if not 0 <= self.locality_holdout_share < 1:
            raise ValueError(f"locality_holdout_share must be in [0, 1), got {self.locality_holdout_share!r}")
        if not 0 <= self.known_heldout_share <= 1:
            raise ValueError(f"known_heldout_share must be in [0, 1], got {self.known_heldout_share!r}")


@dataclass
class EditorSettings:
    """Stage 1. ``name``: rome, memit, ft, alphaedit, none (refine the model as it is), or external (a
    checkpoint another tool edited, given in ``checkpoint``)."""

    name: str = "rome"
    hparams: str | None = None  # a hparams YAML path or a packaged name; None: the model's default
    overrides: dict[str, Any] = field(default_factory=dict)
    mode: str = "sequential"  # sequential | batch
    checkpoint: str | None = None

    def __post_init__(self) -> None:
        _one_of("mode", self.mode, EDIT_MODES)
        if not isinstance(self.overrides, dict):
            raise ValueError(f"overrides must be a mapping of hyperparameters, got {self.overrides!r}")


# Where the project's LoRA differs from peft.LoraConfig's defaults: the rank, scale and modules the shipped
# recipes were measured with (attention plus the MLP's down projection).
LORA_DEFAULTS: dict[str, Any] = {
    "r": 16,
    "lora_alpha": 32,
    "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "down_proj"],
}


def lora_config_fields() -> set[str]:
    """The ``peft.LoraConfig`` fields a recipe may set (``task_type`` is always ``CAUSAL_LM``)."""
    from peft import LoraConfig

    return {f.name for f in dataclasses.fields(LoraConfig) if f.init} - {"task_type"}


@dataclass
class LoraSettings:
    """PEFT LoRA refinement instead of full fine-tuning, switched on by ``enabled: true``. Every other key of
    the section is a ``peft.LoraConfig`` field by its own name (``r``, ``lora_alpha``, ``lora_dropout``,
    ``target_modules``, ``layers_to_transform``, ``use_dora``, ...): ``config`` holds them, over
    :data:`LORA_DEFAULTS`, and :func:`edit_grpo_trl.loading.lora_config` passes them to LoraConfig."""

    enabled: bool = False
    config: dict[str, Any] = field(default_factory=lambda: copy.deepcopy(LORA_DEFAULTS))

    # A key a recipe may not give, with the reason (the section's old names included).
    REFUSED: ClassVar[dict[str, str]] = {
        "alpha": "it is now 'lora_alpha' (peft.LoraConfig's name for it)",
        "dropout": "it is now 'lora_dropout' (peft.LoraConfig's name for it)",
        "options": "it is gone: give each peft.LoraConfig field directly in the section (use_dora: true, ...)",
        "task_type": "it is always CAUSAL_LM",
    }

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ValueError(f"enabled must be true or false, got {self.enabled!r}")
        if "r" in self.config:
            _at_least("r", self.config["r"], 1)
        if "lora_alpha" in self.config:
            _at_least("lora_alpha", self.config["lora_alpha"], 1e-12)
        dropout = self.config.get("lora_dropout", 0.0)
        if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout < 1:
            raise ValueError(f"lora_dropout must be in [0, 1), got {dropout!r}")
        # a list of names, which preflight finds in the model (peft would read a string as a regex)
        targets = self.config.get("target_modules")
        if not targets or not isinstance(targets, list):
            raise ValueError(f"target_modules must be a non-empty list of module names, got {targets!r}")

    @property
    def target_modules(self) -> list[str]:
        return list(self.config["target_modules"])

    @classmethod
    def from_section(cls, values: dict[str, Any], where: str) -> LoraSettings:
        """The section as a recipe writes it: ``enabled`` plus LoraConfig fields, checked by name."""
        config = dict(values)
        enabled = config.pop("enabled", False)
        _check_keys(
            f"{where} (enabled, or a peft.LoraConfig field)", config, {"enabled"} | lora_config_fields()
        )
        try:
            return cls(enabled=enabled, config={**copy.deepcopy(LORA_DEFAULTS), **config})
        except (ValueError, TypeError) as error:
            raise RecipeError(f"{where}: {error}") from error

    def to_section(self) -> dict[str, Any]:
        """The section as a recipe writes it (recipe.json, W&B)."""
        return {"enabled": self.enabled, **self.config}


@dataclass
class WandbSettings:
    """Weights & Biases: off unless ``project`` is set. One W&B run per pipeline; the stage is in its config."""

    project: str | None = None
    entity: str | None = None
    run_name: str | None = None
    tags: list[str] = field(default_factory=list)
    group: str | None = None  # W&B's run group: the seeds of one benchmark condition share one


@dataclass
class PipelineRecipe:
    model: ModelSettings = field(default_factory=ModelSettings)
    data: DataSettings = field(default_factory=DataSettings)
    editor: EditorSettings = field(default_factory=EditorSettings)
    training: dict[str, Any] = field(default_factory=dict)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    wandb: WandbSettings = field(default_factory=WandbSettings)
    # Stage-2 method: edit_grpo (the product), or a baseline: grpo (TRL's own advantages), sft.
    refinement: str = "edit_grpo"
    output_dir: str = "runs/default"
    source: str | None = None  # the file the recipe came from

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("source")
        data["model"], data["lora"] = self.model.to_section(), self.lora.to_section()
        return data


SECTIONS = {
    "model": ModelSettings,
    "data": DataSettings,
    "editor": EditorSettings,
    "evaluation": EvalConfig,
    "lora": LoraSettings,
    "wandb": WandbSettings,
}
TOP_LEVEL = (*SECTIONS, "training", "refinement", "output_dir")


def _nearest(key: str, valid) -> str:
    match = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    return f" Did you mean {match[0]!r}?" if match else ""


def training_fields() -> set[str]:
    from edit_grpo_trl.stage2.config import EditGRPOConfig

    return {f.name for f in dataclasses.fields(EditGRPOConfig) if f.init}


def _check_keys(where: str, given, valid) -> None:
    for key in given:
        if key not in valid:
            listing = f" Valid keys: {', '.join(sorted(valid))}" if len(valid) <= 30 else ""
            raise RecipeError(f"{where}: unknown key {key!r}.{_nearest(key, valid)}{listing}")


def _build_settings(settings_class: type, values: Any, where: str):
    """A settings dataclass from a mapping: unknown keys, nested sections and bad values named."""
    if not isinstance(values, dict):
        raise RecipeError(f"{where} must be a mapping, got {values!r}")
    for key, reason in getattr(settings_class, "REFUSED", {}).items():
        if key in values:
            raise RecipeError(f"{where}: {key!r}: {reason}")
    if hasattr(settings_class, "from_section"):  # a section whose keys are a library config's fields
        return settings_class.from_section(values, where)
    if hasattr(settings_class, "recipe_keys"):
        valid = settings_class.recipe_keys()
    else:
        valid = {f.name for f in dataclasses.fields(settings_class)}
    _check_keys(where, values, valid)
    hints = typing.get_type_hints(settings_class)
    arguments = {}
    for key, value in values.items():
        if dataclasses.is_dataclass(hints[key]):  # a nested section, such as data.train_prompts
            value = _build_settings(hints[key], value or {}, f"{where}.{key}")
        arguments[key] = value
    try:
        return settings_class(**arguments)
    except (ValueError, TypeError) as error:
        raise RecipeError(f"{where}: {error}") from error


def recipe_from_dict(data: dict[str, Any], source: str = "<recipe>") -> PipelineRecipe:
    """Typed settings from a recipe mapping; unknown keys anywhere are errors."""
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: a recipe must be a mapping of sections, got {type(data).__name__}")
    _check_keys(source, data, TOP_LEVEL)
    sections = {
        name: _build_settings(settings_class, data.get(name) or {}, f"{source}: section {name!r}")
        for name, settings_class in SECTIONS.items()
    }
    training = data.get("training") or {}
    if not isinstance(training, dict):
        raise RecipeError(f"{source}: section 'training' must be a mapping, got {training!r}")
    _check_keys(
        f"{source}: section 'training' (EditGRPOConfig)", training, training_fields() - {"output_dir"}
    )
    from edit_grpo_trl.stage2.baselines import REFINEMENT_METHODS

    refinement = data.get("refinement", "edit_grpo")
    if refinement not in REFINEMENT_METHODS:
        raise RecipeError(
            f"{source}: refinement must be one of {', '.join(REFINEMENT_METHODS)}, got {refinement!r}."
            f"{_nearest(str(refinement), REFINEMENT_METHODS)}"
        )
    return PipelineRecipe(
        **sections,
        training=dict(training),
        refinement=refinement,
        output_dir=str(data.get("output_dir", "runs/default")),
        source=source,
    )


def parse_overrides(arguments: list[str]) -> dict[str, Any]:
    """``--section.key value`` / ``--section.key=value`` pairs into a nested mapping (values read as YAML)."""
    overrides: dict[str, Any] = {}
    position = 0
    while position < len(arguments):
        argument = arguments[position]
        if not argument.startswith("--"):
            raise RecipeError(
                f"unexpected argument {argument!r}: overrides look like --training.learning_rate 1e-5"
            )
        key, _, value = argument[2:].partition("=")
        if not _:
            if position + 1 >= len(arguments):
                raise RecipeError(f"override {argument!r} has no value")
            position += 1
            value = arguments[position]
        target = overrides
        *parents, leaf = key.replace("-", "_").split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = read_yaml(value)
        position += 1
    return overrides


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key != "overrides":
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_recipe(
    path: str | Path | None, overrides: list[str] | dict[str, Any] | None = None
) -> PipelineRecipe:
    """Read a recipe file (or start from the defaults when ``path`` is None) and apply overrides."""
    data: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise RecipeError(f"no recipe file at {path}")
        try:
            data = read_yaml(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as error:
            raise RecipeError(f"{path}: not valid YAML: {error}") from error
        source = str(path)
    if overrides:
        override_map = parse_overrides(overrides) if isinstance(overrides, list) else overrides
        data = _merge(data, override_map)
        source = f"{source} (with command-line overrides)"
    return recipe_from_dict(data, source)
