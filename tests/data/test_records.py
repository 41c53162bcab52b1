"""Answer shapes, record files and located schema errors (edit_grpo_trl.data.records)."""

from __future__ import annotations

import json

import pytest

from edit_grpo_trl.data.records import (
    AnswerShape,
    DataFileError,
    FieldError,
    RecordError,
    parse_answers,
    read_records,
)


def test_string_answer_is_one_answer():
    assert parse_answers("  Berlin ", "ground_truth") == (("Berlin",), AnswerShape.STRING)


def test_alias_list_keeps_every_alias_in_order():
    answers, shape = parse_answers(["Berlin", "Berlin, Germany", "DE-BE"], "gt")
    assert answers == ("Berlin", "Berlin, Germany", "DE-BE")
    assert shape is AnswerShape.ALIASES


def test_alias_groups_are_flattened_and_the_first_is_easyedits_choice():
    value = [["no"], ["incorrect", "no"], ["false"]]
    answers, shape = parse_answers(value, "gt")
    assert answers == ("no", "incorrect", "false")  # the repeated "no" once
    assert shape is AnswerShape.ALIAS_GROUPS
    first = value
    while isinstance(first, list):  # EasyEdit's reduction: follow [0] to a string
        first = first[0]
    assert answers[0] == first


def test_absent_answer_and_blank_aliases():
    assert parse_answers(None, "gt") == ((), AnswerShape.ABSENT)
    assert parse_answers(["", "  ", "Paris"], "gt")[0] == ("Paris",)
    assert parse_answers(["", " "], "gt")[0] == ()


@pytest.mark.parametrize(
    ("value", "field"),
    [(5, "gt"), ([], "gt"), (["a", 3], "gt[1]"), ([["a"], [None]], "gt[1]"), ({"a": 1}, "gt")],
)
def test_malformed_answers_name_the_field(value, field):
    with pytest.raises(FieldError) as caught:
        parse_answers(value, "gt")
    assert caught.value.field == field


def test_record_error_message_names_file_index_and_field():
    error = RecordError("data/x.json", 7, "locality.Forgetfulness[0].prompt", "is missing")
    assert str(error) == "data/x.json: record 7, field 'locality.Forgetfulness[0].prompt': is missing"
    assert (error.file, error.index, error.field) == ("data/x.json", 7, "locality.Forgetfulness[0].prompt")


def test_read_json_list_and_json_lines(tmp_path):
    records = [{"a": 1}, {"a": 2}]
    (tmp_path / "list.json").write_text(json.dumps(records))
    (tmp_path / "lines.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    (tmp_path / "lines.json").write_text("\n".join(json.dumps(r) for r in records))
    for name in ("list.json", "lines.jsonl", "lines.json"):
        assert read_records(tmp_path / name) == records


def test_unreadable_files_are_refused_with_their_path(tmp_path):
    with pytest.raises(DataFileError, match="no data file"):
        read_records(tmp_path / "missing.json")
    (tmp_path / "object.json").write_text('{"data": []}')
    with pytest.raises(DataFileError, match=r"object\.json: expected a JSON list.*'data'"):
        read_records(tmp_path / "object.json")
    (tmp_path / "broken.json").write_text('[{"a": 1},')
    with pytest.raises(DataFileError, match=r"broken\.json: not valid JSON"):
        read_records(tmp_path / "broken.json")
    (tmp_path / "broken.jsonl").write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(DataFileError, match=r"broken\.jsonl:2: not valid JSON"):
        read_records(tmp_path / "broken.jsonl")
