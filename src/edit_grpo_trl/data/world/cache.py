"""The on-disk cache of pretrained worlds: one complete folder per (size, seed, format version).

A folder is built under a temporary name and renamed when complete, under an exclusive file lock, so
concurrent processes (torchrun ranks, parallel test sessions) pretrain a world once, and a crash leaves a
temporary folder that is never read (the next build clears it) rather than a half-written cache.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
from pathlib import Path

from edit_grpo_trl.data.world.spec import FORMAT_VERSION, size_spec
from edit_grpo_trl.data.world.world import KnowledgeWorld

logger = logging.getLogger(__name__)

CACHE_ENV = "EDIT_GRPO_CACHE"
REPORT_FILE = "pretrain_report.json"
# What a complete folder holds; the report is written last, before the rename.
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "world.json", REPORT_FILE)


def default_cache_dir() -> Path:
    """``$EDIT_GRPO_CACHE/worlds``, or ``~/.cache/edit_grpo_trl/worlds``."""
    root = os.environ.get(CACHE_ENV)
    return (Path(root) if root else Path.home() / ".cache" / "edit_grpo_trl") / "worlds"


def world_folder_name(size: str, seed: int) -> str:
    return f"{size}-seed{seed}-v{FORMAT_VERSION}"


def is_complete(folder: Path) -> bool:
    """Whether a cache folder holds everything a finished build writes."""
    return all((folder / name).is_file() for name in REQUIRED_FILES)


def ensure_world_model(
    size: str = "tiny", seed: int = 0, cache_dir: str | Path | None = None, device: str | None = None
) -> Path:
    """The folder of the pretrained world ``(size, seed)``, pretraining and caching it on first use.

    The folder loads like a Hub model: ``AutoModelForCausalLM.from_pretrained``,
    ``AutoTokenizer.from_pretrained`` and ``KnowledgeWorld.load``; ``pretrain_report.json`` holds the
    parameter count, steps, seconds and recall per split.
    """
    size_spec(size)  # a clear error for an unknown size, before touching the disk
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"the world seed must be a non-negative integer, got {seed!r}")
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    final = root / world_folder_name(size, seed)
    if is_complete(final):
        return final
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{final.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this process dies
        if is_complete(final):  # another process built it while we waited
            return final
        _build(size, seed, root, final, device)
    return final


def _build(size: str, seed: int, root: Path, final: Path, device: str | None) -> None:
    from edit_grpo_trl.data.world.pretrain import pretrain

    for leftover in root.glob(f"{final.name}.tmp-*"):  # from a crashed build; we hold the lock
        shutil.rmtree(leftover, ignore_errors=True)
    logger.info("pretraining knowledge world %s (seed %d) into %s", size, seed, final)
    world = KnowledgeWorld.generate(size, seed)
    model, tokenizer, report = pretrain(world, device=device)
    temporary = root / f"{final.name}.tmp-{os.getpid()}"
    temporary.mkdir()
    model.save_pretrained(temporary)
    tokenizer.save_pretrained(temporary)
    world.save(temporary)
    (temporary / REPORT_FILE).write_text(json.dumps(report, indent=1))
    if final.exists():  # incomplete (an older build's): replace it
        shutil.rmtree(final)
    temporary.rename(final)
    logger.info(
        "world %s-seed%d: held-out recall %.3f after %d steps (%.0f s) -> %s",
        size,
        seed,
        report["recall"]["heldout"],
        report["steps"],
        report["seconds"],
        final,
    )
