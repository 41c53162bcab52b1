"""WISE's router on the knowledge world: the activation-difference score of edited vs unedited prompts.

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python scripts/wise_router_scores.py --cases 20
    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python scripts/wise_router_scores.py --set router_score=token

Edits a copy of the world model with WISE (the world preset, ``--set field=value`` overrides, case seed 0),
then reads the per-token difference ``||act(side(x)) - act(main(x))||`` at the routed projection on every
prompt of a group and pools it over the prompt's tokens four ways: the mean (EasyEdit's score), the max, the
last prompt token, the subject's last token. For each pooling it prints the group's quantiles, the share of
the group at or above the router's threshold (for the pooling the editor routes with) and the AUC of edit
anchors against unedited people's anchors (1.0: a threshold can separate them). Groups: ``edit`` (the
cases' anchors), ``heldout`` (their held-out paraphrases), ``same_person`` (the edited people's other
relations), ``unedited`` (anchors of people no case edits, every relation).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging

import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from edit_grpo_trl.data.cases import ProbeKind
from edit_grpo_trl.editors.presets import resolve_hparams
from edit_grpo_trl.editors.tokens import encode
from edit_grpo_trl.editors.wise import WiseEditor, wise_modules
from edit_grpo_trl.world import KnowledgeWorld, ensure_world_model

POOLS = ("mean", "max", "token", "subject_last")


def _subject_last(tokenizer, prompt: str, subject: str, ids: list[int]) -> int:
    """The index of the subject's last token in ``ids`` (the prompt's last token if it is not found)."""
    start = prompt.find(subject)
    if start < 0:
        return len(ids) - 1
    prefix = encode(tokenizer, prompt[: start + len(subject)])
    return min(len(prefix), len(ids)) - 1


def scores(model, tokenizer, items: list[tuple[str, str]]) -> dict[str, list[float]]:
    """Pooled activation differences of each (prompt, subject) at the model's one routed projection."""
    (wise,) = wise_modules(model).values()
    seen = {}
    handle = wise.register_forward_hook(lambda _m, args, _out: seen.__setitem__("x", args[0].detach()))
    pooled = {pool: [] for pool in POOLS}
    try:
        with torch.no_grad():
            for prompt, subject in items:
                ids = encode(tokenizer, prompt)
                model(input_ids=torch.tensor([ids]))
                x = seen["x"][0]
                distance = wise.distance(wise.project(x, wise.weight), wise.side(x))
                pooled["mean"].append(float(distance.mean()))
                pooled["max"].append(float(distance.max()))
                pooled["token"].append(float(distance[-1]))
                pooled["subject_last"].append(float(distance[_subject_last(tokenizer, prompt, subject, ids)]))
    finally:
        handle.remove()
    return pooled


def auc(positive: list[float], negative: list[float]) -> float:
    wins = sum((p > n) + 0.5 * (p == n) for p in positive for n in negative)
    return wins / max(len(positive) * len(negative), 1)


def quantiles(values: list[float]) -> list[float]:
    ordered = torch.tensor(values)
    return [round(float(ordered.quantile(q)), 2) for q in (0.1, 0.5, 0.9)]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--case-seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], help="field=value (YAML value)")
    parser.add_argument("--out", default=None, help="append the summary as one JSON line")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    torch.manual_seed(0)

    model_dir = ensure_world_model(args.size, 0)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    world = KnowledgeWorld.load(model_dir)
    cases = world.edit_cases(args.cases, args.case_seed)
    overrides = {}
    for item in args.set:
        key, _, raw = item.partition("=")
        overrides[key] = yaml.safe_load(raw)
    settings = resolve_hparams("wise", base.config, None, overrides or None, model_dir=model_dir)
    model = (
        WiseEditor(settings.hparams).edit(copy.deepcopy(base), tokenizer, cases, show_progress=False).model
    )
    (wise,) = wise_modules(model).values()
    threshold = float(wise.router_threshold)
    routed_pool = settings.hparams.router_score

    edited = {case.subject for case in cases}
    groups = {
        "edit": [(case.prompt, case.subject) for case in cases],
        "heldout": [
            (probe.prompt, case.subject)
            for case in cases
            for probe in case.probes
            if probe.kind == ProbeKind.EVAL_GENERALIZATION
        ],
        "same_person": [
            (probe.prompt, case.subject)
            for case in cases
            for probe in case.probes
            if probe.kind == ProbeKind.LOCALITY and probe.key == "Relation_Specificity"
        ],
    }
    unedited = [(p, p.split()[0]) for p, _ in world.recall_prompts("anchor") if p.split()[0] not in edited]
    groups["unedited"] = unedited[:200]

    pooled = {name: scores(model, tokenizer, items) for name, items in groups.items()}
    summary = {"overrides": overrides, "threshold": threshold, "router_score": routed_pool, "groups": {}}
    for name, values in pooled.items():
        row = {"n": len(groups[name])}
        for pool in POOLS:
            row[pool] = quantiles(values[pool])
        row["routed"] = round(sum(v >= threshold for v in values[routed_pool]) / max(len(groups[name]), 1), 3)
        summary["groups"][name] = row
    summary["auc_edit_vs_unedited"] = {
        pool: round(auc(pooled["edit"][pool], pooled["unedited"][pool]), 3) for pool in POOLS
    }
    print(json.dumps(summary, indent=1))
    if args.out:
        with open(args.out, "a") as handle:
            handle.write(json.dumps(summary) + "\n")


if __name__ == "__main__":
    main()
