"""AGT reward functions (docs/design.md section 4), each a plain function with TRL's reward signature.

TRL calls ``func(prompts=..., completions=..., completion_ids=..., **columns)`` where ``columns`` are the
dataset's extra columns, one value per completion. Every function here reads ``role`` and ``answers``
(and ``answer_style``, ``old_answers`` where it needs them) and returns ``None`` for the rows it does not
score, which TRL turns into NaN and leaves out of that function's mean.

Accuracy rewards match the extracted answer exactly (normalized), or, on rows whose ``answer_match``
column says ``"contains"``, when an accepted answer appears in it as whole words: a real model phrases
its answers freely ("Paris, the capital of France"), which exact match would score as wrong.

Recipes select functions by name through :data:`REWARD_FUNCTIONS` / :func:`resolve_reward_functions`, or,
as TRL's own GRPO script allows, by dotted import path (``my_pkg.rewards.exact_match``): any function with
TRL's reward signature in an importable module. Such a function gets the same keyword arguments, the
AGT dataset's columns included.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Sequence
from typing import Any

from edit_grpo_trl.answers import contains_match, exact_match, extract_answer, is_boxed_format
from edit_grpo_trl.roles import ANCHOR, GENERALIZATION, LOCALITY

RewardFunction = Callable[..., list[float | None]]


def _styles(answer_style: Sequence[str] | None, count: int) -> Sequence[str]:
    return answer_style if answer_style is not None else ["plain"] * count


MATCHERS = {"exact": exact_match, "contains": contains_match}


def _accuracy_on_role(
    wanted_role: str,
    completions: Sequence[Any],
    role: Sequence[str],
    answers: Sequence[Sequence[str]],
    answer_style: Sequence[str] | None,
    answer_match: Sequence[str] | None = None,
) -> list[float | None]:
    styles = _styles(answer_style, len(completions))
    matches = answer_match if answer_match is not None else ["exact"] * len(completions)
    return [
        float(MATCHERS[match](extract_answer(completion, style), accepted))
        if row_role == wanted_role
        else None
        for completion, row_role, accepted, style, match in zip(
            completions, role, answers, styles, matches, strict=True
        )
    ]


def anchor_accuracy(
    completions, role, answers, answer_style=None, answer_match=None, **_
) -> list[float | None]:
    """1.0 when an anchor row's extracted answer matches one of its accepted answers, else 0.0."""
    return _accuracy_on_role(ANCHOR, completions, role, answers, answer_style, answer_match)


def generalization_accuracy(
    completions, role, answers, answer_style=None, answer_match=None, **_
) -> list[float | None]:
    """1.0 when a generalization row's extracted answer matches one of its accepted answers, else 0.0."""
    return _accuracy_on_role(GENERALIZATION, completions, role, answers, answer_style, answer_match)


def locality_preservation(
    completions, role, answers, answer_style=None, answer_match=None, **_
) -> list[float | None]:
    """1.0 when a locality row still gives its pre-edit answer (stored in ``answers``), else 0.0."""
    return _accuracy_on_role(LOCALITY, completions, role, answers, answer_style, answer_match)


def boxed_format(completions, answer_style=None, **_) -> list[float | None]:
    """On rows whose prompt asks for a boxed answer: 1.0 when the completion ends in exactly one
    non-empty ``\\boxed{...}``, else 0.0. ``None`` on plain-style rows, which ask for no format."""
    styles = _styles(answer_style, len(completions))
    return [
        float(is_boxed_format(completion)) if style == "boxed" else None
        for completion, style in zip(completions, styles, strict=True)
    ]


def old_object_penalty(completions, role, old_answers=None, answer_style=None, **_) -> list[float | None]:
    """-1.0 when an anchor or generalization row's answer still states the old object, else 0.0.

    ``None`` on locality rows and on rows without a recorded old object.
    """
    styles = _styles(answer_style, len(completions))
    old = old_answers if old_answers is not None else [[] for _ in completions]
    rewards: list[float | None] = []
    for completion, row_role, stale, style in zip(completions, role, old, styles, strict=True):
        if row_role not in (ANCHOR, GENERALIZATION) or not stale:
            rewards.append(None)
            continue
        rewards.append(-float(exact_match(extract_answer(completion, style), stale)))
    return rewards


REWARD_FUNCTIONS: dict[str, RewardFunction] = {
    "anchor_accuracy": anchor_accuracy,
    "generalization_accuracy": generalization_accuracy,
    "locality_preservation": locality_preservation,
    "boxed_format": boxed_format,
    "old_object_penalty": old_object_penalty,
}

DEFAULT_REWARD_FUNCTIONS = ("anchor_accuracy", "generalization_accuracy", "locality_preservation")


def import_reward_function(path: str) -> RewardFunction:
    """The function a dotted path (``package.module.function``) names; a clear error when it cannot be had."""
    module_name, _, attribute = path.rpartition(".")
    hint = (
        "A dotted path names a function in a module Python can import (installed, or on PYTHONPATH), "
        "e.g. my_pkg.rewards.exact_match."
    )
    if not module_name or not attribute:
        raise ValueError(f"AGT reward function {path!r}: not a dotted path to a function. {hint}")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # missing, or broken on import: either way the path cannot serve
        raise ValueError(
            f"AGT reward function {path!r}: importing the module {module_name!r} failed "
            f"({type(error).__name__}: {error}). {hint}"
        ) from error
    function = getattr(module, attribute, None)
    if function is None:
        raise ValueError(
            f"AGT reward function {path!r}: the module {module_name!r} has no {attribute!r}. {hint}"
        )
    if not callable(function):
        raise ValueError(
            f"AGT reward function {path!r}: {attribute!r} in {module_name!r} is not callable "
            f"(a {type(function).__name__}). {hint}"
        )
    return function


def resolve_reward_functions(names: Sequence[str | RewardFunction]) -> list[RewardFunction]:
    """Reward functions by registry name or dotted import path (callables pass through); an unknown name
    gets the nearest valid one, a path that cannot be imported says why."""
    functions = []
    for name in names:
        if callable(name):
            functions.append(name)
            continue
        if name not in REWARD_FUNCTIONS and isinstance(name, str) and "." in name:
            functions.append(import_reward_function(name))
            continue
        if name not in REWARD_FUNCTIONS:
            nearest = difflib.get_close_matches(str(name), REWARD_FUNCTIONS, n=1)
            hint = f" Did you mean {nearest[0]!r}?" if nearest else ""
            raise ValueError(
                f"unknown AGT reward function {name!r}.{hint} Available: {', '.join(sorted(REWARD_FUNCTIONS))}, "
                "or a dotted import path to a function (my_pkg.rewards.exact_match)"
            )
        functions.append(REWARD_FUNCTIONS[name])
    return functions
