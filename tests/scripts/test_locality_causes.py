"""The pure parts of scripts/locality_causes.py, on hand-built cases and probe rows."""

import importlib.util
from pathlib import Path

import pytest

from edit_grpo_trl.data.cases import EditCase, Probe, ProbeKind

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "locality_causes.py"
spec = importlib.util.spec_from_file_location("locality_causes", SCRIPT)
causes = importlib.util.module_from_spec(spec)
spec.loader.exec_module(causes)

CITIES = ["Oslo", "Lima", "Rome", "Kyoto", "Hue"]
JOBS = ["Acme", "Globex", "Initech"]
WORLD = {"birth_city": CITIES, "employer": JOBS}


def locality(prompt, answer, key):
    return Probe(prompt, (answer,), ProbeKind.LOCALITY, key)


CASES = [
    # 0: birth city of Ana -> Lima; its probes: Ana's employer (the same subject), a neighbour's city, a
    # random fact (another person's employer)
    EditCase(
        "c0",
        "Ana",
        "Ana was born in",
        ("Lima",),
        "Oslo",
        (
            locality("Ana works for", "Acme", "Relation_Specificity"),
            locality("Bo Li was born in", "Oslo", "neighborhood"),
            locality("Cyd works for", "Globex", "random"),
        ),
        relation="birth_city",
    ),
    # 1: Dee's employer -> Initech
    EditCase("c1", "Dee", "Dee works for", ("Initech",), "Acme", relation="employer"),
    # 2: Eve's birth city -> Kyoto
    EditCase("c2", "Eve", "Eve was born in", ("Kyoto",), "Rome", relation="birth_city"),
]


def row(case_id, key, prompt, span, generation=None):
    return {
        "case_id": case_id,
        "family": "locality",
        "key": key,
        "prompt": prompt,
        "answer_span": span,
        "generation": generation if generation is not None else span,
    }


PRE = [
    {"case_id": "c0", "family": "reliability", "key": None, "prompt": "Ana was born in"},
    row("c0", "Relation_Specificity", "Ana works for", "Acme"),
    row("c0", "neighborhood", "Bo Li was born in", "Oslo"),
    row("c0", "random", "Cyd works for", "Globex"),
]


def test_relation_of_tells_apart_anchors_that_share_words_and_multiword_subjects():
    cases = [
        EditCase("a", "Ana", "Ana works for", ("Acme",), relation="employer"),
        EditCase("b", "Bo", "Bo works as a", ("nurse",), relation="profession"),
    ]
    patterns = causes.relation_patterns(cases)
    assert causes.relation_of("Bo Li works as a", patterns) == "profession"
    assert causes.relation_of("Cyd works for", patterns) == "employer"
    assert causes.relation_of("Cyd plays the", patterns) is None


def test_transitions_classify_each_changed_answer():
    after = [
        PRE[0],
        row("c0", "Relation_Specificity", "Ana works for", "Initech", "Initech ."),  # case 1's new employer
        row("c0", "neighborhood", "Bo Li was born in", "Lima"),  # this case's new city
        row("c0", "random", "Cyd works for", "Globex"),  # unchanged
    ]
    records = causes.locality_transitions(CASES, PRE, after, WORLD)
    assert [r["changed"] for r in records] == [True, True, False]
    specificity, neighbour, _ = records
    assert specificity["relation"] == "employer" and specificity["case_relation"] == "birth_city"
    assert specificity["destination"] == "other_new_object"
    assert specificity["attractors"] == ["c1"] and specificity["same_relation"] is True
    assert specificity["chance_same_relation"] == pytest.approx(1 / 2)  # c1 and c2: one employer edit
    # employers other than the old Acme: Globex, Initech; Initech is an edited object
    assert specificity["edited_object"] and specificity["chance_edited_object"] == pytest.approx(1 / 2)
    assert neighbour["destination"] == "own_new_object"
    # cities other than the old Oslo: 4; edited: Lima and Kyoto
    assert neighbour["chance_edited_object"] == pytest.approx(2 / 4)

    table = causes.summarize_transitions(records)
    assert table["all"]["probes"] == 3 and table["all"]["changed"] == 2
    assert table["all"]["own_new_object"] == 1 and table["all"]["other_new_object"] == 1
    assert table["random"]["changed"] == 0
    assert table["Relation_Specificity"]["other_new_object_same_relation"] == 1


def test_a_wrong_type_answer_and_an_unedited_object_are_told_apart():
    after = [
        PRE[0],
        row("c0", "Relation_Specificity", "Ana works for", "Kyoto"),  # case 2's city for an employer prompt
        row("c0", "neighborhood", "Bo Li was born in", "Hue"),  # a city nobody edits
        row("c0", "random", "Cyd works for", "Rome"),  # a city that is no case's new object
    ]
    specificity, neighbour, random_fact = causes.locality_transitions(CASES, PRE, after, WORLD)
    assert specificity["destination"] == "other_new_object" and specificity["same_relation"] is False
    assert not specificity["same_type"] and not specificity["edited_object"]
    assert neighbour["destination"] == "other" and neighbour["same_type"] and not neighbour["edited_object"]
    assert random_fact["destination"] == "other" and not random_fact["same_type"]
    table = causes.summarize_transitions([specificity, neighbour, random_fact])["all"]
    assert table["other_new_object_same_relation"] == 0 and table["same_type"] == 1
    assert table["same_type_edited_object"] == 0


def test_transitions_refuse_points_with_other_probes():
    after = [PRE[0], PRE[2], PRE[1], PRE[3]]
    with pytest.raises(ValueError, match="same locality probes"):
        causes.locality_transitions(CASES, PRE, after, WORLD)


def test_stage2_breaks_keeps_only_what_stage1_kept_and_counts_repairs():
    at_stage1 = [
        {"case_id": "c0", "prompt": "p1", "changed": False},
        {"case_id": "c0", "prompt": "p2", "changed": True},
        {"case_id": "c0", "prompt": "p3", "changed": True},
        {"case_id": "c0", "prompt": "p4", "changed": False},
    ]
    at_refined = [
        {"case_id": "c0", "prompt": "p1", "changed": True},  # broken by stage 2
        {"case_id": "c0", "prompt": "p2", "changed": False},  # repaired by stage 2
        {"case_id": "c0", "prompt": "p3", "changed": True},  # broken by stage 1, still broken
        {"case_id": "c0", "prompt": "p4", "changed": False},
    ]
    kept, repaired = causes.stage2_breaks(at_stage1, at_refined)
    assert [r["prompt"] for r in kept] == ["p1", "p4"] and kept[0]["changed"]
    assert repaired == 1


def test_prompt_sets_split_trained_prompts_and_refuse_a_leak():
    sets = causes.prompt_sets(["a", "b", "a"], ["b", "c", "d"], ["e", "e", "f"])
    assert sets == {"agt_rows": ["a", "b"], "pool_only": ["c", "d"], "evaluated": ["e", "f"]}
    with pytest.raises(ValueError, match="also training prompts"):
        causes.prompt_sets(["a"], ["c"], ["c", "e"])


def test_kept_share_matches_normalized_answers():
    answers = {"p": "the Oslo", "q": "Lima", "r": "Rome"}
    reference = {"p": "Oslo", "q": "Lima", "r": "Hue"}
    assert causes.kept_share(answers, reference, ["p", "q", "r"]) == (3, 2)


def test_rewards_up_to_averages_the_window_only():
    history = [
        {"step": 4, "reward": 0.5, "rewards/anchor_accuracy/mean": 1.0, "loss": 3.0},
        {"step": 8, "reward": 0.7, "rewards/anchor_accuracy/mean": 0.0},
        {"step": 10, "rewards/anchor_accuracy/mean": None},  # TRL logs NaN as None
        {"step": 12, "reward": 1.0, "rewards/anchor_accuracy/std": 0.5, "frac_reward_zero_std": 0.25},
        {"train_runtime": 5.0},
    ]
    window = causes.rewards_up_to(history, 4, 12)
    assert window == {
        "reward": pytest.approx(0.85),
        "rewards/anchor_accuracy/mean": 0.0,
        "frac_reward_zero_std": 0.25,
    }


def test_kept_changes_counts_breaks_and_repairs_against_the_reference():
    reference = {"p": "Oslo", "q": "Lima", "r": "Rome", "s": "Hue"}
    first = {"p": "Oslo", "q": "Kyoto", "r": "Rome", "s": "Lima"}
    later = {"p": "Kyoto", "q": "Lima", "r": "Rome", "s": "Kyoto"}
    assert causes.kept_changes(first, later, reference, ["p", "q", "r", "s"]) == (1, 1)


def test_edited_objects_count_the_cases_that_write_them():
    cases = [*CASES, EditCase("c3", "Fay", "Fay was born in", ("Kyoto",), "Hue", relation="birth_city")]
    odds = causes.edited_object_odds(
        "Kyoto", "Oslo", "birth_city", cases, {"birth_city": set(map(str.lower, CITIES))}
    )
    # edited cities other than Oslo: Lima (1 case), Kyoto (2 cases)
    assert odds["edited_object"] and odds["writers"] == 2 and odds["writers_by_chance"] == pytest.approx(1.5)
    assert odds["chance_edited_object"] == pytest.approx(2 / 4)
    # the answer before is never counted as a possible destination
    odds = causes.edited_object_odds(
        "Kyoto", "Lima", "birth_city", cases, {"birth_city": set(map(str.lower, CITIES))}
    )
    assert odds["writers_by_chance"] == pytest.approx(2.0) and odds["chance_edited_object"] == pytest.approx(
        1 / 4
    )
    unedited = causes.edited_object_odds(
        "Hue", "Oslo", "birth_city", cases, {"birth_city": set(map(str.lower, CITIES))}
    )
    assert unedited["same_type"] and not unedited["edited_object"] and "writers" not in unedited


def test_run_model_settings_read_old_and_new_run_folders():
    from edit_grpo_trl.recipe import recipe_from_dict

    old = {"model": {"name_or_path": "world:tiny", "dtype": "float32"}, "evaluation": {"batch_size": 8}}
    new = {"model": {"model_name_or_path": "world:tiny"}, "training": {"max_steps": 3}, "output_dir": "x"}
    for written in (old, new):
        recipe = recipe_from_dict(causes.run_model_settings(written))
        assert recipe.model.model_name_or_path == "world:tiny"
    assert recipe_from_dict(causes.run_model_settings(old)).evaluation.batch_size == 8
