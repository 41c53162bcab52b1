"""Answer extraction and normalization, shared by the AGT rewards and the evaluation metrics.

One module so that "the model said the new object" means the same thing when a reward is paid during
training and when a metric is counted afterwards.

* Normalization is SQuAD-style: lower case, punctuation and the articles a/an/the removed, white space
  folded.
* Plain completion prompts ("The mother tongue of X is") are answered by the completion up to the first
  sentence end or newline.
* Boxed prompts (chat style, "... put the final answer in \\boxed{}") are answered by the content of the
  *last* ``\\boxed{...}``, with nested braces balanced.

Every backslash string below is a raw string: the seed project wrote ``"\\boxed{"`` as ``"\boxed{"`` in a
plain string, which is a backspace character followed by ``oxed{``, so its boxed rewards never fired.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

BOXED_COMMAND = r"\boxed{"
AnswerStyle = Literal["plain", "boxed"]

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)
# A sentence ends at . ! ? followed by white space or the end of the text, or at a line break.
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)|\n")


def normalize_answer(text: str) -> str:
    """SQuAD normalization: lower case, drop punctuation and articles, fold white space."""
    text = text.lower()
    text = "".join(ch if ch not in _PUNCTUATION else " " for ch in text)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def completion_text(completion: Any) -> str:
    """The text of a TRL completion: a string, or a conversational list of messages (the last one's content)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Sequence) and completion and isinstance(completion[-1], dict):
        content = completion[-1].get("content", "")
        if isinstance(content, list):  # content blocks: [{"type": "text", "text": ...}]
            return "".join(block.get("text", "") for block in content if isinstance(block, dict))
        return str(content)
    raise TypeError(f"cannot read the text of a completion of type {type(completion).__name__}")


def find_boxed_spans(text: str) -> list[tuple[int, int, int]]:
    """Every complete ``\\boxed{...}`` in ``text`` as (start, content_start, end) with balanced braces.

    ``end`` is one past the closing brace. An opening without its closing brace is not a span.
    """
    spans = []
    search_from = 0
    while True:
        start = text.find(BOXED_COMMAND, search_from)
        if start < 0:
            return spans
        content_start = start + len(BOXED_COMMAND)
        depth = 1
        position = content_start
        while position < len(text) and depth:
            if text[position] == "{":
                depth += 1
            elif text[position] == "}":
                depth -= 1
            position += 1
        if depth:  # unbalanced to the end of the text
            return spans
        spans.append((start, content_start, position))
        search_from = position


def extract_boxed(text: str) -> str | None:
    """The content of the last complete ``\\boxed{...}``, or None when there is none."""
    spans = find_boxed_spans(text)
    if not spans:
        return None
    _, content_start, end = spans[-1]
    return text[content_start : end - 1].strip()


def extract_plain(text: str) -> str:
    """The completion up to its first sentence end or newline, stripped."""
    text = text.lstrip()
    match = _SENTENCE_END.search(text)
    return (text[: match.start()] if match else text).strip()


def extract_answer(completion: Any, style: AnswerStyle = "plain") -> str | None:
    """The answer a completion gives, in the given prompt style (None: a boxed prompt with no box)."""
    text = completion_text(completion)
    if style == "boxed":
        return extract_boxed(text)
    if style == "plain":
        return extract_plain(text)
    raise ValueError(f"unknown answer style {style!r}; expected 'plain' or 'boxed'")


def answer_completion(answer: str, style: AnswerStyle = "plain") -> str:
    """The completion that states ``answer`` the way :func:`extract_answer` reads it back: `` answer``
    after a plain prompt, ``\\boxed{answer}`` for a boxed one (the teacher-forced targets of training)."""
    return f"{BOXED_COMMAND}{answer}}}" if style == "boxed" else " " + answer


def answer_token_ids(tokenizer, row: Mapping[str, Any], context: str) -> tuple[str, list[int]]:
    """A dataset row's first accepted answer as the completion its ``answer_style`` states
    (:func:`answer_completion`) and that text's token ids, without special tokens: the teacher-forced target
    of the locality loss, PGAA's target direction and target injection alike. Raises naming ``context`` when
    the answer tokenizes to nothing (there would be nothing to train)."""
    answer = row["answers"][0]
    text = answer_completion(answer, row.get("answer_style") or "plain")
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if not ids:
        raise ValueError(f"{context}: the answer {answer!r} tokenizes to nothing")
    return text, ids


def is_boxed_format(completion: Any) -> bool:
    """True when the completion ends in exactly one non-empty ``\\boxed{...}`` (a final period allowed)."""
    text = completion_text(completion)
    spans = find_boxed_spans(text)
    if len(spans) != 1 or text.count(BOXED_COMMAND) != 1:
        return False
    _, content_start, end = spans[0]
    if not text[content_start : end - 1].strip():
        return False
    return text[end:].strip() in ("", ".")


def exact_match(prediction: str | None, answers: Iterable[str]) -> bool:
    """Normalized exact match against any accepted answer."""
    if prediction is None:
        return False
    predicted = normalize_answer(prediction)
    return any(predicted == normalize_answer(answer) for answer in answers if normalize_answer(answer))


def contains_match(prediction: str | None, answers: Iterable[str]) -> bool:
    """Looser match: a normalized accepted answer appears as whole words in the normalized prediction."""
    if prediction is None:
        return False
    predicted = f" {normalize_answer(prediction)} "
    for answer in answers:
        wanted = normalize_answer(answer)
        if wanted and f" {wanted} " in predicted:
            return True
    return False
