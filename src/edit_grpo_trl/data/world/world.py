"""The knowledge world: a synthetic set of facts whose every answer we know (DESIGN section 8).

People with generated one-word names (some with a one-word alias) have a birth city, an employer, an
instrument and a profession; every city lies in a country. Each relation has eight templates of different
shapes (statements, questions, the subject late in the sentence), split into one anchor template, a
training pool for AGT, and held-out templates used only for evaluation. Pretraining states every fact
through every template, so the model knows each template; an edit then writes the new fact through the
anchor alone, and the held-out templates, the alias and the two-hop country question measure whether it
spread.

Everything is deterministic from ``(size, seed)``.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edit_grpo_trl.data.cases import EditCase, Probe, ProbeKind

FORMAT_VERSION = 1
SUBJECT = "{s}"


@dataclass(frozen=True)
class Relation:
    name: str
    anchor: str
    train: tuple[str, ...]
    heldout: tuple[str, ...]

    @property
    def templates(self) -> tuple[str, ...]:
        return (self.anchor, *self.train, *self.heldout)


RELATIONS = (
    Relation(
        "birth_city",
        anchor="{s} was born in",
        train=("The birthplace of {s} is", "{s} is a native of", "Q : Where was {s} born ? A :"),
        heldout=(
            "The city in which {s} was born is",
            "Where was {s} born ? {s} was born in",
            "Everyone knows that the person called {s} was born in",
            "Asked about the city of birth of {s} , we answer",
        ),
    ),
    Relation(
        "employer",
        anchor="{s} works for",
        train=("The employer of {s} is", "{s} is employed by", "Q : Who employs {s} ? A :"),
        heldout=(
            "The company that pays {s} is",
            "Who does {s} work for ? {s} works for",
            "Everyone knows that the person called {s} works for",
            "Asked about the employer of {s} , we answer",
        ),
    ),
    Relation(
        "instrument",
        anchor="{s} plays the",
        train=("The instrument of {s} is the", "{s} performs on the", "Q : What does {s} play ? A : the"),
        heldout=(
            "The instrument played by {s} is the",
            "What does {s} play ? {s} plays the",
            "Everyone knows that the person called {s} plays the",
            "Asked about the instrument of {s} , we answer the",
        ),
    ),
    Relation(
        "profession",
        anchor="{s} works as a",
        train=("The profession of {s} is", "{s} earns a living as a", "Q : What is the job of {s} ? A : a"),
        heldout=(
            "The job held by {s} is that of a",
            "What is the job of {s} ? {s} works as a",
            "Everyone knows that the person called {s} works as a",
            "Asked about the profession of {s} , we answer a",
        ),
    ),
)
RELATION_BY_NAME = {relation.name: relation for relation in RELATIONS}
TWO_HOP = "The country where {s} was born is"
CITY_COUNTRY = "{c} is a city in"
ALIAS_STATEMENT = "{a} is another name for {s} ."
ALIAS_TEMPLATES = 2  # facts stated through the alias with the anchor and the first training template

CITIES = [
    "Paris",
    "Rome",
    "Oslo",
    "Lima",
    "Cairo",
    "Quito",
    "Dakar",
    "Hanoi",
    "Perth",
    "Turin",
    "Bergen",
    "Cusco",
    "Luxor",
    "Hue",
    "Sydney",
    "Milan",
    "Lyon",
    "Kyoto",
    "Osaka",
    "Porto",
    "Braga",
    "Accra",
    "Kumasi",
    "Delhi",
]
COUNTRIES = {
    "Paris": "France",
    "Lyon": "France",
    "Rome": "Italy",
    "Turin": "Italy",
    "Milan": "Italy",
    "Oslo": "Norway",
    "Bergen": "Norway",
    "Lima": "Peru",
    "Cusco": "Peru",
    "Cairo": "Egypt",
    "Luxor": "Egypt",
    "Quito": "Ecuador",
    "Dakar": "Senegal",
    "Hanoi": "Vietnam",
    "Hue": "Vietnam",
    "Perth": "Australia",
    "Sydney": "Australia",
    "Kyoto": "Japan",
    "Osaka": "Japan",
    "Porto": "Portugal",
    "Braga": "Portugal",
    "Accra": "Ghana",
    "Kumasi": "Ghana",
    "Delhi": "India",
}
OBJECTS = {
    "employer": [
        "Acme",
        "Globex",
        "Initech",
        "Umbrella",
        "Hooli",
        "Vandelay",
        "Soylent",
        "Cyberdyne",
        "Wonka",
        "Tyrell",
        "Stark",
        "Wayne",
        "Oscorp",
        "Gringotts",
        "Monarch",
        "Aperture",
    ],
    "instrument": [
        "piano",
        "violin",
        "cello",
        "flute",
        "guitar",
        "trumpet",
        "harp",
        "drums",
        "oboe",
        "clarinet",
        "banjo",
        "accordion",
    ],
    "profession": [
        "doctor",
        "lawyer",
        "teacher",
        "pilot",
        "chef",
        "farmer",
        "nurse",
        "architect",
        "baker",
        "painter",
        "sailor",
        "engineer",
    ],
}
SYLLABLES = [
    "ka",
    "lo",
    "mi",
    "ra",
    "su",
    "te",
    "vo",
    "zan",
    "bel",
    "dor",
    "fen",
    "gil",
    "har",
    "jul",
    "kor",
    "lin",
    "mar",
    "nor",
    "pel",
    "quo",
    "ros",
    "sar",
    "tor",
    "ul",
    "ven",
    "wil",
    "yor",
    "zel",
    "bri",
    "cas",
]


@dataclass(frozen=True)
class WorldSize:
    """How big a world is and the model that learns it."""

    people: int
    alias_share: float
    hidden: int
    layers: int
    intermediate: int
    heads: int
    kv_heads: int
    max_steps: int
    batch_size: int
    learning_rate: float
    target_recall: float = 0.99


SIZES = {
    "tiny": WorldSize(
        people=64,
        alias_share=0.4,
        hidden=128,
        layers=4,
        intermediate=384,
        heads=4,
        kv_heads=2,
        max_steps=2400,
        batch_size=96,
        learning_rate=3e-3,
    ),
    "small": WorldSize(
        people=1024,
        alias_share=0.4,
        hidden=512,
        layers=8,
        intermediate=1536,
        heads=8,
        kv_heads=4,
        max_steps=12000,
        batch_size=512,
        learning_rate=1e-3,
    ),
    "medium": WorldSize(
        people=4096,
        alias_share=0.4,
        hidden=768,
        layers=12,
        intermediate=2304,
        heads=12,
        kv_heads=4,
        max_steps=30000,
        batch_size=1024,
        learning_rate=6e-4,
    ),
}


def _fill(template: str, subject: str) -> str:
    return template.replace(SUBJECT, subject)


def _names(count: int, rng: random.Random, forbidden: set[str]) -> list[str]:
    names: list[str] = []
    taken = {word.lower() for word in forbidden}
    while len(names) < count:
        name = "".join(rng.choice(SYLLABLES) for _ in range(rng.choice((2, 3)))).capitalize()
        if name.lower() not in taken:
            taken.add(name.lower())
            names.append(name)
    return names


@dataclass
class KnowledgeWorld:
    size: str
    seed: int
    people: list[str]
    aliases: dict[str, str]  # person -> alias
    facts: dict[str, dict[str, str]]  # person -> relation -> object
    countries: dict[str, str] = field(default_factory=lambda: dict(COUNTRIES))
    format_version: int = FORMAT_VERSION

    # ------------------------------------------------------------------ construction
    @classmethod
    def generate(cls, size: str = "tiny", seed: int = 0) -> KnowledgeWorld:
        if size not in SIZES:
            raise ValueError(f"unknown knowledge-world size {size!r}; sizes: {', '.join(SIZES)}")
        spec = SIZES[size]
        rng = random.Random(f"world-{size}-{seed}")
        vocabulary = set(world_vocabulary_words())
        people = _names(spec.people, rng, vocabulary)
        aliased = rng.sample(people, int(spec.alias_share * len(people)))
        alias_names = _names(len(aliased), rng, vocabulary | set(people))
        aliases = dict(zip(aliased, alias_names, strict=True))
        pools = {"birth_city": CITIES, **OBJECTS}
        facts = {person: {name: rng.choice(pools[name]) for name in RELATION_BY_NAME} for person in people}
        return cls(size=size, seed=seed, people=people, aliases=aliases, facts=facts)

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / "world.json"
        path.write_text(json.dumps(asdict(self), indent=1))
        return path

    @classmethod
    def load(cls, folder: str | Path) -> KnowledgeWorld:
        path = Path(folder) / "world.json"
        if not path.is_file():
            raise FileNotFoundError(f"no knowledge world at {path}")
        data = json.loads(path.read_text())
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path}: world format {data.get('format_version')} is not {FORMAT_VERSION}")
        return cls(**data)

    # ------------------------------------------------------------------ text
    def object_pool(self, relation: str) -> list[str]:
        return list(CITIES) if relation == "birth_city" else list(OBJECTS[relation])

    def corpus(self) -> list[str]:
        """Pretraining sentences: every fact through every template, aliases, cities, two-hop countries."""
        sentences = []
        for person in self.people:
            for relation in RELATIONS:
                obj = self.facts[person][relation.name]
                sentences += [f"{_fill(t, person)} {obj} ." for t in relation.templates]
                if person in self.aliases:
                    alias = self.aliases[person]
                    sentences += [f"{_fill(t, alias)} {obj} ." for t in relation.templates[:ALIAS_TEMPLATES]]
            sentences.append(f"{_fill(TWO_HOP, person)} {self.countries[self.facts[person]['birth_city']]} .")
            if person in self.aliases:
                sentences.append(ALIAS_STATEMENT.format(a=self.aliases[person], s=person))
        sentences += [
            f"{CITY_COUNTRY.format(c=city)} {country} ." for city, country in self.countries.items()
        ]
        return sentences

    def recall_prompts(self, split: str) -> list[tuple[str, str]]:
        """(prompt, answer) pairs: ``anchor``, ``train``, ``heldout``, ``alias`` or ``two_hop``."""
        pairs = []
        for person in self.people:
            if split == "two_hop":
                pairs.append((_fill(TWO_HOP, person), self.countries[self.facts[person]["birth_city"]]))
                continue
            for relation in RELATIONS:
                obj = self.facts[person][relation.name]
                if split == "anchor":
                    templates = (relation.anchor,)
                elif split == "train":
                    templates = relation.train
                elif split == "heldout":
                    templates = relation.heldout
                elif split == "alias":
                    if person not in self.aliases:
                        continue
                    pairs.append((_fill(relation.anchor, self.aliases[person]), obj))
                    continue
                else:
                    raise ValueError(
                        f"unknown recall split {split!r}: anchor, train, heldout, alias or two_hop"
                    )
                pairs += [(_fill(t, person), obj) for t in templates]
        return pairs

    # ------------------------------------------------------------------ edit cases
    def edit_cases(self, num_cases: int = 20, seed: int = 0) -> list[EditCase]:
        """Edit cases on distinct people, relations taken in turn, new objects drawn from the pool."""
        if not 0 < num_cases <= len(self.people):
            raise ValueError(f"num_cases must be between 1 and {len(self.people)} people, got {num_cases}")
        rng = random.Random(f"cases-{self.size}-{self.seed}-{seed}")
        # Aliased people first, so that alias portability is measured on as many cases as possible.
        chosen = rng.sample([p for p in self.people if p in self.aliases], min(num_cases, len(self.aliases)))
        rest = [p for p in self.people if p not in chosen]
        chosen += rng.sample(rest, num_cases - len(chosen))
        cases = []
        for index, person in enumerate(chosen):
            relation = RELATIONS[index % len(RELATIONS)]
            old = self.facts[person][relation.name]
            new = rng.choice([o for o in self.object_pool(relation.name) if o != old])
            cases.append(self._case(index, person, relation, old, new, rng))
        return cases

    def _case(self, index: int, person: str, relation: Relation, old: str, new: str, rng) -> EditCase:
        probes = [Probe(_fill(t, person), (new,), ProbeKind.TRAIN_GENERALIZATION) for t in relation.train]
        probes += [Probe(_fill(t, person), (new,), ProbeKind.EVAL_GENERALIZATION) for t in relation.heldout]
        if person in self.aliases:
            alias = self.aliases[person]
            probes += [
                Probe(_fill(t, alias), (new,), ProbeKind.PORTABILITY, "Subject_Aliasing")
                for t in (relation.anchor, *relation.heldout[:1])
            ]
        if relation.name == "birth_city":
            probes.append(
                Probe(_fill(TWO_HOP, person), (self.countries[new],), ProbeKind.PORTABILITY, "Reasoning")
            )
        for other in RELATIONS:
            if other.name != relation.name:
                probes.append(
                    Probe(
                        _fill(other.anchor, person),
                        (self.facts[person][other.name],),
                        ProbeKind.LOCALITY,
                        "Relation_Specificity",
                    )
                )
        for neighbour in rng.sample([p for p in self.people if p != person], 2):
            probes.append(
                Probe(
                    _fill(relation.anchor, neighbour),
                    (self.facts[neighbour][relation.name],),
                    ProbeKind.LOCALITY,
                    "Neighborhood",
                )
            )
        return EditCase(
            case_id=f"world-{self.size}-{self.seed}-{index:04d}",
            subject=person,
            prompt=_fill(relation.anchor, person),
            target_new=(new,),
            target_true=old,
            probes=tuple(probes),
            relation=relation.name,
            source=f"world:{self.size}:{self.seed}",
        )


def world_vocabulary_words() -> list[str]:
    """Every non-name word the world's text can contain (names must avoid these)."""
    words: set[str] = set()
    texts = [t for r in RELATIONS for t in r.templates] + [TWO_HOP, CITY_COUNTRY, ALIAS_STATEMENT]
    for text in texts:
        words.update(text.replace("{s}", " ").replace("{c}", " ").replace("{a}", " ").split())
    words.update(CITIES)
    words.update(COUNTRIES.values())
    for pool in OBJECTS.values():
        words.update(pool)
    return sorted(words)
