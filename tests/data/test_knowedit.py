"""KnowEdit loaders: every fixture record checked field by field, split detection, located errors."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import pytest

from edit_grpo_trl.data.cases import ProbeKind
from edit_grpo_trl.data.knowedit import (
    canonical_split,
    detect_split,
    download_knowedit,
    knowedit_files_in,
    load_knowedit,
    load_knowedit_file,
)
from edit_grpo_trl.data.records import DataFileError, RecordError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "knowedit"
FILES = {
    "zsre": FIXTURES / "ZsRE" / "ZsRE-test-all.json",
    "counterfact": FIXTURES / "wiki_counterfact" / "test_cf.json",
    "recent": FIXTURES / "wiki_recent" / "recent_test.json",
    "wikibio": FIXTURES / "WikiBio" / "wikibio-test-all.json",
}


def _raw(split: str) -> list[dict]:
    return json.loads(FILES[split].read_text(encoding="utf-8"))


def _flatten(value) -> list[str]:
    """Every alias, in order, without repeats: the test's own reading of the three answer shapes."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value.strip()] if value.strip() else []
    out: list[str] = []
    for item in value:
        for alias in _flatten(item):
            if alias not in out:
                out.append(alias)
    return out


def _easyedit_first(value):
    while isinstance(value, list):
        value = value[0]
    return value


@pytest.mark.parametrize("split", sorted(FILES))
def test_split_is_detected_from_the_fields(split):
    loaded = load_knowedit_file(FILES[split])
    assert loaded.split == split
    assert loaded.format == "knowedit"
    assert len(loaded) == len(_raw(split)) >= 10
    assert all(case.source == f"knowedit/{split}" for case in loaded)


@pytest.mark.parametrize("split", sorted(FILES))
def test_every_record_is_read_field_by_field(split):
    loaded = load_knowedit_file(FILES[split])
    stem = FILES[split].stem
    for index, (record, case) in enumerate(zip(_raw(split), loaded, strict=True)):
        assert case.case_id == f"{stem}-{index}"
        assert case.metadata["index"] == index and case.metadata["split"] == split
        assert case.subject == record.get("subject", record.get("concept"))
        assert case.prompt == record.get("prompt", record.get("text"))
        assert list(case.target_new) == _flatten(record.get("target_new", record.get("labels")))
        old = _flatten(record.get("ground_truth"))
        assert case.target_true == (old[0] if old else None)
        assert case.metadata.get("target_true_aliases") == (old if len(old) > 1 else None)
        rephrase = record.get("rephrase_prompt", record.get("rephrase"))
        assert [p.prompt for p in case.probes_of(ProbeKind.EVAL_GENERALIZATION)] == (
            [rephrase] if rephrase else []
        )
        assert all(p.answers == case.target_new for p in case.probes_of(ProbeKind.EVAL_GENERALIZATION))
        for field, kind in (("portability", ProbeKind.PORTABILITY), ("locality", ProbeKind.LOCALITY)):
            expected = [
                (key, item["prompt"], _flatten(item["ground_truth"]))
                for key, items in record.get(field, {}).items()
                for item in items
            ]
            got = [(p.key, p.prompt, list(p.answers)) for p in case.probes_of(kind)]
            assert got == expected, (index, field)
            for (_, _, answers), (key, prompt, _) in zip(got, expected, strict=True):
                item = next(i for i in record[field][key] if i["prompt"] == prompt)
                assert answers[0] == _easyedit_first(item["ground_truth"])
        assert not case.probes_of(ProbeKind.TRAIN_GENERALIZATION)


def test_zsre_specifics():
    cases = load_knowedit_file(FILES["zsre"])
    first = cases[0]
    assert first.target_new == ("University of Leiden",)
    assert first.target_true == "Utrecht University"
    assert first.probes_of(ProbeKind.EVAL_GENERALIZATION)[0].prompt == "Where did Aldric Vanmoor study?"
    assert first.probes_of(ProbeKind.PORTABILITY, "Reasoning")[0].answers == ("1575", "in 1575")
    assert cases[1].probes_of(ProbeKind.PORTABILITY, "Reasoning")[0].answers == ("1575",)
    assert cases[1].metadata["target_true_aliases"] == ["Irish", "Irish Gaelic"]
    assert first.metadata["record_extra"] == {
        "cond": "Utrecht University >> University of Leiden || " + first.prompt
    }
    assert cases[0].probes_of(ProbeKind.LOCALITY)[1].answers == ("Netherlands", "Holland")
    assert not cases[3].probes_of(ProbeKind.LOCALITY)  # the record without locality
    assert not cases[5].probes_of(ProbeKind.PORTABILITY)  # the record without portability


def test_counterfact_and_recent_specifics():
    cf = load_knowedit_file(FILES["counterfact"])
    assert cf[1].target_true == "Turkey"
    reasoning = cf[1].probes_of(ProbeKind.PORTABILITY, "Reasoning")
    assert reasoning[0].answers == ("Syrian pound", "SYP", "Syrian lira")  # every alias of the group
    assert cf[0].probes_of(ProbeKind.LOCALITY, "Forgetfulness")[0].answers == ("bishop of Oslo",)
    assert not cf[7].probes_of(ProbeKind.LOCALITY)
    recent = load_knowedit_file(FILES["recent"])
    assert all(case.target_true is None for case in recent)
    logical = recent[0].probes_of(ProbeKind.PORTABILITY, "Logical_Generalization")[0]
    assert logical.answers == ("no", "incorrect", "false", "is not alive")
    assert (
        recent[4].probes_of(ProbeKind.EVAL_GENERALIZATION)[0].prompt
        == "Corin Hale's country of citizenship is"
    )
    assert not recent[2].probes_of(ProbeKind.LOCALITY)


def test_wikibio_reads_concept_text_labels():
    bio = load_knowedit_file(FILES["wikibio"])
    assert bio[0].subject == "halvard ness"
    assert bio[0].prompt.startswith("This is a Wikipedia passage about halvard ness.")
    assert bio[0].target_new == ("He described over forty species of moss from the Svalbard archipelago.",)
    assert [p.answers for p in bio[0].probes_of(ProbeKind.LOCALITY, "Relation_Specificity")] == [
        ("botany",)
    ] * 2
    assert not bio[6].probes_of(ProbeKind.LOCALITY)


def test_answer_shapes_are_counted_as_written():
    shapes = load_knowedit_file(FILES["recent"]).answer_shapes
    assert shapes["ground_truth:absent"] == 11
    assert shapes["portability:alias_groups"] > 0 and shapes["locality:alias_groups"] == 10
    assert load_knowedit_file(FILES["counterfact"]).answer_shapes["ground_truth:string"] == 11
    assert load_knowedit_file(FILES["zsre"]).answer_shapes["ground_truth:alias_list"] == 11


def test_detect_split_on_single_records():
    assert (
        detect_split({"prompt": "p", "target_new": "t", "ground_truth": ["o"], "rephrase_prompt": "r"})
        == "zsre"
    )
    assert detect_split({"prompt": "p", "target_new": "t", "ground_truth": "o"}) == "counterfact"
    assert detect_split({"prompt": "p", "target_new": "t"}) == "recent"
    assert detect_split({"text": "t", "labels": "l", "concept": "c"}) == "wikibio"
    assert detect_split({"question": "q"}) is None
    assert detect_split(["not", "a", "record"]) is None


def test_split_names_and_aliases():
    assert canonical_split("WikiData_counterfact") == "counterfact"
    assert canonical_split("wiki-recent") == "recent"
    assert canonical_split("ZsRE") == "zsre"
    with pytest.raises(ValueError, match="unknown KnowEdit split 'convsent'"):
        canonical_split("convsent")


def test_folder_reads_every_split_or_the_one_asked_for():
    everything = load_knowedit(FIXTURES)
    assert len(everything) == sum(len(_raw(split)) for split in FILES)
    assert len({case.case_id for case in everything}) == len(everything)
    assert {case.source for case in everything} == {f"knowedit/{split}" for split in FILES}
    only = load_knowedit(FIXTURES, split="wiki_counterfact")
    assert [case.case_id for case in only] == [f"test_cf-{i}" for i in range(len(_raw("counterfact")))]
    assert only.split == "counterfact"
    limited = load_knowedit(FIXTURES, limit=13)
    assert [c.case_id for c in limited] == [c.case_id for c in everything][:13]
    with pytest.raises(DataFileError, match="train_cf.json"):
        knowedit_files_in(FIXTURES, split="counterfact", partition="train")


def test_limit_keeps_the_first_cases():
    loaded = load_knowedit_file(FILES["zsre"], limit=3)
    assert [case.case_id for case in loaded] == ["ZsRE-test-all-0", "ZsRE-test-all-1", "ZsRE-test-all-2"]


def _write(tmp_path: Path, records: list, name: str = "ZsRE-test-all.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


def _corrupt(path_fix, tmp_path, split="zsre", index=4):
    records = copy.deepcopy(_raw(split))
    path_fix(records[index])
    return _write(tmp_path, records, FILES[split].name)


@pytest.mark.parametrize(
    ("split", "corruption", "field", "message"),
    [
        ("zsre", lambda r: r.pop("prompt"), "prompt", "missing"),
        ("zsre", lambda r: r.update(target_new=7), "target_new", "string or a list"),
        ("zsre", lambda r: r.pop("rephrase_prompt"), "rephrase_prompt", "missing"),
        ("zsre", lambda r: r.update(subject="Nobody Here"), "subject", "does not occur in the prompt"),
        ("zsre", lambda r: r.update(locality=["x"]), "locality", "object of lists"),
        (
            "zsre",
            lambda r: r["portability"]["Reasoning"][0].update(ground_truth=5),
            "portability.Reasoning[0].ground_truth",
            "string or a list",
        ),
        (
            "zsre",
            lambda r: r["locality"]["Relation_Specificity"][1].pop("prompt"),
            "locality.Relation_Specificity[1].prompt",
            "missing",
        ),
        (
            "counterfact",
            lambda r: r.update(ground_truth=[["ok"], [3]]),
            "ground_truth[1]",
            "string or a list",
        ),
        (
            "counterfact",
            lambda r: r["locality"].update(Forgetfulness="x"),
            "locality.Forgetfulness",
            "must be a list",
        ),
        ("wikibio", lambda r: r.update(labels=""), "labels", "no non-empty answer"),
    ],
)
def test_malformed_record_names_file_index_and_field(tmp_path, split, corruption, field, message):
    path = _corrupt(corruption, tmp_path, split)
    with pytest.raises(RecordError) as caught:
        load_knowedit_file(path, split=split)
    error = caught.value
    assert (error.file, error.index, error.field) == (str(path), 4, field)
    assert message in error.problem
    assert str(path) in str(error) and "record 4" in str(error)


def test_skip_invalid_skips_counts_and_logs(tmp_path, caplog):
    records = copy.deepcopy(_raw("zsre"))
    records[2].pop("target_new")
    records[7] = "not an object"
    path = _write(tmp_path, records)
    with caplog.at_level(logging.WARNING):
        loaded = load_knowedit_file(path, skip_invalid=True)
    assert len(loaded) == len(records) - 2
    assert loaded.num_skipped == 2
    assert [(e.index, e.field) for e in loaded.skipped] == [(2, "target_new"), (7, None)]
    assert "skipped 2 invalid record(s)" in caplog.text
    assert "ZsRE-test-all-2" not in {case.case_id for case in loaded}


def test_record_not_matching_the_given_split_is_refused(tmp_path):
    with pytest.raises(RecordError) as caught:
        load_knowedit_file(FILES["recent"], split="counterfact")
    assert (caught.value.index, caught.value.field) == (0, "ground_truth")
    loaded = load_knowedit_file(FILES["recent"], split="counterfact", skip_invalid=True)
    assert len(loaded) == 0 and loaded.num_skipped == len(_raw("recent"))


def test_blank_probe_answers_are_dropped_and_counted(tmp_path, caplog):
    records = copy.deepcopy(_raw("counterfact"))
    records[0]["locality"]["Relation_Specificity"][0]["ground_truth"] = "  "
    path = _write(tmp_path, records, "test_cf.json")
    with caplog.at_level(logging.WARNING):
        loaded = load_knowedit_file(path)
    assert not loaded[0].probes_of(ProbeKind.LOCALITY, "Relation_Specificity")
    assert sum(loaded.dropped_probes.values()) == 1
    assert "dropped 1 probe(s)" in caplog.text


def test_probe_identical_to_the_anchor_is_not_a_held_out_probe(tmp_path):
    records = copy.deepcopy(_raw("zsre"))
    records[0]["rephrase_prompt"] = records[0]["prompt"].upper()
    loaded = load_knowedit_file(_write(tmp_path, records))
    assert not loaded[0].probes_of(ProbeKind.EVAL_GENERALIZATION)
    assert loaded.dropped_probes["eval_generalization prompt equals the anchor"] == 1


def test_a_list_of_prompts_gives_one_probe_each(tmp_path):
    records = copy.deepcopy(_raw("wikibio"))
    records[0]["locality"]["Relation_Specificity"] = [
        {
            "prompt": ["The field of work of halvard ness is", "halvard ness works in"],
            "ground_truth": ["botany"],
        }
    ]
    loaded = load_knowedit_file(_write(tmp_path, records, "wikibio-test-all.json"))
    assert [p.prompt for p in loaded[0].probes_of(ProbeKind.LOCALITY)] == [
        "The field of work of halvard ness is",
        "halvard ness works in",
    ]


def test_file_without_knowedit_records_is_refused(tmp_path):
    path = _write(tmp_path, [{"question": "q", "answer": "a"}] * 3, "other.json")
    with pytest.raises(DataFileError, match="no record looks like KnowEdit"):
        load_knowedit_file(path)


def test_hub_download_fails_clearly_when_offline(tmp_path):
    # local_files_only: the Hub client looks only in the (empty) cache, so nothing touches the network.
    with pytest.raises(DataFileError) as caught:
        download_knowedit("zsre", cache_dir=tmp_path, local_files_only=True)
    message = str(caught.value)
    assert "benchmark/ZsRE/ZsRE-test-all.json" in message and "zjunlp/KnowEdit" in message
    assert "local path" in message
    with pytest.raises(ValueError, match="needs split="):
        load_knowedit("zjunlp/KnowEdit")
    with pytest.raises(ValueError, match="partitions"):
        download_knowedit("zsre", partition="train", cache_dir=tmp_path, local_files_only=True)
