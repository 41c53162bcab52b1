"""Edit cases out of the knowledge world, in the same ``EditCase`` form as KnowEdit's.

A case changes one fact (person, relation) to another object of the relation's pool. Its probes:
* TRAIN_GENERALIZATION: the relation's training-pool templates (the only prompts AGT may train on);
* EVAL_GENERALIZATION: the held-out templates (question, subject-late, chat-turn shapes);
* PORTABILITY "Subject_Aliasing": the anchor and held-out templates through the person's alias;
* PORTABILITY "Reasoning": the two-hop question, answered by the *new* object's attribute;
* LOCALITY "Relation_Specificity": the person's other relations (true objects);
* LOCALITY "Neighborhood": the same relation of other people, preferring people who share the old object.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from edit_grpo_trl.data.cases import EditCase, Probe, ProbeKind
from edit_grpo_trl.data.world.relations import RELATIONS, Relation, fill

if TYPE_CHECKING:
    from edit_grpo_trl.data.world.world import KnowledgeWorld

NEIGHBOURS_PER_CASE = 2


def world_edit_cases(world: KnowledgeWorld, num_cases: int = 20, seed: int = 0) -> list[EditCase]:
    """``num_cases`` cases on distinct people (aliased people first, so alias portability is measured on
    as many cases as possible), relations taken in turn; deterministic from the world and ``seed``."""
    if not isinstance(num_cases, int) or not 0 < num_cases <= len(world.people):
        raise ValueError(
            f"num_cases must be an integer from 1 to {len(world.people)} (the world's people), got {num_cases!r}"
        )
    rng = random.Random(f"world-cases-{world.size}-{world.seed}-{seed}")
    aliased = [person for person in world.people if person in world.aliases]
    chosen = rng.sample(aliased, min(num_cases, len(aliased)))
    taken = set(chosen)
    chosen += rng.sample([p for p in world.people if p not in taken], num_cases - len(chosen))
    offset = rng.randrange(len(RELATIONS))
    cases = []
    for index, person in enumerate(chosen):
        relation = RELATIONS[(index + offset) % len(RELATIONS)]
        old = world.facts[person][relation.name]
        cases.append(_case(world, person, relation, old, _new_object(world, relation, old, rng), rng))
    return cases


def _new_object(world: KnowledgeWorld, relation: Relation, old: str, rng: random.Random) -> str:
    # Prefer an object whose two-hop attribute differs from the old one's, so the Reasoning probe's answer
    # changes with the edit (otherwise it would pass without the edit spreading at all).
    others = [o for o in world.object_pool(relation.name) if o != old]
    old_attribute = world.attribute(relation.name, old)
    informative = [o for o in others if world.attribute(relation.name, o) != old_attribute]
    return rng.choice(informative or others)


def _case(
    world: KnowledgeWorld, person: str, relation: Relation, old: str, new: str, rng: random.Random
) -> EditCase:
    probes = [Probe(fill(t, person), (new,), ProbeKind.TRAIN_GENERALIZATION) for t in relation.train]
    probes += [Probe(fill(t, person), (new,), ProbeKind.EVAL_GENERALIZATION) for t in relation.heldout]
    alias = world.aliases.get(person)
    if alias is not None:
        probes += [
            Probe(fill(t, alias), (new,), ProbeKind.PORTABILITY, "Subject_Aliasing")
            for t in (relation.anchor, *relation.heldout)
        ]
    new_attribute = world.attribute(relation.name, new)
    probes.append(Probe(fill(relation.two_hop, person), (new_attribute,), ProbeKind.PORTABILITY, "Reasoning"))
    for other in RELATIONS:
        if other.name != relation.name:
            true_object = world.facts[person][other.name]
            probes.append(
                Probe(fill(other.anchor, person), (true_object,), ProbeKind.LOCALITY, "Relation_Specificity")
            )
    for neighbour in _neighbours(world, person, relation, old, rng):
        probes.append(
            Probe(
                fill(relation.anchor, neighbour),
                (world.facts[neighbour][relation.name],),
                ProbeKind.LOCALITY,
                "Neighborhood",
            )
        )
    return EditCase(
        case_id=f"world-{world.size}-{world.seed}-{person}-{relation.name}",
        subject=person,
        prompt=fill(relation.anchor, person),
        target_new=(new,),
        target_true=old,
        probes=tuple(probes),
        relation=relation.name,
        source=f"world:{world.size}:{world.seed}",
        metadata={
            "alias": alias,
            "old_attribute": world.attribute(relation.name, old),
            "new_attribute": new_attribute,
        },
    )


def _neighbours(
    world: KnowledgeWorld, person: str, relation: Relation, old: str, rng: random.Random
) -> list[str]:
    # People who share the old object are where an edit most easily bleeds (CounterFact's neighbourhood).
    others = [p for p in world.people if p != person]
    sharing = [p for p in others if world.facts[p][relation.name] == old]
    picked = rng.sample(sharing, min(NEIGHBOURS_PER_CASE, len(sharing)))
    rest = [p for p in others if p not in picked]
    return picked + rng.sample(rest, NEIGHBOURS_PER_CASE - len(picked))
