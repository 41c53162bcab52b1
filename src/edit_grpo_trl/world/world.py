"""The knowledge world: a synthetic set of facts whose every answer we know (docs/design.md section 9).

People with generated one-word names (some with a one-word alias) have a birth city, an employer, an
instrument and a profession; every city lies in a country. Each relation has ten templates of different
shapes (statements, questions, the subject late in the sentence), split into one anchor template, a
training pool for AGT, and six held-out templates used only for evaluation, each with a key
(``HELDOUT_KEYS``); the two keyed ``*_anchor`` end with the anchor word for word, the other four do not.
Pretraining states every fact through every template, so the model knows each template; an edit then
writes the new fact through the anchor alone, and the held-out templates, the alias and the two-hop
country question measure whether it spread.

What the edit cases measure, and what they keep apart (docs/world.md):

* Some people are *reserved*: never edited and never in an evaluation probe. Their facts are the
  ``TRAIN_LOCALITY`` probes, the only unedited facts stage 2 may train to keep.
* Every case has at least ``LOCALITY_PER_CASE`` evaluation ``LOCALITY`` probes, keyed by type: the same
  relation of other people (``neighborhood``), the subject's other relations (``Relation_Specificity``)
  and other relations of other people (``random``). No locality probe (training or evaluation) is a fact
  any case of the draw edits, so none is another case's anchor.
* The two-hop fact (the country of birth) is stated in pretraining for only part of the people; the
  ``Reasoning`` probe asks it only of the others, so it must be composed from the birth city and the
  city's country. A new birth city always lies in another country, so the two-hop answer changes.

Everything is deterministic from ``(size, seed)`` and, for the cases, the case seed.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edit_grpo_trl.data.cases import EditCase, Probe, ProbeKind
from edit_grpo_trl.data.facts.cases import (
    NEIGHBORHOOD,
    REASONING,
    RELATION_SPECIFICITY,
    SUBJECT_ALIASING,
)

FORMAT_VERSION = 2
SUBJECT = "{s}"
# Keys of the held-out templates, in the order of every relation's ``heldout``; a key ending in
# ``_anchor`` names a template that ends with the relation's anchor (checked by the tests).
HELDOUT_KEYS = ("paraphrase", "question_anchor", "hearsay_anchor", "asked", "record", "reply")
RANDOM = "random"  # locality key: another relation of another person
RESERVED_SHARE = 0.125  # people kept for the locality training pool (never edited, never evaluated)
TWO_HOP_STATED_SHARE = 0.5  # people whose country of birth pretraining states outright
LOCALITY_NEIGHBOURS = 9  # evaluation locality per case: same relation, other people
LOCALITY_RANDOM = 8  # evaluation locality per case: other relations, other people
LOCALITY_PER_CASE = LOCALITY_NEIGHBOURS + LOCALITY_RANDOM + 3  # + the subject's three other relations
TRAIN_LOCALITY_PER_CASE = 8  # half the case's relation, half others, all of reserved people
ALIAS_FORMS = ("anchor", "paraphrase")  # templates the alias portability probes use


@dataclass(frozen=True)
class Relation:
    name: str
    anchor: str
    train: tuple[str, ...]
    heldout: tuple[str, ...]

    @property
    def templates(self) -> tuple[str, ...]:
        return (self.anchor, *self.train, *self.heldout)

    @property
    def heldout_by_key(self) -> dict[str, str]:
        return dict(zip(HELDOUT_KEYS, self.heldout, strict=True))

    def template(self, form: str) -> str:
        """The anchor (``"anchor"``) or the held-out template of that key."""
        return self.anchor if form == "anchor" else self.heldout_by_key[form]

    def ends_with_anchor(self) -> list[str]:
        """Keys of the held-out templates that end with the anchor word for word."""
        return [key for key, template in self.heldout_by_key.items() if template.endswith(self.anchor)]


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
            "The record for {s} lists the city of birth as",
            "When asked where they were born , {s} replied",
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
            "The record for {s} lists the employer as",
            "When asked who they work for , {s} replied",
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
            "The record for {s} lists the instrument as the",
            "When asked what they play , {s} replied the",
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
            "The record for {s} lists the profession as a",
            "When asked what their job is , {s} replied a",
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


Fact = tuple[str, str]  # (person, relation name)


@dataclass
class KnowledgeWorld:
    size: str
    seed: int
    people: list[str]
    aliases: dict[str, str]  # person -> alias
    facts: dict[str, dict[str, str]]  # person -> relation -> object
    reserved: list[str]  # the locality training pool's people: never edited, never in an evaluation probe
    two_hop_stated: list[str]  # people whose country of birth pretraining states (never probed for it)
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
        # A stream of its own, so the people and facts above stay those of format 1.
        split = random.Random(f"world-{size}-{seed}-split")
        # Reserved people are taken among those without an alias: the cases want the aliased ones.
        unaliased = [p for p in people if p not in aliases]
        reserved = split.sample(unaliased, max(1, round(RESERVED_SHARE * len(people))))
        stated = split.sample(people, round(TWO_HOP_STATED_SHARE * len(people)))
        return cls(
            size=size,
            seed=seed,
            people=people,
            aliases=aliases,
            facts=facts,
            reserved=sorted(reserved, key=people.index),
            two_hop_stated=sorted(stated, key=people.index),
        )

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

    def country_of_birth(self, person: str) -> str:
        return self.countries[self.facts[person]["birth_city"]]

    def corpus(self) -> list[str]:
        """Pretraining sentences: every fact through every template, aliases, cities, and the country of
        birth of the people in ``two_hop_stated`` only."""
        stated = set(self.two_hop_stated)
        sentences = []
        for person in self.people:
            for relation in RELATIONS:
                obj = self.facts[person][relation.name]
                sentences += [f"{_fill(t, person)} {obj} ." for t in relation.templates]
                if person in self.aliases:
                    alias = self.aliases[person]
                    sentences += [f"{_fill(t, alias)} {obj} ." for t in relation.templates[:ALIAS_TEMPLATES]]
            if person in stated:
                sentences.append(f"{_fill(TWO_HOP, person)} {self.country_of_birth(person)} .")
            if person in self.aliases:
                sentences.append(ALIAS_STATEMENT.format(a=self.aliases[person], s=person))
        sentences += [
            f"{CITY_COUNTRY.format(c=city)} {country} ." for city, country in self.countries.items()
        ]
        return sentences

    def recall_prompts(self, split: str) -> list[tuple[str, str]]:
        """(prompt, true answer) pairs of a split.

        ``anchor``, ``train``, ``heldout``: every person's facts through those templates; ``heldout:<key>``:
        one held-out template; ``alias:<form>``: the facts of aliased people through their alias and one
        of ``ALIAS_FORMS`` (``alias`` alone is ``alias:anchor``); ``two_hop``: the country of birth of the
        people it is not stated for (composed: the form the cases probe); ``two_hop_stated``: of the others.
        """
        stated = set(self.two_hop_stated)
        if split in ("two_hop", "two_hop_stated"):
            wanted = split == "two_hop_stated"
            return [
                (_fill(TWO_HOP, p), self.country_of_birth(p)) for p in self.people if (p in stated) == wanted
            ]
        kind, _, form = split.partition(":")
        if kind == "alias":
            form = form or "anchor"
            if form not in ALIAS_FORMS:
                raise ValueError(f"unknown alias form {form!r}: {', '.join(ALIAS_FORMS)}")
            return [
                (_fill(r.template(form), self.aliases[p]), self.facts[p][r.name])
                for p in self.people
                if p in self.aliases
                for r in RELATIONS
            ]
        if split in ("anchor", "train", "heldout") or (kind == "heldout" and form in HELDOUT_KEYS):
            return [
                (_fill(t, p), self.facts[p][r.name])
                for p in self.people
                for r in RELATIONS
                for t in self._split_templates(r, split)
            ]
        raise ValueError(
            f"unknown recall split {split!r}: anchor, train, heldout, heldout:<key>, alias[:<form>], "
            "two_hop or two_hop_stated"
        )

    @staticmethod
    def _split_templates(relation: Relation, split: str) -> tuple[str, ...]:
        if split == "anchor":
            return (relation.anchor,)
        if split == "train":
            return relation.train
        if split == "heldout":
            return relation.heldout
        return (relation.heldout_by_key[split.partition(":")[2]],)

    # ------------------------------------------------------------------ edit cases
    def editable_people(self) -> list[str]:
        reserved = set(self.reserved)
        return [p for p in self.people if p not in reserved]

    def edit_cases(self, num_cases: int = 20, seed: int = 0) -> list[EditCase]:
        """Edit cases on distinct people (never reserved ones), new objects drawn from the pool.

        Aliased people are chosen first (alias portability is measured on as many cases as possible);
        relations are taken in turn, and a ``birth_city`` case goes to a person whose country of birth is
        not stated where one is left (the two-hop probe is asked only of those).
        """
        editable = self.editable_people()
        if not 0 < num_cases <= len(editable):
            raise ValueError(
                f"num_cases must be between 1 and {len(editable)} (the world's people less the "
                f"{len(self.reserved)} reserved for the locality training pool), got {num_cases}"
            )
        rng = random.Random(f"cases-{self.size}-{self.seed}-{seed}")
        aliased = [p for p in editable if p in self.aliases]
        chosen = rng.sample(aliased, min(num_cases, len(aliased)))
        taken = set(chosen)
        chosen += rng.sample([p for p in editable if p not in taken], num_cases - len(chosen))
        pairs = self._assign_relations(chosen)
        edited = {(person, relation.name) for person, relation in pairs}
        draw = _Draw(self, edited)
        cases = []
        for index, (person, relation) in enumerate(pairs):
            old = self.facts[person][relation.name]
            new = rng.choice(self.new_objects(relation.name, old))
            cases.append(self._case(index, person, relation, old, new, rng, draw))
        return cases

    def _assign_relations(self, chosen: list[str]) -> list[tuple[str, Relation]]:
        stated = set(self.two_hop_stated)
        remaining = list(chosen)
        pairs = []
        for index in range(len(chosen)):
            relation = RELATIONS[index % len(RELATIONS)]
            # birth_city slots take people whose two-hop fact is unstated, the other slots the rest
            wanted = relation.name != "birth_city"
            person = next((p for p in remaining if (p in stated) == wanted), remaining[0])
            remaining.remove(person)
            pairs.append((person, relation))
        return pairs

    def new_objects(self, relation: str, old: str) -> list[str]:
        """Objects an edit may write: not the old one, and for a birth city not one in the old country
        (the two-hop answer must change)."""
        if relation == "birth_city":
            return [c for c in CITIES if self.countries[c] != self.countries[old]]
        return [o for o in self.object_pool(relation) if o != old]

    def _case(
        self, index: int, person: str, relation: Relation, old: str, new: str, rng, draw: _Draw
    ) -> EditCase:
        probes = [Probe(_fill(t, person), (new,), ProbeKind.TRAIN_GENERALIZATION) for t in relation.train]
        probes += [
            Probe(_fill(t, person), (new,), ProbeKind.EVAL_GENERALIZATION, key)
            for key, t in relation.heldout_by_key.items()
        ]
        if person in self.aliases:
            alias = self.aliases[person]
            probes += [
                Probe(_fill(relation.template(form), alias), (new,), ProbeKind.PORTABILITY, SUBJECT_ALIASING)
                for form in ALIAS_FORMS
            ]
        metadata: dict = {
            "world_format": FORMAT_VERSION,
            # the real-fact cases' shape (facts/recall.py reads it): held-out templates in probe order
            "templates": {"anchor": relation.anchor, "heldout": list(relation.heldout)},
            "heldout_keys": list(HELDOUT_KEYS),
            "heldout_ending_with_anchor": relation.ends_with_anchor(),
        }
        if relation.name == "birth_city":
            metadata["two_hop_true"] = [self.countries[old]]
            metadata["two_hop_stated"] = person in set(self.two_hop_stated)
            if not metadata["two_hop_stated"]:
                probes.append(
                    Probe(_fill(TWO_HOP, person), (self.countries[new],), ProbeKind.PORTABILITY, REASONING)
                )
        same_subject = [((person, r.name), RELATION_SPECIFICITY) for r in RELATIONS if r is not relation]
        for fact, key in same_subject + draw.locality(person, relation.name, rng):
            probes.append(self._fact_probe(fact, ProbeKind.LOCALITY, key))
        for fact, key in draw.train_locality(relation.name, rng):
            probes.append(self._fact_probe(fact, ProbeKind.TRAIN_LOCALITY, key))
        return EditCase(
            case_id=f"world-{self.size}-{self.seed}-{index:04d}",
            subject=person,
            prompt=_fill(relation.anchor, person),
            target_new=(new,),
            target_true=old,
            probes=tuple(probes),
            relation=relation.name,
            source=f"world:{self.size}:{self.seed}",
            metadata=metadata,
        )

    def _fact_probe(self, fact: Fact, kind: ProbeKind, key: str) -> Probe:
        """A fact kept as it is, asked through its relation's anchor template."""
        person, relation = fact
        return Probe(
            _fill(RELATION_BY_NAME[relation].anchor, person), (self.facts[person][relation],), kind, key
        )


class _Draw:
    """The unedited facts one draw of cases may ask about, and how a case picks them.

    Evaluation locality comes from people who are neither reserved nor the case's subject, first from
    people no case of the draw edits, then (only when those run out) from the unedited relations of other
    cases' subjects; training locality comes from reserved people only. No fact an edit of the draw
    changes is ever picked.
    """

    def __init__(self, world: KnowledgeWorld, edited: set[Fact]) -> None:
        self.edited = edited
        subjects = {person for person, _ in edited}
        editable = world.editable_people()
        self.untouched = [p for p in editable if p not in subjects]
        self.subjects = [p for p in editable if p in subjects]
        self.reserved = list(world.reserved)

    def locality(self, person: str, relation: str, rng: random.Random) -> list[tuple[Fact, str]]:
        same = [relation]
        others = [r.name for r in RELATIONS if r.name != relation]
        picked = [(f, NEIGHBORHOOD) for f in self._pick(person, same, LOCALITY_NEIGHBOURS, rng)]
        picked += [(f, RANDOM) for f in self._pick(person, others, LOCALITY_RANDOM, rng)]
        return picked

    def train_locality(self, relation: str, rng: random.Random) -> list[tuple[Fact, str]]:
        half = TRAIN_LOCALITY_PER_CASE // 2
        others = [r.name for r in RELATIONS if r.name != relation]
        same = _sample_facts(self.reserved, [relation], half, rng)
        rest = _sample_facts(self.reserved, others, TRAIN_LOCALITY_PER_CASE - len(same), rng)
        return [(f, NEIGHBORHOOD) for f in same] + [(f, RANDOM) for f in rest]

    def _pick(self, person: str, relations: list[str], count: int, rng: random.Random) -> list[Fact]:
        picked = _sample_facts(self.untouched, relations, count, rng)
        if len(picked) < count:
            spare = [
                (p, r) for p in self.subjects if p != person for r in relations if (p, r) not in self.edited
            ]
            picked += rng.sample(spare, min(count - len(picked), len(spare)))
        return picked


def _sample_facts(people: list[str], relations: list[str], count: int, rng: random.Random) -> list[Fact]:
    """Up to ``count`` distinct facts (person, relation) of these people and relations, drawn uniformly."""
    total = len(people) * len(relations)
    indices = rng.sample(range(total), min(count, total))
    return [(people[i // len(relations)], relations[i % len(relations)]) for i in indices]


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
