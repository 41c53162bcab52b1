"""EasyEdit's flat format, MEND ZsRE, QAEdit, saved cases, and the load_edit_cases dispatcher."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from edit_grpo_trl.data.cases import ProbeKind, save_cases
from edit_grpo_trl.data.formats import WorldSpec, detect_format, load_edit_cases, parse_world_spec
from edit_grpo_trl.data.records import DataFileError, RecordError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _raw(name: str) -> list[dict]:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def _as_list(value) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def test_easyedit_flat_field_by_field():
    loaded = load_edit_cases(FIXTURES / "easyedit_flat.json")
    assert loaded.format == "easyedit" and len(loaded) == len(_raw("easyedit_flat.json")) >= 10
    for record, case in zip(_raw("easyedit_flat.json"), loaded, strict=True):
        assert case.case_id == str(record["case_id"])
        assert (case.subject, case.prompt) == (record["subject"], record["prompt"])
        assert list(case.target_new) == _as_list(record["target_new"])
        assert case.target_true == record["ground_truth"]
        assert [p.prompt for p in case.probes_of(ProbeKind.EVAL_GENERALIZATION)] == [
            record["rephrase_prompt"]
        ]
        locality = case.probes_of(ProbeKind.LOCALITY)
        if "locality_prompt" not in record:
            assert not locality
            continue
        prompts = _as_list(record["locality_prompt"])
        answers = (
            record["locality_ground_truth"]
            if isinstance(record["locality_prompt"], list)
            else [record["locality_ground_truth"]]
        )
        assert [(p.prompt, list(p.answers), p.key) for p in locality] == [
            (prompt, _as_list(answer), "neighborhood")
            for prompt, answer in zip(prompts, answers, strict=True)
        ]
        assert case.metadata["record_extra"]["paraphrases"] == record["paraphrases"]
    assert loaded[8].target_new == ("surgeon", "surgical doctor")
    assert loaded[6].probes_of(ProbeKind.LOCALITY)[1].answers == ("Italy", "Italian Republic")


def test_qaedit_field_by_field():
    loaded = load_edit_cases(FIXTURES / "qaedit.json")
    assert loaded.format == "qaedit" and len(loaded) >= 10
    for record, case in zip(_raw("qaedit.json"), loaded, strict=True):
        assert case.case_id == f"{record['source']}/{record['id']}"
        assert case.metadata["qaedit_id"] == record["id"]
        assert (case.subject, case.prompt, case.target_new) == (
            record["subject"],
            record["prompt"],
            (record["target"],),
        )
        assert case.target_true is None
        assert case.metadata["dataset"] == record["source"]
        assert [p.prompt for p in case.probes_of(ProbeKind.EVAL_GENERALIZATION)] == [record["rephrase"]]
        # Every locality item, where the paper's code reads only the first.
        assert [(p.prompt, p.answers) for p in case.probes_of(ProbeKind.LOCALITY)] == [
            (item["loc"], (item["loc_ans"],)) for item in record.get("locality", [])
        ]
    assert len(loaded[2].probes_of(ProbeKind.LOCALITY)) == 2
    assert not loaded[5].probes_of(ProbeKind.LOCALITY)


def test_qaedit_ids_repeat_across_sources_but_not_within_one():
    records = _raw("qaedit.json")
    # As in the published QAEdit sample: the same id under two sources is two different questions.
    assert len({r["id"] for r in records}) < len(records)
    loaded = load_edit_cases(FIXTURES / "qaedit.json")
    assert len({case.case_id for case in loaded}) == len(records)
    assert [c.case_id for c in loaded if c.case_id.endswith("/3368")] == ["SQA/3368", "TQA/3368"]


def test_qaedit_true_duplicate_names_file_index_and_id(tmp_path):
    records = copy.deepcopy(_raw("qaedit.json"))
    records[7].update(source=records[1]["source"], id=records[1]["id"])  # TQA/918 again
    path = tmp_path / "qaedit.json"
    path.write_text(json.dumps(records))
    with pytest.raises(RecordError) as caught:
        load_edit_cases(path)
    assert (caught.value.file, caught.value.index, caught.value.field) == (str(path), 7, "id")
    assert "'TQA/918'" in str(caught.value) and "record 1" in str(caught.value)
    assert str(path) in str(caught.value) and "record 7" in str(caught.value)


def test_qaedit_without_source_keeps_the_plain_id(tmp_path):
    records = copy.deepcopy(_raw("qaedit.json"))[:3]
    for record in records:
        record.pop("source")
    path = tmp_path / "qaedit.json"
    path.write_text(json.dumps(records))
    assert [c.case_id for c in load_edit_cases(path)] == [str(r["id"]) for r in records]
    records[2]["id"] = records[0]["id"]
    path.write_text(json.dumps(records))
    with pytest.raises(RecordError, match=r"record 2, field 'id'.*repeats the case id of record 0"):
        load_edit_cases(path)


def test_zsre_mend_field_by_field():
    loaded = load_edit_cases(FIXTURES / "zsre_mend.json")
    assert loaded.format == "zsre_mend"
    for index, (record, case) in enumerate(zip(_raw("zsre_mend.json"), loaded, strict=True)):
        assert case.case_id == str(index)
        assert (case.prompt, case.target_new) == (record["src"], (record["alt"],))
        assert case.target_true == record["answers"][0]
        assert case.probes_of(ProbeKind.LOCALITY)[0].prompt.startswith("nq question: ")
        assert case.probes_of(ProbeKind.EVAL_GENERALIZATION)[0].prompt == record["rephrase"]
        assert case.metadata["record_extra"]["pred"] == record["pred"]


def test_zsre_mend_one_hop_portability_keeps_the_recalled_relation():
    records = _raw("zsre_mend.json")
    loaded = load_edit_cases(FIXTURES / "zsre_mend.json")
    for record, case in zip(records, loaded, strict=True):
        portability = record.get("portability")
        probes = [(p.prompt, p.answers, p.key) for p in case.probes_of(ProbeKind.PORTABILITY)]
        extra = case.metadata["record_extra"].get("portability")
        if portability is None:
            assert not probes and extra is None
            continue
        assert probes == [(portability["New Question"], (portability["New Answer"],), "one_hop")]
        assert extra == {"Recalled Relation": portability["Recalled Relation"]}


def test_format_detection():
    assert detect_format({"src": "q", "alt": "a", "subject": "s"}) == "zsre_mend"
    assert detect_format({"id": 1, "prompt": "q?", "target": "a", "subject": "s", "locality": []}) == "qaedit"
    assert (
        detect_format({"case_id": 0, "prompt": "p", "target_new": "t", "locality_prompt": "l"}) == "easyedit"
    )
    assert detect_format({"prompt": "p", "target_new": "t", "locality": {}}) == "knowedit"
    assert detect_format({"case_id": "a", "prompt": "p", "target_new": ["t"], "probes": []}) == "cases"
    assert detect_format({"foo": 1}) is None


def test_saved_cases_round_trip(tmp_path):
    cases = list(load_edit_cases(FIXTURES / "knowedit"))
    path = save_cases(cases, tmp_path / "cases.jsonl")
    again = load_edit_cases(path)
    assert again.format == "cases"
    assert [c.to_dict() for c in again] == [c.to_dict() for c in cases]
    assert len(load_edit_cases(path, limit=5)) == 5


def test_folder_and_explicit_format_dispatch():
    folder = load_edit_cases(FIXTURES / "knowedit", split="recent")
    assert folder.format == "knowedit" and folder.split == "recent"
    assert len(load_edit_cases(FIXTURES / "qaedit.json", format="qaedit", limit=4)) == 4


@pytest.mark.parametrize(
    ("name", "index", "corruption", "field"),
    [
        ("easyedit_flat.json", 3, lambda r: r.pop("locality_ground_truth"), "locality_ground_truth"),
        ("easyedit_flat.json", 6, lambda r: r["locality_ground_truth"].pop(), "locality_ground_truth"),
        ("easyedit_flat.json", 2, lambda r: r.update(case_id=101), "case_id"),  # repeats record 1's id
        ("easyedit_flat.json", 5, lambda r: r.update(case_id=[1]), "case_id"),
        ("qaedit.json", 3, lambda r: r["locality"][0].pop("loc_ans"), "locality[0].loc_ans"),
        ("qaedit.json", 1, lambda r: r.update(locality="nope"), "locality"),
        ("qaedit.json", 4, lambda r: r.pop("target"), "target"),
        ("qaedit.json", 6, lambda r: r.update(source=["NQ"]), "source"),
        ("zsre_mend.json", 9, lambda r: r.update(alt=""), "alt"),
    ],
)
def test_malformed_records_name_file_index_and_field(tmp_path, name, index, corruption, field):
    records = copy.deepcopy(_raw(name))
    corruption(records[index])
    path = tmp_path / name
    path.write_text(json.dumps(records))
    with pytest.raises(RecordError) as caught:
        load_edit_cases(path)
    assert (caught.value.file, caught.value.index, caught.value.field) == (str(path), index, field)
    loaded = load_edit_cases(path, skip_invalid=True)
    assert loaded.num_skipped == 1 and len(loaded) == len(records) - 1


def test_unknown_sources_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown format"):
        load_edit_cases(FIXTURES / "qaedit.json", format="csv")
    with pytest.raises(DataFileError, match="no data file or folder"):
        load_edit_cases(tmp_path / "nothing.json")
    odd = tmp_path / "odd.json"
    odd.write_text(json.dumps([{"foo": 1}]))
    with pytest.raises(DataFileError, match="cannot tell the format"):
        load_edit_cases(odd)


def test_world_names_delegate_to_the_knowledge_world():
    world = pytest.importorskip("edit_grpo_trl.world")
    if not hasattr(world, "KnowledgeWorld"):
        pytest.skip("the knowledge world is not built yet")
    loaded = load_edit_cases("world:tiny", limit=3)
    direct = world.KnowledgeWorld.generate(size="tiny", seed=0).edit_cases(num_cases=3, seed=0)
    assert loaded.format == "world"
    assert [c.to_dict() for c in loaded] == [c.to_dict() for c in direct]


def test_world_names_follow_one_rule(tmp_path):
    assert parse_world_spec("world:tiny") == WorldSpec(size="tiny", seed=0)
    assert parse_world_spec("world:small:3") == WorldSpec(size="small", seed=3)
    assert parse_world_spec("world::2") == WorldSpec(size="tiny", seed=2)
    assert parse_world_spec(f"world:{tmp_path}") == WorldSpec(folder=tmp_path)  # an existing folder
    with pytest.raises(ValueError, match="the seed after the size must be an integer"):
        parse_world_spec("world:tiny:one")
    with pytest.raises(ValueError, match="is not a 'world:' name"):
        parse_world_spec("knowedit:zsre")
