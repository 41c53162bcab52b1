"""Text corpora for the key statistics: a Hub dataset, local text/JSONL files, or a knowledge world's text.

A corpus is named by one string, as in the hparams files (``mom2_dataset``):

* ``world``: the pretraining sentences of the knowledge world stored next to the model (``world.json``);
* ``wikipedia`` (EasyEdit's name) or ``hub:<dataset>[:<config>[:<split>]]``: a Hugging Face dataset, streamed;
* a path (relative paths are also looked up in the packaged hparams folder, whose ``corpora/`` holds the
  presets' own corpora), or several joined by ``,``: ``.txt`` files (one text per non-empty line) or ``.jsonl`` files (the
  ``text`` field of each record).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# EasyEdit's "wikipedia" (its 2020 snapshot is gone from the Hub); the current English dump.
WIKIPEDIA = "hub:wikimedia/wikipedia:20231101.en:train"


class CorpusError(RuntimeError):
    """A corpus that cannot be read (missing file, no network, malformed record)."""


@dataclass(frozen=True)
class CorpusSpec:
    kind: str  # world | hub | files
    name: str
    config: str | None = None
    split: str = "train"
    paths: tuple[Path, ...] = ()

    @property
    def label(self) -> str:
        """A short stable name for cache keys."""
        if self.kind == "files":
            return "files-" + "+".join(path.stem for path in self.paths)
        if self.kind == "hub":
            return "-".join(part for part in ("hub", self.name, self.config, self.split) if part)
        return self.kind


def parse_corpus(spec: str) -> CorpusSpec:
    spec = spec.strip()
    if spec == "world":
        return CorpusSpec("world", "world")
    if spec == "wikipedia":
        spec = WIKIPEDIA
    if spec.startswith("hub:"):
        parts = spec[len("hub:") :].split(":")
        if not parts[0]:
            raise CorpusError(f"corpus {spec!r}: name the dataset, as hub:<dataset>[:<config>[:<split>]]")
        return CorpusSpec(
            "hub",
            parts[0],
            parts[1] if len(parts) > 1 and parts[1] else None,
            parts[2] if len(parts) > 2 and parts[2] else "train",
        )
    paths = tuple(_locate(Path(part.strip()).expanduser()) for part in spec.split(",") if part.strip())
    if not paths:
        raise CorpusError("empty corpus name; use 'world', 'wikipedia', 'hub:<dataset>' or file paths")
    for path in paths:
        if path.suffix not in (".txt", ".jsonl", ".json"):
            raise CorpusError(
                f"corpus file {path}: unknown kind {path.suffix!r}; use .txt (a text per line) or .jsonl "
                "(a 'text' field per record), or a corpus name: world, wikipedia, hub:<dataset>"
            )
    return CorpusSpec("files", ",".join(str(p) for p in paths), paths=paths)


def _locate(path: Path) -> Path:
    """A relative corpus path as given when it exists; else inside the packaged hparams folder, where the
    presets' own corpora live (``corpora/<name>.jsonl``), so a preset works from any working directory."""
    if path.is_absolute() or path.exists():
        return path
    from edit_grpo_trl.editors.presets import preset_dir

    packaged = preset_dir() / path
    return packaged if packaged.exists() else path


def _file_texts(path: Path) -> Iterator[str]:
    if not path.is_file():
        raise CorpusError(f"corpus file {path} does not exist")
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            if path.suffix == ".txt":
                yield line.strip()
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise CorpusError(f"{path}:{line_number}: not JSON ({error})") from error
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise CorpusError(f"{path}:{line_number}: a record needs a string field 'text'")
            yield record["text"]


def _hub_texts(spec: CorpusSpec) -> Iterator[str]:
    try:
        import datasets  # heavy; only when a Hub corpus is named
    except ImportError as error:  # pragma: no cover - datasets is a dependency
        raise CorpusError("the 'datasets' package is needed for a Hub corpus") from error
    try:
        dataset = datasets.load_dataset(spec.name, spec.config, split=spec.split, streaming=True)
        iterator = iter(dataset)
        first = next(iterator)
    except Exception as error:  # any network/Hub failure reads the same to the user
        raise CorpusError(
            f"cannot read the Hub dataset {spec.name!r} (config {spec.config!r}, split {spec.split!r}): "
            f"{type(error).__name__}: {error}. Offline? Name local .txt/.jsonl files instead"
        ) from error
    for record in _chain(first, iterator):
        text = record.get("text")
        if isinstance(text, str) and text.strip():
            yield text


def _chain(first, rest):
    yield first
    yield from rest


def corpus_texts(spec: CorpusSpec, model_dir: str | Path | None = None) -> Iterator[str]:
    """The texts of a corpus, lazily. ``model_dir`` locates the knowledge world for ``world``."""
    if spec.kind == "files":
        for path in spec.paths:
            yield from _file_texts(path)
    elif spec.kind == "hub":
        yield from _hub_texts(spec)
    elif spec.kind == "world":
        from edit_grpo_trl.world import KnowledgeWorld

        if model_dir is None or not (Path(model_dir) / "world.json").is_file():
            raise CorpusError(
                f"corpus 'world' needs a knowledge-world model folder with world.json; got {model_dir}"
            )
        yield from KnowledgeWorld.load(model_dir).corpus()
    else:
        raise CorpusError(f"unknown corpus kind {spec.kind!r}")
