"""The pretraining corpus: every fact through every template, plus aliases, two-hop facts and chat samples.

Each sample is a prompt, the answer that follows it, and the text that closes the sentence, so pretraining
can weigh the answer tokens on their own. Contents, for every person:
* each fact through all eight templates of its relation (held-out ones too: the model must understand
  them; the held-out split only keeps them out of *edit training*);
* for aliased people: both alias statements, and each fact through all templates by the alias;
* each two-hop fact (the country of the birth city, ...), repeated;
* AGT-style chat samples (the chat instruction around the anchor and one training template, answered
  ``\\boxed{ object }``), so the model answers boxed chat prompts before any edit;
and for every object its attribute statements (Paris is a city in France, ...), repeated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from edit_grpo_trl.data.world.chat import EOS, boxed, boxed_chat_prompt
from edit_grpo_trl.data.world.relations import ALIAS_STATEMENTS, OBJECT, RELATIONS, fill

if TYPE_CHECKING:
    from edit_grpo_trl.data.world.world import KnowledgeWorld

# A two-hop fact has one template and an object's attribute two statements, against sixteen sentences for
# each direct fact (eight templates, by name and alias): repeating them lets them converge with the rest
# (measured on world-tiny: two-hop recall trailed held-out recall by about 600 steps without repeats).
TWO_HOP_REPEATS = 3
ATTRIBUTE_REPEATS = 4


@dataclass(frozen=True)
class CorpusSample:
    """``prompt`` + ``answer`` + ``ending`` is one training sequence; the answer is what recall asks for."""

    prompt: str
    answer: str
    ending: str

    @property
    def text(self) -> str:
        return f"{self.prompt} {self.answer} {self.ending}"


def _closing(prompt: str) -> str:
    # A chat turn ends with EOS; a sentence ends with a period.
    return EOS if prompt.endswith("|>") else "."


def _statement(prompt: str, answer: str) -> CorpusSample:
    return CorpusSample(prompt, answer, _closing(prompt))


def build_corpus(world: KnowledgeWorld) -> list[CorpusSample]:
    """The world's pretraining samples in a fixed order."""
    samples: list[CorpusSample] = []
    for index, person in enumerate(world.people):
        alias = world.aliases.get(person)
        if alias is not None:
            for statement in ALIAS_STATEMENTS:
                # "{a} is another name for {s} ." -> prompt up to the last name, answer the last name.
                text = statement.replace("{a}", alias).replace("{s}", person)
                prompt, answer, ending = text.rsplit(" ", 2)
                samples.append(CorpusSample(prompt, answer, ending))
        for relation in RELATIONS:
            obj = world.facts[person][relation.name]
            names = (person,) if alias is None else (person, alias)
            samples += [_statement(fill(t, name), obj) for name in names for t in relation.templates]
            two_hop = _statement(fill(relation.two_hop, person), world.attribute(relation.name, obj))
            samples += [two_hop] * TWO_HOP_REPEATS
            rotating = relation.train[index % len(relation.train)]
            samples += [
                CorpusSample(boxed_chat_prompt(fill(t, person)), boxed(obj), EOS)
                for t in (relation.anchor, rotating)
            ]
    for relation in RELATIONS:
        for obj, attribute in world.attributes[relation.name].items():
            for statement in relation.attribute_statements:
                samples += [_statement(statement.replace(OBJECT, obj), attribute)] * ATTRIBUTE_REPEATS
    return samples
