"""A fact bank: well-known true facts per relation, with the templates that state them.

A bank is a YAML file shipped in this package (``real.yaml``; the file's header explains its layout). It
holds *entities* (how a subject or a shared object such as a country or a city is written, and its other
names) and *relations*, each with one anchor template, training templates, held-out templates, an optional
two-hop template and its facts. Loading checks everything the edit cases rely on, so a bad edit of the file
fails here with the relation and the fact named rather than later as a wrong measurement.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import yaml

from edit_grpo_trl.answers import contains_match, normalize_answer

SUBJECT = "{s}"
POSSESSIVE = "{s}'s"
MIN_TRAIN_TEMPLATES = 3
MIN_HELDOUT_TEMPLATES = 3


class BankError(ValueError):
    """A fact bank is unknown or its file breaks the rules the edit cases rely on."""


@dataclass(frozen=True)
class Entity:
    """A subject or shared object. ``the``: written "the <name>" as subject; ``aliases``: accepted answers."""

    name: str
    the: bool = False
    aliases: tuple[str, ...] = ()
    subject_aliases: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        return f"the {self.name}" if self.the else self.name


@dataclass(frozen=True)
class TwoHop:
    """A question whose answer is the ``via`` relation's fact about this relation's object."""

    template: str
    via: str


@dataclass(frozen=True)
class FactRelation:
    name: str
    anchor: str
    train: tuple[str, ...]
    heldout: tuple[str, ...]
    facts: dict[str, tuple[str, ...]]  # subject -> (object, other true answers of this fact)
    object_aliases: dict[str, tuple[str, ...]] = field(default_factory=dict)
    two_hop: TwoHop | None = None

    @property
    def templates(self) -> tuple[str, ...]:
        return (self.anchor, *self.train, *self.heldout)

    def objects(self) -> list[str]:
        """Distinct objects in file order: the pool new objects are drawn from."""
        return list(dict.fromkeys(value[0] for value in self.facts.values()))


def _strip_article(text: str) -> str:
    return text[4:] if text.lower().startswith("the ") else text


def _unique(items) -> tuple[str, ...]:
    return tuple(dict.fromkeys(item for item in items if item))


def possessive(text: str) -> str:
    """ "Nike" -> "Nike's", "Socrates" -> "Socrates'", "McDonald's" stays as it is."""
    if text.endswith("'s"):
        return text
    return f"{text}'" if text.endswith("s") else f"{text}'s"


def fill(template: str, subject_text: str) -> str:
    """The template with the subject written in; a leading "the" is capitalised."""
    text = template.replace(POSSESSIVE, possessive(subject_text)).replace(SUBJECT, subject_text)
    return text[0].upper() + text[1:] if text.startswith("the ") else text


def slug(text: str) -> str:
    """A case-id fragment: ASCII lower-case letters and digits joined by dashes (Park Güell: park-guell)."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text).strip("-")


@dataclass(frozen=True)
class FactBank:
    name: str
    entities: dict[str, Entity]
    relations: dict[str, FactRelation]

    def entity(self, name: str) -> Entity:
        return self.entities.get(name) or Entity(name)

    def relation(self, name: str) -> FactRelation:
        if name not in self.relations:
            raise BankError(
                f"bank {self.name!r} has no relation {name!r}; relations: {', '.join(self.relations)}"
            )
        return self.relations[name]

    def object_answers(self, relation: str, obj: str) -> tuple[str, ...]:
        """Every accepted answer naming ``obj`` as an object of ``relation`` (the object first)."""
        aliases = self.relation(relation).object_aliases.get(obj)
        if aliases is None:  # relation-level aliases win: "Chinese" the language is not "Chinese" the people
            aliases = self.entity(obj).aliases
        return _unique([obj, *(_strip_article(alias) for alias in aliases)])

    def answers(self, relation: str, subject: str) -> tuple[str, ...]:
        """The true answers of one fact: its object, the object's aliases, the fact's other true answers."""
        value = self.relation(relation).facts[subject]
        return _unique([*self.object_answers(relation, value[0]), *value[1:]])

    def prompt(self, template: str, subject: str) -> str:
        return fill(template, self.entity(subject).text)

    def subject_names(self, subject: str) -> tuple[str, ...]:
        entity = self.entity(subject)
        return _unique([entity.text, *entity.subject_aliases])

    def count(self) -> dict[str, int]:
        return {name: len(relation.facts) for name, relation in self.relations.items()}


# ---------------------------------------------------------------------------------------------- loading
def available_banks() -> list[str]:
    """The bank names shipped in this package (one YAML file each)."""
    folder = resources.files(__package__)
    return sorted(item.name.removesuffix(".yaml") for item in folder.iterdir() if item.name.endswith(".yaml"))


@cache
def load_bank(name: str = "real") -> FactBank:
    """A shipped bank by name, parsed and checked (cached: banks are read-only)."""
    banks = available_banks()
    if name not in banks:
        raise BankError(f"unknown fact bank {name!r}; banks: {', '.join(banks)}")
    text = (resources.files(__package__) / f"{name}.yaml").read_text(encoding="utf-8")
    return parse_bank(name, yaml.safe_load(text))


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise BankError(f"{where}: expected a string or a non-empty list of strings, got {value!r}")
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise BankError(f"{where}: every entry must be a non-empty string, got {item!r}")
    return tuple(item.strip() for item in value)


def _keys(data: Any, allowed: set[str], required: set[str], where: str) -> dict:
    if not isinstance(data, dict):
        raise BankError(f"{where}: expected a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise BankError(f"{where}: unknown keys {unknown}; allowed: {sorted(allowed)}")
    missing = sorted(required - set(data))
    if missing:
        raise BankError(f"{where}: missing keys {missing}")
    return data


def _mapping(data: Any, where: str) -> dict:
    if not isinstance(data, dict) or not data:
        raise BankError(f"{where}: expected a non-empty mapping, got {data!r}")
    return data


def _entity(name: str, data: Any) -> Entity:
    where = f"entity {name!r}"
    data = _keys(data, {"the", "aliases", "subject_aliases"}, set(), where)
    if not isinstance(data.get("the", False), bool):
        raise BankError(f"{where}: 'the' must be true or false, got {data['the']!r}")
    return Entity(
        name=name,
        the=data.get("the", False),
        aliases=_strings(data["aliases"], f"{where} aliases") if "aliases" in data else (),
        subject_aliases=(
            _strings(data["subject_aliases"], f"{where} subject_aliases") if "subject_aliases" in data else ()
        ),
    )


def _relation(name: str, data: Any) -> FactRelation:
    where = f"relation {name!r}"
    allowed = {"anchor", "train", "heldout", "two_hop", "object_aliases", "facts"}
    data = _keys(data, allowed, {"anchor", "train", "heldout", "facts"}, where)
    two_hop = None
    if "two_hop" in data:
        hop = _keys(data["two_hop"], {"template", "via"}, {"template", "via"}, f"{where} two_hop")
        two_hop = TwoHop(_strings(hop["template"], f"{where} two_hop")[0], str(hop["via"]))
    return FactRelation(
        name=name,
        anchor=_strings(data["anchor"], f"{where} anchor")[0],
        train=_strings(data["train"], f"{where} train"),
        heldout=_strings(data["heldout"], f"{where} heldout"),
        facts={str(s): _strings(v, f"{where} fact {s!r}") for s, v in _mapping(data["facts"], where).items()},
        object_aliases={
            str(o): _strings(v, f"{where} object_aliases {o!r}")
            for o, v in (_mapping(data["object_aliases"], where) if "object_aliases" in data else {}).items()
        },
        two_hop=two_hop,
    )


def parse_bank(name: str, data: Any) -> FactBank:
    """A bank from its parsed YAML, checked by :func:`check_bank`."""
    data = _keys(data, {"entities", "relations"}, {"relations"}, f"fact bank {name!r}")
    entities = {str(n): _entity(str(n), e) for n, e in (data.get("entities") or {}).items()}
    relations_data = data["relations"]
    if not isinstance(relations_data, dict) or not relations_data:
        raise BankError(f"fact bank {name!r}: 'relations' must be a non-empty mapping")
    relations = {str(n): _relation(str(n), r) for n, r in relations_data.items()}
    bank = FactBank(name=name, entities=entities, relations=relations)
    check_bank(bank)
    return bank


def _template_key(template: str) -> str:
    return normalize_answer(template.replace(SUBJECT, " xsubject "))


def check_bank(bank: FactBank) -> None:
    """Refuse a bank whose cases would measure the wrong thing (each rule says what it protects)."""
    for relation in bank.relations.values():
        where = f"bank {bank.name!r} relation {relation.name!r}"
        for template in (*relation.templates, *((relation.two_hop.template,) if relation.two_hop else ())):
            if SUBJECT not in template:
                raise BankError(f"{where}: template {template!r} does not contain {SUBJECT!r}")
        if len(relation.train) < MIN_TRAIN_TEMPLATES or len(relation.heldout) < MIN_HELDOUT_TEMPLATES:
            raise BankError(
                f"{where}: needs at least {MIN_TRAIN_TEMPLATES} training and {MIN_HELDOUT_TEMPLATES} "
                f"held-out templates, has {len(relation.train)} and {len(relation.heldout)}"
            )
        keys = [_template_key(t) for t in relation.templates]
        if len(set(keys)) != len(keys):
            raise BankError(f"{where}: the anchor, training and held-out templates must all differ")
        anchor = _template_key(relation.anchor)
        for template in relation.heldout:  # a held-out prompt ending in the anchor tests the anchor again
            if _template_key(template).endswith(anchor):
                raise BankError(
                    f"{where}: held-out template {template!r} ends with the anchor {relation.anchor!r}"
                )
        if len(relation.objects()) < 2:
            raise BankError(f"{where}: needs at least two distinct objects to draw new objects from")
        slugs = [slug(subject) for subject in relation.facts]
        if len(set(slugs)) != len(slugs) or not all(slugs):
            raise BankError(f"{where}: subjects must give distinct, non-empty case ids: {slugs}")
        if relation.two_hop is not None:
            via = relation.two_hop.via
            if via not in bank.relations or via == relation.name:
                raise BankError(f"{where}: two_hop via {via!r} must name another relation of the bank")
            missing = [o for o in relation.objects() if o not in bank.relations[via].facts]
            if missing:
                raise BankError(f"{where}: two_hop via {via!r} has no fact for the objects {missing}")
        for subject in relation.facts:
            # A subject that names its own answer ("Mexico City" -> "Mexico") is answered by echoing it.
            for text in bank.subject_names(subject):
                if contains_match(text, bank.answers(relation.name, subject)):
                    raise BankError(f"{where}: the subject name {text!r} contains its own answer")
