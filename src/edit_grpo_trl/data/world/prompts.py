"""Recall prompts: the world's facts asked through one family of prompts, with the answers it knows.

Splits:
* ``anchor``, ``train``, ``heldout``: every fact through that template split, by the person's name;
* ``alias``: the facts of aliased people through their alias (anchor and held-out templates);
* ``two_hop``: the attribute of each person's object (the country of the birth city, ...);
* ``attribute``: object -> attribute statements (Paris -> France, ...);
* ``chat``: the AGT chat prompt (boxed answer) around the anchor and training templates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from edit_grpo_trl.data.world.chat import boxed_chat_prompt
from edit_grpo_trl.data.world.relations import OBJECT, RELATIONS, fill

if TYPE_CHECKING:
    from edit_grpo_trl.data.world.world import KnowledgeWorld

RECALL_SPLITS = ("anchor", "train", "heldout", "alias", "two_hop", "attribute", "chat")


@dataclass(frozen=True)
class FactPrompt:
    """One prompt and its answer; ``style`` says how to read a completion (``plain`` or ``boxed``)."""

    prompt: str
    answer: str
    subject: str
    relation: str
    split: str
    style: str = "plain"


def fact_prompts(world: KnowledgeWorld, split: str) -> list[FactPrompt]:
    """Every prompt of a recall split, in a fixed order (people, then relations, then templates)."""
    if split not in RECALL_SPLITS:
        raise ValueError(f"unknown recall split {split!r}; expected one of {', '.join(RECALL_SPLITS)}")
    if split == "attribute":
        return [
            FactPrompt(statement.replace(OBJECT, obj), attribute, obj, relation.name, split)
            for relation in RELATIONS
            for obj, attribute in world.attributes[relation.name].items()
            for statement in relation.attribute_statements
        ]
    items = []
    for person in world.people:
        for relation in RELATIONS:
            obj = world.facts[person][relation.name]
            if split in ("anchor", "train", "heldout"):
                items += [
                    FactPrompt(fill(t, person), obj, person, relation.name, split)
                    for t in relation.templates_of(split)
                ]
            elif split == "alias" and person in world.aliases:
                alias = world.aliases[person]
                items += [
                    FactPrompt(fill(t, alias), obj, alias, relation.name, split)
                    for t in (relation.anchor, *relation.heldout)
                ]
            elif split == "two_hop":
                answer = world.attribute(relation.name, obj)
                items.append(FactPrompt(fill(relation.two_hop, person), answer, person, relation.name, split))
            elif split == "chat":
                items += [
                    FactPrompt(boxed_chat_prompt(fill(t, person)), obj, person, relation.name, split, "boxed")
                    for t in (relation.anchor, *relation.train)
                ]
    return items
