"""Relations and their templates: the sentence shapes through which the world states and asks its facts.

Each relation has eight templates split three ways: the **anchor** (the edit prompt, subject first, as
ROME-style editors expect), a **training pool** for AGT, and **held-out** templates used only for
evaluation. The shapes differ on purpose (DESIGN section 8: in a small world, plain paraphrases of one
sentence shape move together after an edit and show no isolation): statements with the subject first,
in the middle or late, after other words, question forms with two different markups, and a chat turn.
Every template is pretrained for every fact, held-out ones included, so the model understands all of them.

A template holds ``{s}`` where the subject goes and ends right before the object: the object is the
next word.

Each relation also has a **two-hop** template whose answer is an attribute of the object (the country of
the birth city, ...): portability questions ("Reasoning") that should follow an edit.
"""

from __future__ import annotations

from dataclasses import dataclass

from edit_grpo_trl.data.world.chat import render_chat
from edit_grpo_trl.data.world.objects import (
    CITY_COUNTRY,
    COMPANY_CITY,
    INSTRUMENT_FAMILY,
    PROFESSION_WORKPLACE,
)

SUBJECT = "{s}"
OBJECT = "{o}"
TEMPLATE_SPLITS = ("anchor", "train", "heldout")


@dataclass(frozen=True)
class Relation:
    """A relation: its object pool (object -> two-hop attribute) and its templates by split."""

    name: str
    attributes: dict[str, str]
    anchor: str
    train: tuple[str, ...]
    heldout: tuple[str, ...]
    two_hop: str
    # Pretraining states the object -> attribute link through these (``{o}`` is the object).
    attribute_statements: tuple[str, ...]

    @property
    def templates(self) -> tuple[str, ...]:
        return (self.anchor, *self.train, *self.heldout)

    @property
    def objects(self) -> tuple[str, ...]:
        return tuple(self.attributes)

    def templates_of(self, split: str) -> tuple[str, ...]:
        """The templates of one split: ``anchor``, ``train`` or ``heldout``."""
        if split == "anchor":
            return (self.anchor,)
        if split == "train":
            return self.train
        if split == "heldout":
            return self.heldout
        raise ValueError(f"unknown template split {split!r}; expected one of {', '.join(TEMPLATE_SPLITS)}")


def fill(template: str, subject: str) -> str:
    """A template with its subject in place."""
    return template.replace(SUBJECT, subject)


RELATIONS = (
    Relation(
        "birth_city",
        attributes=CITY_COUNTRY,
        anchor="{s} was born in",
        train=(
            "The birthplace of {s} is",
            "Q : Where was {s} born ? A :",
            "According to the records , {s} was born in",
        ),
        heldout=(
            "The city in which {s} was born is",
            "Question : In which city was {s} born ? Answer :",
            render_chat("Where was {s} born ?"),
            "In the town register , the city listed as the birthplace of {s} is",
        ),
        two_hop="The country in which {s} was born is",
        attribute_statements=("{o} is a city in", "Q : In which country is {o} ? A :"),
    ),
    Relation(
        "employer",
        attributes=COMPANY_CITY,
        anchor="{s} works for",
        train=(
            "The employer of {s} is",
            "Q : Who employs {s} ? A :",
            "At the moment , {s} works for",
        ),
        heldout=(
            "The company that pays the salary of {s} is",
            "Question : Which company does {s} work for ? Answer :",
            render_chat("Who is the employer of {s} ?"),
            "Every month , the payslip of {s} comes from",
        ),
        two_hop="The employer of {s} has its head office in",
        attribute_statements=("The head office of {o} is in", "Q : Where is {o} based ? A :"),
    ),
    Relation(
        "instrument",
        attributes=INSTRUMENT_FAMILY,
        anchor="{s} plays the",
        train=(
            "The instrument of {s} is the",
            "Q : What instrument does {s} play ? A :",
            "In the evenings , {s} plays the",
        ),
        heldout=(
            "The instrument that {s} plays best is the",
            "Question : Which instrument is played by {s} ? Answer :",
            render_chat("What instrument does {s} play ?"),
            "Of all the instruments in the band , the one played by {s} is the",
        ),
        two_hop="The instrument played by {s} belongs to the family",
        attribute_statements=("The {o} belongs to the family", "Q : What family is the {o} in ? A :"),
    ),
    Relation(
        "profession",
        attributes=PROFESSION_WORKPLACE,
        anchor="{s} works as a",
        train=(
            "The profession of {s} is",
            "Q : What is the job of {s} ? A :",
            "By trade , {s} is a",
        ),
        heldout=(
            "The occupation held by {s} is",
            "Question : What does {s} do for a living ? Answer :",
            render_chat("What is the profession of {s} ?"),
            "Ask anyone in town and they will say that {s} is a",
        ),
        two_hop="Because of the job of {s} , each working day is spent at the",
        attribute_statements=("A {o} works at the", "Q : Where does a {o} work ? A :"),
    ),
)
RELATION_BY_NAME = {relation.name: relation for relation in RELATIONS}

# Aliases: pretraining states the link both ways, then states the person's facts through the alias too.
ALIAS_STATEMENTS = ("{a} is another name for {s} .", "{s} is also known as {a} .")


def relation_named(name: str) -> Relation:
    """The relation called ``name``, or an error listing the relations."""
    try:
        return RELATION_BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown relation {name!r}; relations: {', '.join(RELATION_BY_NAME)}") from None
