"""Edit cases from a fact bank: change one true fact to another object of the same relation.

A draw is deterministic in ``(bank, seed, limit)``:

* Each relation's subjects are shuffled with the seed; the last quarter (at least ``MIN_RESERVED``) is
  never edited, so locality probes exist even when every other fact is drawn.
* The editable facts are taken one relation after another (round robin), so any ``limit`` spreads over
  the relations; ``limit`` keeps the first cases of that order.
* Each case draws its new object and its neighbours from its own seeded generator, so most of a case does
  not depend on which other cases were drawn (a smaller draw is the start of a larger one). What does depend on the draw is deliberate: locality probes
  never ask about a fact edited by another case of the draw, and a two-hop probe never goes through one.

Probes of a case (keys as in KnowEdit, so reports group them the same way):

* training generalization: the relation's training templates; evaluation generalization: its held-out
  templates; both answered by the new object and its aliases.
* portability ``Subject_Aliasing``: the anchor with each of the subject's other names.
* portability ``Reasoning``: the two-hop template, answered by the ``via`` fact of the *new* object (a
  landmark moved to Rome is in Italy); the new object is never one that keeps the pre-edit answer.
* locality ``neighborhood``: the anchor of two other subjects of the relation, with their true answers;
  locality ``Relation_Specificity``: the anchors of the subject's other relations, with their true answers.
* training locality (what stage 2 may train to keep): the anchors of up to four other subjects of the
  relation, and of the subject's other relations, keyed the same way.

Every unedited fact is on one side for good, whichever case or draw asks it: half of the facts (by a hash
of relation and subject) serve training locality probes, the other half evaluation ones, so no prompt that
one case trains on is evaluated through another.
"""

from __future__ import annotations

import math
import random
import zlib
from collections.abc import Iterable

from edit_grpo_trl.answers import contains_match
from edit_grpo_trl.data.cases import EditCase, Probe, ProbeKind
from edit_grpo_trl.data.facts.bank import BankError, FactBank, FactRelation, load_bank, slug

DEFAULT_BANK = "real"
RESERVED_SHARE = 0.25
MIN_RESERVED = 3
NEIGHBOURS = 2
TRAIN_NEIGHBOURS = 4
NEIGHBORHOOD = "neighborhood"
RELATION_SPECIFICITY = "Relation_Specificity"
SUBJECT_ALIASING = "Subject_Aliasing"
REASONING = "Reasoning"

Fact = tuple[str, str]  # (relation, subject)


def is_training_locality(relation: str, subject: str) -> bool:
    """Whether the unedited fact (relation, subject) serves training locality probes (else evaluation)."""
    return zlib.crc32(f"{relation}\t{subject}".encode()) % 2 == 0


def _check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"the fact-bank seed must be a non-negative integer, got {seed!r}")
    return seed


def _reserved(relation: FactRelation) -> int:
    return max(MIN_RESERVED, math.ceil(RESERVED_SHARE * len(relation.facts)))


def editable_facts(bank: FactBank, seed: int = 0) -> list[Fact]:
    """Every fact a draw may edit, in draw order (relations in turn, subjects shuffled by the seed)."""
    rng = random.Random(f"facts-{bank.name}-{_check_seed(seed)}")
    columns = []
    for relation in bank.relations.values():
        subjects = list(relation.facts)
        rng.shuffle(subjects)
        columns.append([(relation.name, s) for s in subjects[: len(subjects) - _reserved(relation)]])
    return [column[row] for row in range(max(map(len, columns))) for column in columns if row < len(column)]


def max_cases(bank: str | FactBank = DEFAULT_BANK) -> int:
    """How many cases one draw of the bank can hold."""
    bank = load_bank(bank) if isinstance(bank, str) else bank
    return sum(len(r.facts) - _reserved(r) for r in bank.relations.values())


def _overlaps(first: Iterable[str], second: Iterable[str]) -> bool:
    """True when an answer of one set would be scored as an answer of the other (normalized contains)."""
    first, second = tuple(first), tuple(second)
    return any(contains_match(a, second) for a in first) or any(contains_match(b, first) for b in second)


def _new_object_candidates(
    bank: FactBank, relation: FactRelation, subject: str, edited: set[Fact]
) -> list[str]:
    old = relation.facts[subject][0]
    old_answers = bank.answers(relation.name, subject)
    candidates = []
    for obj in relation.objects():
        # An object sharing an answer with the old one ("Canadian dollar" vs "dollar") is no edit at all.
        if obj == old or _overlaps(bank.object_answers(relation.name, obj), old_answers):
            continue
        hop = relation.two_hop
        if hop is not None:
            if (hop.via, obj) in edited:  # its two-hop answer is being changed by another case
                continue
            if _overlaps(bank.answers(hop.via, obj), bank.answers(hop.via, old)):
                continue  # a new city in the old city's country leaves the two-hop answer unchanged
        candidates.append(obj)
    return candidates


def _case(bank: FactBank, relation: FactRelation, subject: str, seed: int, edited: set[Fact]) -> EditCase:
    rng = random.Random(f"facts-{bank.name}-{seed}-{relation.name}-{subject}")
    candidates = _new_object_candidates(bank, relation, subject, edited)
    if not candidates:
        raise BankError(f"bank {bank.name!r}: no new object for {subject!r} in relation {relation.name!r}")
    # The first allowed object of a seeded order: a case keeps its new object in any draw that allows it.
    preference = relation.objects()
    rng.shuffle(preference)
    new = next(obj for obj in preference if obj in candidates)
    target_new = bank.object_answers(relation.name, new)
    old_answers = bank.answers(relation.name, subject)

    def probes(templates, kind: ProbeKind) -> list[Probe]:
        return [Probe(bank.prompt(t, subject), target_new, kind) for t in templates]

    found = probes(relation.train, ProbeKind.TRAIN_GENERALIZATION)
    found += probes(relation.heldout, ProbeKind.EVAL_GENERALIZATION)
    for name in bank.entity(subject).subject_aliases:
        found.append(
            Probe(bank.prompt(relation.anchor, name), target_new, ProbeKind.PORTABILITY, SUBJECT_ALIASING)
        )
    metadata: dict = {
        "bank": bank.name,
        "seed": seed,
        "templates": {"anchor": relation.anchor, "heldout": list(relation.heldout)},
    }
    if len(old_answers) > 1:
        metadata["target_true_aliases"] = list(old_answers)
    if relation.two_hop is not None:
        hop = relation.two_hop
        prompt = bank.prompt(hop.template, subject)
        found.append(Probe(prompt, bank.answers(hop.via, new), ProbeKind.PORTABILITY, REASONING))
        metadata["two_hop_true"] = list(bank.answers(hop.via, relation.facts[subject][0]))

    def locality(other: FactRelation, who: str, key: str) -> Probe:
        training = is_training_locality(other.name, who)
        kind = ProbeKind.TRAIN_LOCALITY if training else ProbeKind.LOCALITY
        return Probe(bank.prompt(other.anchor, who), bank.answers(other.name, who), kind, key)

    for other in bank.relations.values():
        if other.name != relation.name and subject in other.facts and (other.name, subject) not in edited:
            found.append(locality(other, subject, RELATION_SPECIFICITY))
    neighbours = [s for s in relation.facts if s != subject and (relation.name, s) not in edited]
    for training, count in ((False, NEIGHBOURS), (True, TRAIN_NEIGHBOURS)):
        side = [s for s in neighbours if is_training_locality(relation.name, s) == training]
        found += [locality(relation, s, NEIGHBORHOOD) for s in rng.sample(side, min(count, len(side)))]
    return EditCase(
        case_id=f"facts-{bank.name}-{seed}-{relation.name}-{slug(subject)}",
        subject=subject,
        prompt=bank.prompt(relation.anchor, subject),
        target_new=target_new,
        target_true=old_answers[0],
        probes=tuple(found),
        relation=relation.name,
        source=f"facts:{bank.name}:{seed}",
        metadata=metadata,
    )


def fact_cases(
    bank: str | FactBank = DEFAULT_BANK, seed: int = 0, limit: int | None = None
) -> list[EditCase]:
    """The edit cases of one draw: the first ``limit`` editable facts (all of them when None)."""
    bank = load_bank(bank) if isinstance(bank, str) else bank
    order = editable_facts(bank, seed)
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or not 0 < limit <= len(order):
            raise ValueError(
                f"limit must be an integer from 1 to {len(order)} (bank {bank.name!r}), got {limit!r}"
            )
        order = order[:limit]
    edited = set(order)
    return [_case(bank, bank.relations[relation], subject, seed, edited) for relation, subject in order]


def parse_facts_spec(spec: str) -> tuple[str, int]:
    """``"facts:<bank>[:<seed>]"`` -> (bank, seed); the bank defaults to ``real`` and the seed to 0."""
    prefix, _, body = spec.partition(":")
    if prefix != "facts":
        raise ValueError(f"{spec!r} is not a fact-bank name; expected 'facts:<bank>[:<seed>]'")
    bank, _, seed_text = body.partition(":")
    try:
        seed = int(seed_text) if seed_text else 0
    except ValueError as error:
        raise ValueError(
            f"{spec!r}: the seed after the bank name must be an integer, got {seed_text!r}"
        ) from error
    return bank or DEFAULT_BANK, _check_seed(seed)
