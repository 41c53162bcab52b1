"""KnowEdit loaders: ZsRE, WikiData_counterfact, WikiData_recent and WikiBio as :class:`EditCase` lists.

KnowEdit (Hugging Face dataset ``zjunlp/KnowEdit``, folder ``benchmark/``) ships one JSON list per file.
The four splits share one record schema with split-specific fields:

============  ==========================================  ==================================================
split         files                                       what tells it apart
============  ==========================================  ==================================================
zsre          ``ZsRE/ZsRE-test-all.json``                  ``rephrase_prompt`` (and ``cond``); ``ground_truth``
                                                          is a list
counterfact   ``wiki_counterfact/{test,train}_cf.json``    ``ground_truth`` is a string; locality has
                                                          ``Forgetfulness``
recent        ``wiki_recent/recent_{test,train}.json``     no ``ground_truth`` (new facts have no old object)
wikibio       ``WikiBio/wikibio-{test,train}-all.json``    ``text`` / ``labels`` / ``concept`` in place of
                                                          ``prompt`` / ``target_new`` / ``subject``
============  ==========================================  ==================================================

Mapping to :class:`EditCase`: anchor = ``prompt``; ``rephrase_prompt`` (or ``rephrase``) -> held-out
generalization probes; each ``portability`` key (``Reasoning``, ``Subject_Aliasing``,
``Logical_Generalization``) -> portability probes with that key; each ``locality`` key
(``Relation_Specificity``, ``Forgetfulness``) -> locality probes with that key.

How this differs from EasyEdit (``KnowEditDataset`` and ``examples/run_knowedit_llama2.py``), on purpose:

* EasyEdit reduces every answer to its first string (it follows ``[0]`` until it reaches one); we keep
  every alias of every alias group. The first answer stays EasyEdit's, so teacher-forced scores agree.
* EasyEdit's example script never reads ZsRE's ``rephrase_prompt``; we keep it as the held-out
  generalization probe.
* EasyEdit fails on a record without ``locality``; we accept it (the case has no locality probes).
* Like EasyEdit, an item whose answers are all blank is left out; we log and count it.
* Like EasyEdit, ``subject`` / ``prompt`` / ``target_new`` fall back to ``concept`` / ``text`` /
  ``labels`` (WikiBio), and a probe whose ``prompt`` is a list contributes one probe per prompt.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edit_grpo_trl.data.cases import EditCase, Probe, ProbeKind
from edit_grpo_trl.data.records import (
    AnswerShape,
    DataFileError,
    FieldError,
    LoadedCases,
    RecordStats,
    convert_records,
    drop_probes_equal_to_anchor,
    parse_answers,
    read_records,
    require_text,
    text_list,
)

logger = logging.getLogger(__name__)

KNOWEDIT_REPO = "zjunlp/KnowEdit"
SPLITS = ("zsre", "counterfact", "recent", "wikibio")

# Hub paths of the benchmark files, by split and partition.
HUB_FILES: dict[str, dict[str, str]] = {
    "zsre": {"test": "benchmark/ZsRE/ZsRE-test-all.json"},
    "counterfact": {
        "test": "benchmark/wiki_counterfact/test_cf.json",
        "train": "benchmark/wiki_counterfact/train_cf.json",
    },
    "recent": {
        "test": "benchmark/wiki_recent/recent_test.json",
        "train": "benchmark/wiki_recent/recent_train.json",
    },
    "wikibio": {
        "test": "benchmark/WikiBio/wikibio-test-all.json",
        "train": "benchmark/WikiBio/wikibio-train-all.json",
    },
}

# Other names people use for the splits (KnowEdit's paper, its folder names, EasyEdit's --datatype).
_SPLIT_ALIASES = {
    "zsre": "zsre",
    "counterfact": "counterfact",
    "wiki_counterfact": "counterfact",
    "wikidata_counterfact": "counterfact",
    "cf": "counterfact",
    "recent": "recent",
    "wiki_recent": "recent",
    "wikidata_recent": "recent",
    "wikibio": "wikibio",
}

PORTABILITY_KEYS = ("Reasoning", "Subject_Aliasing", "Logical_Generalization")
LOCALITY_KEYS = ("Relation_Specificity", "Forgetfulness")

# Top-level fields the converter maps; everything else is kept in metadata["record_extra"].
_MAPPED_FIELDS = {
    "subject",
    "concept",
    "prompt",
    "text",
    "target_new",
    "labels",
    "ground_truth",
    "rephrase_prompt",
    "rephrase",
    "portability",
    "locality",
}


def canonical_split(split: str) -> str:
    """The split's canonical name (``zsre``, ``counterfact``, ``recent``, ``wikibio``) from any common alias."""
    key = split.strip().lower().replace("-", "_")
    if key not in _SPLIT_ALIASES:
        raise ValueError(f"unknown KnowEdit split {split!r}; expected one of {', '.join(SPLITS)}")
    return _SPLIT_ALIASES[key]


def detect_split(record: Any) -> str | None:
    """The split a record's fields point to, or None for something that is not a KnowEdit record."""
    if not isinstance(record, dict):
        return None
    if "prompt" not in record and ({"text", "labels", "concept"} & record.keys()):
        return "wikibio"
    if "prompt" not in record or "target_new" not in record:
        return None
    if "ground_truth" not in record:
        return "recent"
    if "rephrase_prompt" in record or "cond" in record:
        return "zsre"
    return "counterfact"


def detect_file_split(records: Sequence[Any], file: str | Path) -> str:
    """The split most records of a file point to (a minority that disagrees is then checked against it)."""
    votes = Counter(split for split in map(detect_split, records) if split is not None)
    if not votes:
        raise DataFileError(
            f"{file}: no record looks like KnowEdit (expected 'prompt' and 'target_new', or WikiBio's "
            "'text' / 'labels' / 'concept'); pass split= or another format"
        )
    (split, count), *others = votes.most_common()
    if others:
        logger.warning("%s: records point to several splits %s; reading all as %r", file, dict(votes), split)
    return split


@dataclass(frozen=True)
class _ProbeSpec:
    kind: ProbeKind
    top_field: str


def _probe_group(record: dict, spec: _ProbeSpec, stats: RecordStats) -> list[Probe]:
    """The probes of ``portability`` or ``locality``: {key: [{"prompt", "ground_truth"}, ...]}."""
    groups = record.get(spec.top_field)
    if groups is None:
        return []
    if not isinstance(groups, dict):
        raise FieldError(spec.top_field, f"must be an object of lists, got {type(groups).__name__}")
    probes: list[Probe] = []
    for key, items in groups.items():
        where = f"{spec.top_field}.{key}"
        if items is None:
            continue
        if not isinstance(items, list):
            raise FieldError(
                where, f"must be a list of {{prompt, ground_truth}} items, got {type(items).__name__}"
            )
        for position, item in enumerate(items):
            item_where = f"{where}[{position}]"
            if not isinstance(item, dict):
                raise FieldError(item_where, f"must be an object, got {type(item).__name__}")
            if "prompt" not in item:
                raise FieldError(f"{item_where}.prompt", "is missing")
            if "ground_truth" not in item:
                raise FieldError(f"{item_where}.ground_truth", "is missing")
            prompts = text_list(item["prompt"], f"{item_where}.prompt")
            answers, shape = parse_answers(item["ground_truth"], f"{item_where}.ground_truth")
            if not prompts or not answers:
                stats.dropped_probes[f"{spec.kind.value} item with a blank prompt or blank answers"] += 1
                continue
            stats.shape(spec.top_field, shape)
            probes.extend(Probe(prompt, answers, spec.kind, key) for prompt in prompts)
    return probes


_PORTABILITY = _ProbeSpec(ProbeKind.PORTABILITY, "portability")
_LOCALITY = _ProbeSpec(ProbeKind.LOCALITY, "locality")


def knowedit_record_to_case(
    record: dict, index: int, split: str, case_id: str, file: str = ""
) -> tuple[EditCase, RecordStats]:
    """One KnowEdit record as an :class:`EditCase` (raises :class:`FieldError` naming the bad field)."""
    stats = RecordStats()
    subject = require_text(record, "subject", "concept")
    prompt = require_text(record, "prompt", "text")
    target_field = "target_new" if "target_new" in record else "labels"
    if target_field not in record:
        raise FieldError("target_new", "is missing (expected 'target_new', or 'labels' for WikiBio)")
    target_new, target_shape = parse_answers(record[target_field], target_field)
    if not target_new:
        raise FieldError(target_field, "has no non-empty answer")
    stats.shape("target_new", target_shape)

    if split in ("zsre", "counterfact") and "ground_truth" not in record:
        raise FieldError("ground_truth", f"is missing (a {split} record names the old object)")
    old_answers, old_shape = parse_answers(record.get("ground_truth"), "ground_truth")
    stats.shape("ground_truth", old_shape)

    rephrase_field = "rephrase_prompt" if "rephrase_prompt" in record else "rephrase"
    if split == "zsre" and rephrase_field not in record:
        raise FieldError("rephrase_prompt", "is missing (every ZsRE record has a paraphrase)")
    rephrases = text_list(record[rephrase_field], rephrase_field) if rephrase_field in record else []

    if subject not in prompt:
        raise FieldError("subject", f"{subject!r} does not occur in the prompt {prompt!r}")

    probes = [Probe(text, target_new, ProbeKind.EVAL_GENERALIZATION) for text in rephrases]
    probes += _probe_group(record, _PORTABILITY, stats)
    probes += _probe_group(record, _LOCALITY, stats)
    probes = drop_probes_equal_to_anchor(prompt, probes, stats)

    metadata: dict[str, Any] = {"split": split, "index": index}
    if file:
        metadata["file"] = file
    if len(old_answers) > 1:
        metadata["target_true_aliases"] = list(old_answers)
    extra = {name: value for name, value in record.items() if name not in _MAPPED_FIELDS}
    if extra:
        metadata["record_extra"] = extra
    case = EditCase(
        case_id=case_id,
        subject=subject,
        prompt=prompt,
        target_new=target_new,
        target_true=old_answers[0] if old_answers else None,
        probes=tuple(probes),
        source=f"knowedit/{split}",
        metadata=metadata,
    )
    return case, stats


def load_knowedit_file(
    path: str | Path,
    split: str | None = None,
    limit: int | None = None,
    skip_invalid: bool = False,
) -> LoadedCases:
    """Read one KnowEdit JSON file. ``split`` is detected from the records' fields when not given.

    Case ids are ``"<file stem>-<record index>"`` (``"test_cf-17"``), stable across runs and limits.
    """
    path = Path(path)
    records = read_records(path)
    split = canonical_split(split) if split else detect_file_split(records, path)
    stem = path.stem

    def convert(record: dict, index: int) -> tuple[EditCase, RecordStats]:
        return knowedit_record_to_case(record, index, split, f"{stem}-{index}", file=str(path))

    loaded = convert_records(
        records, convert, file=path, format="knowedit", split=split, skip_invalid=skip_invalid, limit=limit
    )
    logger.info("%s: %d KnowEdit %s case(s)", path, len(loaded), split)
    return loaded


def knowedit_files_in(folder: str | Path, split: str | None = None, partition: str = "test") -> list[Path]:
    """The KnowEdit benchmark files of a folder (searched recursively), for one split or all of them."""
    folder = Path(folder)
    splits = [canonical_split(split)] if split else list(SPLITS)
    wanted = []
    for name in splits:
        if partition not in ("test", "train", "all"):
            raise ValueError(f"unknown partition {partition!r}; expected 'test', 'train' or 'all'")
        files = HUB_FILES[name]
        wanted += [Path(p).name for part, p in files.items() if partition in (part, "all")]
    found = sorted(p for p in folder.rglob("*.json") if p.name in wanted)
    if not found:
        raise DataFileError(
            f"{folder}: holds none of the KnowEdit files {wanted} (split={split!r}, partition={partition!r}); "
            "pass the JSON file itself to read a file with another name"
        )
    return found


def download_knowedit(
    split: str,
    partition: str = "test",
    cache_dir: str | Path | None = None,
    revision: str | None = None,
    local_files_only: bool = False,
) -> Path:
    """Fetch one KnowEdit file from the Hugging Face Hub (``zjunlp/KnowEdit``) into the Hub cache."""
    split = canonical_split(split)
    files = HUB_FILES[split]
    if partition not in files:
        raise ValueError(f"KnowEdit {split} has partitions {sorted(files)}, not {partition!r}")
    filename = files[partition]
    try:
        from huggingface_hub import hf_hub_download  # imported here: only this path needs the Hub client
    except ImportError as error:  # pragma: no cover - huggingface_hub ships with transformers
        raise DataFileError("reading KnowEdit from the Hub needs the huggingface_hub package") from error
    try:
        local = hf_hub_download(
            KNOWEDIT_REPO,
            filename,
            repo_type="dataset",
            revision=revision,
            cache_dir=str(cache_dir) if cache_dir else None,
            local_files_only=local_files_only,
        )
    except Exception as error:  # offline, missing file, auth: all end the same way for the user
        raise DataFileError(
            f"could not get {filename} of the dataset {KNOWEDIT_REPO} from the Hugging Face Hub "
            f"({type(error).__name__}: {error}). Without network access, download the file elsewhere "
            "and pass its local path (or the folder that holds it)."
        ) from error
    return Path(local)


def load_knowedit(
    source: str | Path,
    split: str | None = None,
    partition: str = "test",
    limit: int | None = None,
    skip_invalid: bool = False,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
) -> LoadedCases:
    """KnowEdit cases from a local file, a local folder, or the Hub.

    ``source`` is a JSON file; a folder (its KnowEdit files of ``split`` and ``partition`` are read,
    all splits when ``split`` is None); or ``"zjunlp/KnowEdit"`` / ``"hub"`` to download the ``split``
    file of ``partition`` (``split`` is then required). ``limit`` caps the number of cases returned.
    """
    path = Path(source)
    if path.is_file():
        return load_knowedit_file(path, split=split, limit=limit, skip_invalid=skip_invalid)
    if path.is_dir():
        parts = []
        for file in knowedit_files_in(path, split=split, partition=partition):
            remaining = None if limit is None else limit - sum(len(p) for p in parts)
            if remaining == 0:
                break
            parts.append(load_knowedit_file(file, split=split, limit=remaining, skip_invalid=skip_invalid))
        return LoadedCases.concatenate(parts, source=str(path), limit=limit)
    if str(source) in (KNOWEDIT_REPO, "hub"):
        if split is None:
            raise ValueError(
                f"reading {KNOWEDIT_REPO} from the Hub needs split= (one of {', '.join(SPLITS)})"
            )
        file = download_knowedit(split, partition, cache_dir=cache_dir, local_files_only=local_files_only)
        return load_knowedit_file(file, split=split, limit=limit, skip_invalid=skip_invalid)
    raise DataFileError(f"no KnowEdit file or folder at {source} (for the Hub, pass {KNOWEDIT_REPO!r})")


__all__ = [
    "HUB_FILES",
    "KNOWEDIT_REPO",
    "LOCALITY_KEYS",
    "PORTABILITY_KEYS",
    "SPLITS",
    "AnswerShape",
    "canonical_split",
    "detect_split",
    "download_knowedit",
    "knowedit_files_in",
    "knowedit_record_to_case",
    "load_knowedit",
    "load_knowedit_file",
]
