"""One model loader for the stages that load a causal LM: the recipe's ``model`` section, a TRL
``ModelConfig`` (:class:`edit_grpo_trl.recipe.ModelSettings`), becomes the keyword arguments
``from_pretrained`` gets (TRL's ``model_init_kwargs``).

``model:`` keys are ``ModelConfig``'s loading fields: ``model_name_or_path``, ``model_revision``, ``dtype``
(``auto``, ``float32``, ``bfloat16``, ``float16``), ``attn_implementation``, ``trust_remote_code``, and
quantization as TRL spells it: ``load_in_4bit`` / ``load_in_8bit`` with ``bnb_4bit_quant_type``,
``use_bnb_nested_quant`` and ``bnb_4bit_quant_storage`` (bitsandbytes); plus ``device``. On a CPU-only
machine half precision becomes float32 (half-precision matmuls there are several times slower).

``lora:`` goes straight into ``peft.LoraConfig``: besides ``enabled``, every key is a ``LoraConfig`` field by
its own name (``r``, ``lora_alpha``, ``lora_dropout``, ``target_modules`` with ``[all-linear]`` included,
``layers_to_transform``, ``use_dora``, ``use_rslora``, ``modules_to_save``, ...), checked against
``LoraConfig`` by name when the recipe is read (:class:`edit_grpo_trl.recipe.LoraSettings`)."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import torch

logger = logging.getLogger(__name__)

HALF = ("bfloat16", "float16")
ALL_LINEAR = "all-linear"


def resolve_dtype(name: str, device: str | None) -> str:
    """The dtype a model loads in: the recipe's, except half precision on a CPU (float32 there)."""
    on_cpu = device == "cpu" or (device is None and not torch.cuda.is_available())
    if on_cpu and name in HALF:
        logger.info("model.dtype %s: no GPU, so models load in float32", name)
        return "float32"
    return name


def source_dtype(config) -> torch.dtype | None:
    """The dtype a model's weights were saved in, as its config says (None when it says nothing usable).

    Stage 1 edits in float32 and saves the edited checkpoint back in this dtype."""
    value = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(value, str):
        value = getattr(torch, value, None)
    return value if isinstance(value, torch.dtype) and value.is_floating_point else None


def model_init_kwargs(settings, device: str | None = None) -> dict[str, Any]:
    """``from_pretrained`` keyword arguments (TRL's ``model_init_kwargs``) from a recipe's ``model`` section,
    a ``trl.ModelConfig``; the bitsandbytes config is TRL's own (``get_quantization_config``)."""
    from trl import get_quantization_config

    kwargs: dict[str, Any] = {
        "dtype": resolve_dtype(settings.dtype, device),
        "revision": settings.model_revision,
    }
    if settings.attn_implementation:
        kwargs["attn_implementation"] = settings.attn_implementation
    if settings.trust_remote_code:
        kwargs["trust_remote_code"] = True
    # TRL computes 4-bit layers in the recipe's dtype, which must name a torch dtype: "auto" leaves
    # bitsandbytes its default (float32)
    quantization = get_quantization_config(
        dataclasses.replace(settings, dtype=None) if settings.dtype == "auto" else settings
    )
    if quantization is not None:
        kwargs["quantization_config"] = quantization
    return kwargs


def load_tokenizer(path: str, settings=None):
    """The tokenizer, left-padded, with a pad token (EOS when it has none)."""
    from transformers import AutoTokenizer

    kwargs: dict[str, Any] = {}
    if settings is not None:
        kwargs["revision"] = settings.model_revision
        if settings.trust_remote_code:
            kwargs["trust_remote_code"] = True
    tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def load_causal_lm(path: str, settings, device: str | None = None, place: bool = True):
    """(model, tokenizer) as the recipe's ``model`` section says; with ``place`` the model goes to
    ``device`` (quantized models stay where bitsandbytes put them) and into eval mode. Training loads with
    ``place=False``: the trainer moves the model itself."""
    from edit_grpo_trl.editors.checkpoint import load_edited_model

    kwargs = model_init_kwargs(settings, device)
    model = load_edited_model(path, **kwargs)  # a WISE checkpoint comes back with its routed side memory
    if place:
        if "quantization_config" not in kwargs and device is not None:
            model = model.to(device)
        model.eval()
    return model, load_tokenizer(path, settings)


def lora_config(lora, **scoped):
    """``peft.LoraConfig`` from a recipe's ``lora`` section (None when LoRA is off): its fields as the recipe
    names them; ``scoped`` fields (the train scope's ``target_modules`` / ``layers_to_transform``) take the
    place of the recipe's."""
    if not lora.enabled:
        return None
    from peft import LoraConfig

    fields = {**lora.config, **scoped}
    # peft reads "all-linear" only as a string; in a list it would be a module's name
    if list(fields.get("target_modules") or ()) == [ALL_LINEAR]:
        fields["target_modules"] = ALL_LINEAR
    return LoraConfig(task_type="CAUSAL_LM", **fields)
