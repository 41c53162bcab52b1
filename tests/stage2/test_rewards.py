import pytest

from edit_grpo_trl.answers import BOXED_COMMAND, answer_completion, extract_answer
from edit_grpo_trl.stage2.rewards import (
    REWARD_FUNCTIONS,
    anchor_accuracy,
    boxed_format,
    generalization_accuracy,
    locality_preservation,
    old_object_penalty,
    resolve_reward_functions,
)

ROLES = ["anchor", "generalization", "locality"]


def test_accuracy_rewards_score_only_their_role():
    completions = [" Paris. Then more", " paris", " Rome\nnext"]
    answers = [["Paris"], ["Paris", "City of Light"], ["Rome"]]
    assert anchor_accuracy(completions, ROLES, answers) == [1.0, None, None]
    assert generalization_accuracy(completions, ROLES, answers) == [None, 1.0, None]
    assert locality_preservation(completions, ROLES, answers) == [None, None, 1.0]


def test_accuracy_needs_the_whole_answer_not_a_prefix():
    assert anchor_accuracy([" Paris Hilton"], ["anchor"], [["Paris"]]) == [0.0]
    assert anchor_accuracy([" The Paris!"], ["anchor"], [["paris"]]) == [1.0]  # article and punctuation


def test_aliases_are_accepted():
    assert generalization_accuracy([" City of Light."], ["generalization"], [["Paris", "City of Light"]]) == [
        1.0
    ]


def test_boxed_answers_use_the_last_box_with_nested_braces():
    completion = r"First \boxed{Rome}, no wait: \boxed{\text{Paris}}"
    assert anchor_accuracy([completion], ["anchor"], [["text Paris"]], answer_style=["boxed"]) == [1.0]
    assert anchor_accuracy([r"\boxed{Rome}"], ["anchor"], [["Paris"]], answer_style=["boxed"]) == [0.0]
    assert anchor_accuracy(["Paris"], ["anchor"], [["Paris"]], answer_style=["boxed"]) == [0.0]  # no box


def test_boxed_strings_are_real_backslashes():
    # The seed wrote "\boxed{" in a plain string: a backspace. The command the rewards look for must
    # start with a backslash.
    assert BOXED_COMMAND == chr(92) + "boxed{" and "\b" not in BOXED_COMMAND
    assert boxed_format([r"The answer is \boxed{Paris}."], answer_style=["boxed"]) == [1.0]
    assert boxed_format(["The answer is \boxed{Paris}."], answer_style=["boxed"]) == [0.0]  # noqa: W605 backspace


def test_boxed_format_wants_exactly_one_final_nonempty_box():
    completions = [
        r"\boxed{a{b}c}",
        r"\boxed{}",
        r"\boxed{a} \boxed{b}",
        r"\boxed{a} and more text",
        r"\boxed{a",
        "Paris",
    ]
    assert boxed_format(completions, answer_style=["boxed"] * 6) == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert boxed_format(["Paris"], answer_style=["plain"]) == [None]


def test_old_object_penalty():
    completions = [" Rome", " Paris", " Rome"]
    old = [["Rome"], ["Rome"], ["Rome"]]
    assert old_object_penalty(completions, ROLES, old_answers=old) == [-1.0, 0.0, None]
    assert old_object_penalty([" Rome"], ["anchor"], old_answers=[[]]) == [None]


def test_conversational_completions_are_read():
    completion = [{"role": "assistant", "content": r"It is \boxed{Paris}"}]
    assert anchor_accuracy([completion], ["anchor"], [["Paris"]], answer_style=["boxed"]) == [1.0]


def test_resolve_by_name_and_nearest_suggestion():
    assert resolve_reward_functions(["anchor_accuracy"]) == [REWARD_FUNCTIONS["anchor_accuracy"]]
    with pytest.raises(ValueError, match="Did you mean 'anchor_accuracy'"):
        resolve_reward_functions(["anchor_acuracy"])


def test_contains_match_scores_freely_phrased_answers():
    completions = [" Paris, the capital of France.", " Lyon is nice.", " Paris"]
    roles = ["anchor"] * 3
    answers = [["Paris"]] * 3
    assert anchor_accuracy(completions, roles, answers) == [0.0, 0.0, 1.0]  # exact by default
    assert anchor_accuracy(completions, roles, answers, answer_match=["contains"] * 3) == [1.0, 0.0, 1.0]


def test_reward_functions_by_dotted_import_path(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text(
        "def says_paris(completions, **_):\n    return [float('Paris' in c) for c in completions]\n"
        "NOT_A_FUNCTION = 3\n"
    )
    (tmp_path / "broken_rewards.py").write_text("import not_a_module_anywhere\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    (says_paris, anchor) = resolve_reward_functions(["my_rewards.says_paris", "anchor_accuracy"])
    assert (
        says_paris(completions=["Paris", "Rome"]) == [1.0, 0.0]
        and anchor is REWARD_FUNCTIONS["anchor_accuracy"]
    )
    with pytest.raises(
        ValueError, match=r"importing the module 'absent_pkg.rewards' failed \(ModuleNotFoundError"
    ):
        resolve_reward_functions(["absent_pkg.rewards.exact"])
    with pytest.raises(ValueError, match="importing the module 'broken_rewards' failed"):
        resolve_reward_functions(["broken_rewards.anything"])
    with pytest.raises(ValueError, match="'my_rewards' has no 'absent'"):
        resolve_reward_functions(["my_rewards.absent"])
    with pytest.raises(ValueError, match=r"is not callable \(a int\)"):
        resolve_reward_functions(["my_rewards.NOT_A_FUNCTION"])


def test_a_recipe_with_an_unimportable_reward_fails_when_the_config_is_built(tmp_path):
    from edit_grpo_trl.stage2.config import EditGRPOConfig

    with pytest.raises(ValueError, match="absent_pkg"):
        EditGRPOConfig(
            output_dir=str(tmp_path),
            agt_reward_funcs=["absent_pkg.rewards.exact"],
            alignment_coef=0.0,
            use_cpu=True,
        )


@pytest.mark.parametrize("style", ["plain", "boxed"])
def test_answer_completion_is_read_back_as_its_answer(style):
    completion = answer_completion("New York", style)
    assert completion == (r"\boxed{New York}" if style == "boxed" else " New York")
    assert extract_answer(completion, style) == "New York"


def test_answer_token_ids_tokenize_the_styled_answer_and_refuse_an_empty_one():
    from edit_grpo_trl.answers import answer_token_ids

    from .conftest import make_tokenizer

    tokenizer = make_tokenizer()
    text, ids = answer_token_ids(
        tokenizer, {"answers": ["Paris", "Lutetia"], "answer_style": None}, "case 'c0'"
    )
    assert text == " Paris"  # the first accepted answer, as a plain completion
    assert ids == tokenizer(" Paris", add_special_tokens=False)["input_ids"]
    with pytest.raises(ValueError, match=r"case 'c0': the answer '' tokenizes to nothing"):
        answer_token_ids(tokenizer, {"answers": [""], "answer_style": "plain"}, "case 'c0'")
