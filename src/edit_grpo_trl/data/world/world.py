"""`KnowledgeWorld`: the facts of a generated world (DESIGN section 8), deterministic from ``(size, seed)``.

People with generated one-word names (some with a one-word alias) have a birth city, an employer, an
instrument and a profession; every object has a two-hop attribute (a city's country, a company's home
city, an instrument's family, a profession's workplace). The templates live in ``relations``, the
pretraining text in ``corpus``, the recall prompts in ``prompts`` and the edit cases in ``cases``.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from edit_grpo_trl.data.world.chat import CHAT_INSTRUCTION, SPECIAL_TOKENS
from edit_grpo_trl.data.world.names import generate_names
from edit_grpo_trl.data.world.relations import ALIAS_STATEMENTS, RELATIONS, relation_named
from edit_grpo_trl.data.world.spec import FORMAT_VERSION, size_spec

WORLD_FILE = "world.json"


@dataclass
class KnowledgeWorld:
    """People, their aliases and facts, and each object's two-hop attribute."""

    size: str
    seed: int
    people: list[str]
    aliases: dict[str, str]  # person -> alias
    facts: dict[str, dict[str, str]]  # person -> relation -> object
    attributes: dict[str, dict[str, str]]  # relation -> object -> two-hop attribute
    format_version: int = FORMAT_VERSION

    # ------------------------------------------------------------------ construction
    @classmethod
    def generate(cls, size: str = "tiny", seed: int = 0) -> KnowledgeWorld:
        """The world of a named size, the same for the same seed."""
        spec = size_spec(size)
        rng = random.Random(f"knowledge-world-{size}-{seed}")
        vocabulary = world_vocabulary_words()
        people = generate_names(spec.people, rng, vocabulary)
        aliased = sorted(rng.sample(range(len(people)), round(spec.alias_share * len(people))))
        alias_names = generate_names(len(aliased), rng, vocabulary | set(people))
        aliases = {people[index]: alias for index, alias in zip(aliased, alias_names, strict=True)}
        facts = {
            person: {relation.name: rng.choice(relation.objects) for relation in RELATIONS}
            for person in people
        }
        attributes = {relation.name: dict(relation.attributes) for relation in RELATIONS}
        return cls(size=size, seed=seed, people=people, aliases=aliases, facts=facts, attributes=attributes)

    def save(self, folder: str | Path) -> Path:
        """Write ``world.json`` into ``folder`` (through a temporary file, so a crash leaves the old one)."""
        path = Path(folder) / WORLD_FILE
        temporary = path.with_name(f".{WORLD_FILE}.tmp-{os.getpid()}")
        temporary.write_text(json.dumps(asdict(self), indent=1))
        temporary.replace(path)
        return path

    @classmethod
    def load(cls, folder: str | Path) -> KnowledgeWorld:
        """The world saved in ``folder`` (a model folder from ``ensure_world_model`` holds one)."""
        path = Path(folder) / WORLD_FILE
        if not path.is_file():
            raise FileNotFoundError(f"no knowledge world at {path}")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error})") from error
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{path}: field 'format_version' is {data.get('format_version')!r}; this code reads "
                f"version {FORMAT_VERSION} (regenerate the world)"
            )
        fields = set(cls.__dataclass_fields__)
        missing = sorted(fields - set(data) - {"format_version"})
        unknown = sorted(set(data) - fields)
        if missing or unknown:
            raise ValueError(f"{path}: missing fields {missing}, unknown fields {unknown}")
        world = cls(**data)
        world.validate(str(path))
        return world

    def validate(self, where: str = "knowledge world") -> None:
        """Refuse a world whose facts name unknown people, relations or objects."""
        people = set(self.people)
        if len(people) != len(self.people):
            raise ValueError(f"{where}: field 'people' repeats a name")
        for person, alias in self.aliases.items():
            if person not in people:
                raise ValueError(f"{where}: field 'aliases' names {person!r}, who is not in 'people'")
            if alias in people:
                raise ValueError(f"{where}: field 'aliases': alias {alias!r} is also a person's name")
        for person in self.people:
            known = self.facts.get(person)
            if known is None:
                raise ValueError(f"{where}: field 'facts' has no entry for person {person!r}")
            for relation in RELATIONS:
                obj = known.get(relation.name)
                if obj not in self.attributes.get(relation.name, {}):
                    raise ValueError(
                        f"{where}: field 'facts' [{person!r}][{relation.name!r}] = {obj!r} is not an object "
                        f"of that relation"
                    )

    # ------------------------------------------------------------------ accessors
    @property
    def countries(self) -> dict[str, str]:
        """City -> country."""
        return self.attributes["birth_city"]

    @property
    def relations(self) -> list[str]:
        return [relation.name for relation in RELATIONS]

    def object_pool(self, relation: str) -> list[str]:
        """Every object the relation can take (new objects for edits come from here)."""
        relation_named(relation)
        return list(self.attributes[relation])

    def attribute(self, relation: str, obj: str) -> str:
        """The two-hop attribute of an object (a city's country, ...)."""
        return self.attributes[relation][obj]

    @property
    def entity_count(self) -> int:
        """People, plus every object and attribute value."""
        values = {v for table in self.attributes.values() for pair in table.items() for v in pair}
        return len(self.people) + len(values)

    # ------------------------------------------------------------------ views defined in other modules
    def corpus(self) -> list[str]:
        """Every pretraining sentence, as text (see ``corpus.build_corpus`` for the answer spans)."""
        from edit_grpo_trl.data.world.corpus import build_corpus

        return [sample.text for sample in build_corpus(self)]

    def fact_prompts(self, split: str = "anchor"):
        """Recall prompts of one split with their answers (see ``prompts.fact_prompts``)."""
        from edit_grpo_trl.data.world.prompts import fact_prompts

        return fact_prompts(self, split)

    def recall_prompts(self, split: str = "anchor") -> list[tuple[str, str]]:
        """(prompt, answer) pairs of one recall split."""
        return [(item.prompt, item.answer) for item in self.fact_prompts(split)]

    def edit_cases(self, num_cases: int = 20, seed: int = 0):
        """Edit cases on distinct people, with every probe kind (see ``cases.world_edit_cases``)."""
        from edit_grpo_trl.data.world.cases import world_edit_cases

        return world_edit_cases(self, num_cases=num_cases, seed=seed)


def world_vocabulary_words() -> set[str]:
    """Every word the world's text can contain apart from person names (names must avoid these)."""
    texts = [t for relation in RELATIONS for t in (*relation.templates, relation.two_hop)]
    texts += [t for relation in RELATIONS for t in relation.attribute_statements]
    texts += [*ALIAS_STATEMENTS, CHAT_INSTRUCTION]
    words: set[str] = set()
    for text in texts:
        for marker in ("{s}", "{o}", "{a}", "{prompt}", *SPECIAL_TOKENS):
            text = text.replace(marker, " ")
        words.update(text.split())
    for relation in RELATIONS:
        for obj, attribute in relation.attributes.items():
            words.update((obj, attribute))
    return words
