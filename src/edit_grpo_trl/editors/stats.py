"""Key statistics: the uncentered second moment ``E[k k^T]`` of an MLP output projection's input.

MEMIT and AlphaEdit (and ROME with ``mom2_adjustment``) need, per edited layer, how the projection's keys are
distributed over ordinary text. They are computed once over a corpus (:mod:`edit_grpo_trl.editors.corpus`)
and cached on disk, keyed by the model (name, config, weight files), layer, corpus, sample count and dtype.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Sequence
from itertools import islice
from pathlib import Path

import torch
from tqdm.auto import tqdm

from edit_grpo_trl.editors.arch import architecture_for, get_module, validate_layers
from edit_grpo_trl.editors.corpus import CorpusError, corpus_texts, parse_corpus
from edit_grpo_trl.editors.tokens import pad_id, pad_right

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float64": torch.float64}


class KeyStatisticsError(RuntimeError):
    """Neither a cached statistic nor a readable corpus."""


def default_stats_dir() -> Path:
    return Path(os.environ.get("EDIT_GRPO_CACHE", Path.home() / ".cache" / "edit_grpo_trl")) / "stats"


def model_fingerprint(model) -> str:
    """A short hash of what the keys depend on: the model's name or folder, its config, its weight files."""
    config = model.config
    name = str(getattr(config, "name_or_path", "") or getattr(config, "_name_or_path", ""))
    parts = [name, json.dumps(config.to_diff_dict(), sort_keys=True, default=str)]
    folder = Path(name)
    if folder.is_dir():  # a local checkpoint: its weight files' sizes and times tell versions apart
        for weights in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
            stat = weights.stat()
            parts.append(f"{weights.name}:{stat.st_size}:{int(stat.st_mtime)}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def _slug(text: str) -> str:
    keep = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in text)
    return keep.strip("-.")[-60:] or "model"


def stats_cache_path(
    cache_dir: str | Path, model, layer: int, corpus_label: str, n_samples: int, dtype: str
) -> Path:
    name = Path(str(getattr(model.config, "name_or_path", "") or "model")).name
    folder = Path(cache_dir) / f"{_slug(name)}-{model_fingerprint(model)}" / _slug(corpus_label)
    return folder / f"layer{layer}-n{n_samples}-{dtype}.pt"


@torch.no_grad()
def compute_key_second_moments(
    model,
    tokenizer,
    layers: Sequence[int],
    texts: Iterable[str],
    n_samples: int,
    dtype: str = "float32",
    max_length: int = 256,
    batch_size: int = 16,
    show_progress: bool = True,
) -> dict[int, tuple[torch.Tensor, int]]:
    """``(E[k k^T], token count)`` per layer over the first ``n_samples`` texts (every real token counts)."""
    arch = architecture_for(model.config)
    validate_layers(model.config, layers)
    device = next(model.parameters()).device
    sums: dict[int, torch.Tensor] = {}
    counts = dict.fromkeys(layers, 0)
    current_mask: dict[str, torch.Tensor] = {}

    def make_hook(layer: int):
        def hook(_module, args, _output):
            keys = args[0][current_mask["mask"]].to(torch.float64)  # (tokens, in)
            moment = keys.T @ keys
            sums[layer] = sums[layer] + moment if layer in sums else moment
            counts[layer] += keys.shape[0]

        return hook

    handles = [
        get_module(model, arch.down_proj(layer)).register_forward_hook(make_hook(layer)) for layer in layers
    ]
    used = 0
    was_training = model.training
    model.eval()
    progress = tqdm(total=n_samples, desc="key statistics", unit="text", disable=not show_progress)
    try:
        iterator = iter(texts)
        while used < n_samples:
            batch = list(islice(iterator, min(batch_size, n_samples - used)))
            if not batch:
                break
            encoded = [
                tokenizer(text, add_special_tokens=False, truncation=True, max_length=max_length)["input_ids"]
                for text in batch
            ]
            encoded = [ids for ids in encoded if ids]
            if encoded:
                input_ids, attention_mask = pad_right(encoded, pad_id(tokenizer))
                current_mask["mask"] = attention_mask.bool().to(device)
                model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device))
            used += len(batch)
            progress.update(len(batch))
    finally:
        progress.close()
        for handle in handles:
            handle.remove()
        if was_training:
            model.train()
    if used < n_samples:
        logger.warning(
            "the corpus held %d texts, fewer than the %d asked for; statistics use them all", used, n_samples
        )
    if not sums:
        raise KeyStatisticsError("the corpus gave no tokens to compute key statistics from")
    return {layer: ((sums[layer] / counts[layer]).to(DTYPES[dtype]).cpu(), counts[layer]) for layer in layers}


def load_key_statistics(
    model,
    tokenizer,
    layers: Sequence[int],
    corpus: str,
    n_samples: int,
    dtype: str = "float32",
    cache_dir: str | Path | None = None,
    model_dir: str | Path | None = None,
    show_progress: bool = True,
) -> dict[int, torch.Tensor]:
    """Second moments per layer from the cache, computing (and caching) the missing ones over ``corpus``.

    ``model_dir`` is the model's folder (it holds ``world.json`` for the ``world`` corpus); it defaults to the
    config's ``name_or_path``.
    """
    if dtype not in DTYPES:
        raise KeyStatisticsError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    cache_dir = Path(cache_dir) if cache_dir is not None else default_stats_dir()
    spec = parse_corpus(corpus)
    paths = {
        layer: stats_cache_path(cache_dir, model, layer, spec.label, n_samples, dtype) for layer in layers
    }
    result = {}
    for layer, path in paths.items():
        if path.is_file():
            result[layer] = torch.load(path, map_location="cpu")["second_moment"]
            logger.info("key statistics of layer %d from %s", layer, path)
    missing = [layer for layer in layers if layer not in result]
    if not missing:
        return result
    model_dir = model_dir if model_dir is not None else getattr(model.config, "name_or_path", None)
    try:
        computed = compute_key_second_moments(
            model,
            tokenizer,
            missing,
            corpus_texts(spec, model_dir),
            n_samples,
            dtype,
            show_progress=show_progress,
        )
    except CorpusError as error:
        looked = "; ".join(str(paths[layer]) for layer in missing)
        raise KeyStatisticsError(
            f"no cached key statistics for layer(s) {missing} (looked for {looked}) and the corpus "
            f"{corpus!r} cannot be read: {error}"
        ) from error
    for layer, (moment, count) in computed.items():
        path = paths[layer]
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        torch.save(
            {
                "second_moment": moment,
                "count": count,
                "corpus": corpus,
                "n_samples": n_samples,
                "layer": layer,
            },
            temporary,
        )
        temporary.replace(path)
        logger.info("key statistics of layer %d: %d tokens, cached at %s", layer, count, path)
        result[layer] = moment
    return result
