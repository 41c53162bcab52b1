"""Stage-1 editors on the knowledge world: reliability, held-out generalization, portability, locality, time.

    .venv/bin/python scripts/editor_report.py --size tiny --cases 20 --editors rome memit ft alphaedit
    .venv/bin/python scripts/editor_report.py --editors rome --set rome.layers=[2] --set rome.v_lr=0.1

Every editor edits its own copy of the pretrained world model with the same cases (ROME and FT-M one case
at a time, sequentially; MEMIT and AlphaEdit one batch), then every probe is read two ways:
greedy decoding + exact match (the "Mirage" generation-based metric) and teacher-forced token accuracy
(EasyEdit's). Locality is the share of locality probes whose greedy answer (resp. argmax tokens at the
gold answer's positions) is the same as before the edit. Writes JSON and a Markdown table.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import time
from pathlib import Path

import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from edit_grpo_trl.answers import exact_match
from edit_grpo_trl.data.cases import EditCase, ProbeKind
from edit_grpo_trl.editors.presets import resolve_hparams
from edit_grpo_trl.editors.stage1 import build_editor
from edit_grpo_trl.editors.tokens import encode, pad_id, pad_right, target_ids
from edit_grpo_trl.generation import greedy_generate
from edit_grpo_trl.world import KnowledgeWorld, ensure_world_model

MODES = {
    "rome": "sequential",
    "ft": "sequential",
    "memit": "batch",
    "alphaedit": "batch",
    "wise": "sequential",
}


def probe_groups(cases: list[EditCase]) -> dict[str, list[tuple[int, str, tuple[str, ...]]]]:
    """(case index, prompt, answers) per measured group."""
    groups: dict[str, list] = {
        "reliability": [],
        "generalization": [],
        "alias": [],
        "two_hop": [],
        "locality": [],
    }
    # A neighbour probe that another case of the run edits is expected to change: it measures nothing here.
    edited_prompts = {case.prompt for case in cases}
    for index, case in enumerate(cases):
        groups["reliability"].append((index, case.prompt, case.target_new))
        for probe in case.probes:
            if probe.kind == ProbeKind.EVAL_GENERALIZATION:
                groups["generalization"].append((index, probe.prompt, probe.answers))
            elif probe.kind == ProbeKind.PORTABILITY and probe.key == "Subject_Aliasing":
                groups["alias"].append((index, probe.prompt, probe.answers))
            elif probe.kind == ProbeKind.PORTABILITY and probe.key == "Reasoning":
                groups["two_hop"].append((index, probe.prompt, probe.answers))
            elif probe.kind == ProbeKind.LOCALITY and probe.prompt not in edited_prompts:
                groups["locality"].append((index, probe.prompt, probe.answers))
    return groups


@torch.no_grad()
def argmax_at_answer(model, tokenizer, items, batch_size: int = 128) -> list[tuple[list[int], list[int]]]:
    """Per item: the argmax tokens at the gold answer's positions (teacher-forced) and the gold tokens."""
    rows = []
    for _, prompt, answers in items:
        prompt_ids, answer_ids = encode(tokenizer, prompt), target_ids(tokenizer, answers[0])
        rows.append((prompt_ids + answer_ids, len(prompt_ids), answer_ids))
    results = []
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        input_ids, attention_mask = pad_right([r[0] for r in batch], pad_id(tokenizer))
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
        for row, (_, prompt_length, answer_ids) in enumerate(batch):
            positions = range(prompt_length - 1, prompt_length - 1 + len(answer_ids))
            results.append(([int(logits[row, p].argmax()) for p in positions], answer_ids))
    return results


def read_probes(model, tokenizer, groups) -> dict[str, dict]:
    readings = {}
    for name, items in groups.items():
        completions = greedy_generate(model, tokenizer, [prompt for _, prompt, _ in items], max_new_tokens=8)
        readings[name] = {"completions": completions, "argmax": argmax_at_answer(model, tokenizer, items)}
    return readings


def score(groups, readings, baseline) -> dict[str, float]:
    metrics = {}
    for name in ("reliability", "generalization", "alias", "two_hop"):
        items, reading = groups[name], readings[name]
        if not items:
            continue
        greedy = [
            exact_match(c, answers) for c, (_, _, answers) in zip(reading["completions"], items, strict=True)
        ]
        forced = [
            sum(a == g for a, g in zip(pred, gold, strict=True)) / len(gold)
            for pred, gold in reading["argmax"]
        ]
        metrics[f"{name}_greedy"] = sum(greedy) / len(greedy)
        metrics[f"{name}_teacher_forced"] = sum(forced) / len(forced)
    items = groups["locality"]
    now, before = readings["locality"], baseline["locality"]
    same_greedy = [a == b for a, b in zip(now["completions"], before["completions"], strict=True)]
    same_forced = [
        sum(x == y for x, y in zip(a[0], b[0], strict=True)) / len(a[0])
        for a, b in zip(now["argmax"], before["argmax"], strict=True)
    ]
    metrics["locality_greedy"] = sum(same_greedy) / len(items)
    metrics["locality_teacher_forced"] = sum(same_forced) / len(items)
    metrics["locality_gold_greedy"] = sum(
        exact_match(c, answers) for c, (_, _, answers) in zip(now["completions"], items, strict=True)
    ) / len(items)
    return metrics


def parse_sets(values: list[str]) -> dict[str, dict]:
    overrides: dict[str, dict] = {}
    for value in values:
        key, _, raw = value.partition("=")
        editor, _, field = key.partition(".")
        overrides.setdefault(editor, {})[field] = yaml.safe_load(raw)
    return overrides


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--case-seed", type=int, default=0)
    parser.add_argument("--editors", nargs="+", default=["rome", "memit", "ft", "alphaedit"])
    parser.add_argument("--set", action="append", default=[], help="editor.field=value (YAML value)")
    parser.add_argument("--world-cache", default=None, help="knowledge-world cache folder")
    parser.add_argument("--stats-dir", default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="runs/editor_report")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    model_dir = ensure_world_model(args.size, args.seed, cache_dir=args.world_cache)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    cases = KnowledgeWorld.load(model_dir).edit_cases(args.cases, args.case_seed)
    groups = probe_groups(cases)
    baseline = read_probes(base, tokenizer, groups)
    overrides = parse_sets(args.set)
    report = {
        "world": str(model_dir),
        "cases": len(cases),
        "probes": {name: len(items) for name, items in groups.items()},
        "pre_edit": score(groups, baseline, baseline),
        "editors": {},
    }

    for name in args.editors:
        settings = resolve_hparams(name, base.config, None, overrides.get(name), model_dir=model_dir)
        model = copy.deepcopy(base)
        started = time.perf_counter()
        editor = build_editor(
            name, settings.hparams, model, tokenizer, model_dir, args.stats_dir, show_progress=False
        )
        statistics_seconds = time.perf_counter() - started
        result = editor.edit(model, tokenizer, cases, mode=MODES[name], show_progress=False)
        metrics = score(groups, read_probes(model, tokenizer, groups), baseline)
        metrics["seconds_per_case"] = result.record.seconds_per_case
        metrics["statistics_seconds"] = statistics_seconds
        metrics["mode"] = MODES[name]
        metrics["hparams"] = settings.source + (f" + {overrides[name]}" if name in overrides else "")
        report["editors"][name] = metrics
        print(name, json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in metrics.items()}))

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "editor_report.json").write_text(json.dumps(report, indent=1))
    columns = ["reliability", "generalization", "alias", "two_hop", "locality"]
    lines = [
        "| editor | mode | " + " | ".join(f"{c} (greedy / TF)" for c in columns) + " | s/case |",
        "|---" * 8 + "|",
    ]
    for name, metrics in {"pre-edit": report["pre_edit"], **report["editors"]}.items():
        cells = [
            f"{metrics.get(c + '_greedy', float('nan')):.2f} / {metrics.get(c + '_teacher_forced', float('nan')):.2f}"
            for c in columns
        ]
        lines.append(
            f"| {name} | {metrics.get('mode', '-')} | "
            + " | ".join(cells)
            + f" | {metrics.get('seconds_per_case', 0):.2f} |"
        )
    counts = ", ".join(f"{name} {count}" for name, count in report["probes"].items())
    lines.append(f"\n{len(cases)} cases; probes: {counts}.")
    (out / "editor_report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
