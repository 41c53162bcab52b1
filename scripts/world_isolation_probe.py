"""Does the knowledge world show knowledge isolation? Fine-tune ONE MLP down_proj weight on each case's
anchor prompt -> new object, then measure, by greedy decoding + exact match, how far the new fact spread.

Each case is edited alone, from the pretrained weights. Reported per probe family (pre-edit accuracy is the
share answering the *old* fact, post-edit the share answering the *new* one; locality is the share whose
true answer survived):
  reliability (the anchor), AGT training-pool templates, held-out templates (overall and per template
  position: subject-late statement, "Question : ... Answer :", chat turn, subject after other words),
  the AGT boxed-chat anchor, Subject_Aliasing, Reasoning (two-hop), and locality.

    python scripts/world_isolation_probe.py --size tiny --cases 24 --out isolation.json
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections import defaultdict

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

from edit_grpo_trl.answers import exact_match, extract_answer
from edit_grpo_trl.data.cases import EditCase, ProbeKind
from edit_grpo_trl.data.world import KnowledgeWorld, ensure_world_model
from edit_grpo_trl.data.world.chat import boxed_chat_prompt
from edit_grpo_trl.generation import greedy_generate

HELDOUT_SHAPES = ("subject_late", "question", "chat_turn", "after_other_words")


def probe_sets(case: EditCase) -> dict[str, list[tuple[str, tuple[str, ...], str]]]:
    """(prompt, answers after the edit, answer style) per measured family."""
    sets: dict[str, list] = defaultdict(list)
    sets["reliability"].append((case.prompt, case.target_new, "plain"))
    sets["chat_anchor"].append((boxed_chat_prompt(case.prompt), case.target_new, "boxed"))
    for probe in case.probes_of(ProbeKind.TRAIN_GENERALIZATION):
        sets["train_pool"].append((probe.prompt, probe.answers, "plain"))
    for position, probe in enumerate(case.probes_of(ProbeKind.EVAL_GENERALIZATION)):
        sets["heldout"].append((probe.prompt, probe.answers, "plain"))
        sets[f"heldout/{HELDOUT_SHAPES[position]}"].append((probe.prompt, probe.answers, "plain"))
    for key in ("Subject_Aliasing", "Reasoning"):
        for probe in case.probes_of(ProbeKind.PORTABILITY, key):
            sets[key].append((probe.prompt, probe.answers, "plain"))
    for key in ("Relation_Specificity", "Neighborhood"):
        for probe in case.probes_of(ProbeKind.LOCALITY, key):
            sets[f"locality/{key}"].append((probe.prompt, probe.answers, "plain"))
    return sets


def old_answers(
    world: KnowledgeWorld, case: EditCase, family: str, answers: tuple[str, ...]
) -> tuple[str, ...]:
    """What the pre-edit model should answer: the old object (or its attribute); locality is unchanged."""
    if family.startswith("locality"):
        return answers
    if family == "Reasoning":
        return (world.attribute(case.relation, case.target_true),)
    return (case.target_true,)


def accuracy(model, tokenizer, items) -> list[bool]:
    completions = greedy_generate(model, tokenizer, [p for p, _, _ in items], max_new_tokens=4)
    return [
        exact_match(extract_answer(c, style), answers)
        for c, (_, answers, style) in zip(completions, items, strict=True)
    ]


def edit_one_weight(
    model, tokenizer, case: EditCase, weight: torch.nn.Parameter, steps: int, lr: float
) -> int:
    """Gradient steps on ``weight`` alone until the anchor's greedy answer is the new object (at most ``steps``)."""
    prompt = tokenizer(case.prompt, add_special_tokens=False)["input_ids"]
    target = tokenizer(" " + case.new_object, add_special_tokens=False)["input_ids"]
    device = weight.device
    ids = torch.tensor([prompt + target], device=device)
    optimizer = torch.optim.Adam([weight], lr=lr)
    for step in range(1, steps + 1):
        logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1]
        loss = F.cross_entropy(logits, torch.tensor(target, device=device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            if (
                model(input_ids=ids[:, : len(prompt)]).logits[0, -1].argmax().item() == target[0]
                and loss.item() < 0.1
            ):
                return step
    return steps


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cases", type=int, default=24)
    parser.add_argument("--layer", type=int, default=None, help="default: the middle layer")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None)
    options = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    folder = ensure_world_model(options.size, options.seed)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).to(options.device).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    world = KnowledgeWorld.load(folder)
    layer = options.layer if options.layer is not None else model.config.num_hidden_layers // 2
    weight = model.model.layers[layer].mlp.down_proj.weight
    original = weight.detach().clone()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    weight.requires_grad_(True)
    cases = world.edit_cases(num_cases=options.cases, seed=options.seed)
    before, after = defaultdict(list), defaultdict(list)
    steps_taken = []
    started = time.perf_counter()
    for case in cases:
        sets = probe_sets(case)
        for family, items in sets.items():
            old_items = [(p, old_answers(world, case, family, a), s) for p, a, s in items]
            before[family] += accuracy(model, tokenizer, old_items)
        steps_taken.append(edit_one_weight(model, tokenizer, case, weight, options.steps, options.lr))
        for family, items in sets.items():
            after[family] += accuracy(model, tokenizer, items)
        with torch.no_grad():
            weight.copy_(original)
    result = {
        "size": options.size,
        "seed": options.seed,
        "cases": len(cases),
        "edited": f"model.layers.{layer}.mlp.down_proj.weight",
        "lr": options.lr,
        "mean_steps": sum(steps_taken) / len(steps_taken),
        "seconds": round(time.perf_counter() - started, 1),
        "families": {
            family: {
                "n": len(after[family]),
                "pre_edit": sum(before[family]) / len(before[family]),
                "post_edit": sum(after[family]) / len(after[family]),
            }
            for family in after
        },
    }
    print(
        f"{result['edited']} of world-{options.size}: {len(cases)} cases, mean {result['mean_steps']:.1f} steps"
    )
    print(f"{'family':34s} {'n':>4s} {'pre (old)':>10s} {'post (new)':>11s}")
    for family, row in result["families"].items():
        print(f"{family:34s} {row['n']:4d} {row['pre_edit']:10.3f} {row['post_edit']:11.3f}")
    if options.out:
        with open(options.out, "w") as handle:
            json.dump(result, handle, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
