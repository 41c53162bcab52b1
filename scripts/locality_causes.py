"""Why does stage 2 break locality? Three checks on finished pipeline runs, from per-probe answers.

    flips        Where changed locality answers go, per probe key (Relation_Specificity, neighborhood,
                 random): this case's new object, another case's new object (and whether that case
                 edits the probe's own relation), or something else; after stage 1, after refinement,
                 and for the probes stage 1 kept but refinement changed ("stage-2 breaks"). Read from
                 the runs' ``eval/<point>/probes.jsonl``; no model is loaded.
    trained      Accuracy against the pre-edit model's answers on the prompts training touches (the AGT
                 locality rows, the rest of the locality pool) and on the evaluated locality probes it
                 never sees, at stage 1 and after refinement. Loads the pre-edit, stage-1 and refined
                 models and decodes greedily with the project's generation code.
    checkpoints  Every ``stage2/checkpoint-<step>`` of a run evaluated as the pipeline evaluates (the
                 same cases, the pre-edit baseline), plus the trained-prompt accuracy and the training
                 rewards logged up to that step.
    report       Markdown tables from the files the three commands wrote.

A run folder is one that ``edit-grpo pipeline`` (or ``bench/knowledge_world.py run``) finished. Its
condition and seed are read from the folder names ``.../seed<seed>/<condition>``.

    python scripts/locality_causes.py flips RUNS/tiny/memit/seed*/* --out flips.jsonl
    python scripts/locality_causes.py trained RUNS/tiny/memit/seed*/* --out trained.jsonl
    python scripts/locality_causes.py checkpoints RUNS/tiny/memit/seed*/* --out checkpoints.jsonl
    python scripts/locality_causes.py report --flips flips.jsonl --trained trained.jsonl \\
        --checkpoints checkpoints.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from edit_grpo_trl.answers import contains_match, exact_match, extract_plain, normalize_answer
from edit_grpo_trl.data.cases import EditCase, ProbeKind

KEYS = ("all", "Relation_Specificity", "neighborhood", "random")
DESTINATIONS = ("own_new_object", "other_new_object", "other")
# Locality answers compared with the pre-edit model's: after stage 1, after refinement, and the probes
# that stage 1 kept but refinement broke ("stage-2 breaks").
TRANSITIONS = ("pre->stage1", "pre->refined", "stage-2 breaks")
SETS = ("agt_rows", "pool_only", "evaluated")


# ------------------------------------------------------------------------------------------ pure parts
def relation_patterns(cases: Iterable[EditCase]) -> list[tuple[re.Pattern[str], str]]:
    """One pattern per relation, from the cases' own anchors (the edit prompt with its subject as a
    wildcard), longest first, so ``works as a`` is tried before a shorter anchor that it could contain."""
    templates: dict[str, str] = {}
    for case in cases:
        if case.relation and case.subject in case.prompt:
            templates.setdefault(case.prompt.replace(case.subject, "\0", 1), case.relation)
    ordered = sorted(templates.items(), key=lambda item: -len(item[0]))
    return [
        (re.compile("^" + re.escape(template).replace("\0", ".+?") + "$"), relation)
        for template, relation in ordered
    ]


def relation_of(prompt: str, patterns: Sequence[tuple[re.Pattern[str], str]]) -> str | None:
    """The relation whose anchor ``prompt`` asks through, or None when no case's anchor fits."""
    for pattern, relation in patterns:
        if pattern.match(prompt):
            return relation
    return None


def objects_by_relation(
    cases: Sequence[EditCase], patterns, extra: dict[str, Iterable[str]] | None = None
) -> dict[str, set[str]]:
    """Every answer the cases show for each relation (old and new objects, locality answers), with the
    ``extra`` objects given per relation, normalized: what counts as "an answer of that type"."""
    objects: dict[str, set[str]] = defaultdict(set)
    for relation, pool in (extra or {}).items():
        objects[relation].update(normalize_answer(a) for a in pool)
    for case in cases:
        if case.relation:
            objects[case.relation].update(normalize_answer(a) for a in case.target_new)
            if case.target_true:
                objects[case.relation].add(normalize_answer(case.target_true))
        for probe in case.probes:
            if probe.kind in (ProbeKind.LOCALITY, ProbeKind.TRAIN_LOCALITY):
                relation = relation_of(probe.prompt, patterns)
                if relation:
                    objects[relation].update(normalize_answer(a) for a in probe.answers)
    return dict(objects)


def classify_answer(
    answer: str,
    case_index: int,
    cases: Sequence[EditCase],
    probe_relation: str | None,
    objects: dict[str, set[str]],
) -> dict[str, Any]:
    """Where a changed answer went: this case's new object, another case's new object (which cases, and
    whether one of them edits the probe's relation), or something else (and whether it is still an answer
    of the probe's relation). Matching is the evaluation's: an accepted answer as whole words."""
    if contains_match(answer, cases[case_index].target_new):
        return {
            "destination": "own_new_object",
            "same_relation": cases[case_index].relation == probe_relation,
        }
    attractors = [
        i for i, case in enumerate(cases) if i != case_index and contains_match(answer, case.target_new)
    ]
    if attractors:
        relations = sorted({cases[i].relation or "-" for i in attractors})
        return {
            "destination": "other_new_object",
            "attractors": [cases[i].case_id for i in attractors],
            "attractor_relations": relations,
            "same_relation": probe_relation in relations,
        }
    return {
        "destination": "other",
        "same_relation": normalize_answer(answer) in objects.get(probe_relation or "", set()),
    }


def chance_same_relation(case_index: int, cases: Sequence[EditCase], probe_relation: str | None) -> float:
    """The share of the *other* cases that edit the probe's relation: how often an attractor would share
    the probe's relation if it were any other case's new object, picked blindly."""
    others = [case for i, case in enumerate(cases) if i != case_index]
    return sum(case.relation == probe_relation for case in others) / len(others) if others else 0.0


def edited_object_odds(
    answer: str, before: str, relation: str | None, cases: Sequence[EditCase], objects: dict[str, set[str]]
) -> dict[str, Any]:
    """Is a changed answer another object of the probe's relation (``same_type``), and then one that some
    case writes as its new object (``edited_object``)? ``chance_edited_object``: the share of the
    relation's other objects (all but the answer before) that are new objects of a case, i.e. how often a
    wrong answer of the right type would be an edited object if it were one of them picked blindly.

    For an edited object, ``writers`` counts the cases that write it, and ``writers_by_chance`` is the mean
    count over the relation's edited objects (all but the answer before): an object that several edits
    write attracts more than its share when the first is larger."""
    pool = objects.get(relation or "", set()) - {normalize_answer(before)}
    writers: dict[str, int] = defaultdict(int)
    for case in cases:
        if case.relation == relation:
            for obj in {normalize_answer(a) for a in case.target_new} & pool:
                writers[obj] += 1
    given = normalize_answer(answer)
    same_type = given in pool
    record = {
        "same_type": same_type,
        "edited_object": same_type and given in writers,
        "chance_edited_object": len(writers) / len(pool) if same_type and pool else 0.0,
    }
    if record["edited_object"]:
        record["writers"] = writers[given]
        record["writers_by_chance"] = sum(writers.values()) / len(writers)
    return record


def locality_transitions(
    cases: Sequence[EditCase],
    before: Sequence[dict],
    after: Sequence[dict],
    extra_objects: dict[str, Iterable[str]] | None = None,
) -> list[dict[str, Any]]:
    """Every locality probe's answer span at two evaluation points of one run (rows of ``probes.jsonl``,
    in the same order); a changed span is classified by :func:`classify_answer`."""
    index = {case.case_id: i for i, case in enumerate(cases)}
    patterns = relation_patterns(cases)
    objects = objects_by_relation(cases, patterns, extra_objects)
    first = [row for row in before if row["family"] == "locality"]
    second = [row for row in after if row["family"] == "locality"]
    if [(r["case_id"], r["prompt"]) for r in first] != [(r["case_id"], r["prompt"]) for r in second]:
        raise ValueError("the two points do not hold the same locality probes in the same order")
    records = []
    for old, new in zip(first, second, strict=True):
        case_index = index[new["case_id"]]
        relation = relation_of(new["prompt"], patterns)
        record = {
            "case_id": new["case_id"],
            "key": new["key"],
            "prompt": new["prompt"],
            "relation": relation,
            "case_relation": cases[case_index].relation,
            "before": old["answer_span"],
            "after": new["answer_span"],
            "changed": old["answer_span"] != new["answer_span"],
        }
        if record["changed"]:
            answer = extract_plain(new["generation"])
            record.update(classify_answer(answer, case_index, cases, relation, objects))
            record["chance_same_relation"] = chance_same_relation(case_index, cases, relation)
            record.update(edited_object_odds(answer, old["answer_span"], relation, cases, objects))
        records.append(record)
    return records


def stage2_breaks(at_stage1: Sequence[dict], at_refined: Sequence[dict]) -> tuple[list[dict], int]:
    """From the records of pre->stage1 and pre->refined (same probes, same order): the refined records of
    the probes stage 1 kept, and how many probes stage 1 broke that refinement gave back."""
    if [(r["case_id"], r["prompt"]) for r in at_stage1] != [(r["case_id"], r["prompt"]) for r in at_refined]:
        raise ValueError("the two transitions do not hold the same probes in the same order")
    kept = [after for before, after in zip(at_stage1, at_refined, strict=True) if not before["changed"]]
    repaired = sum(
        before["changed"] and not after["changed"]
        for before, after in zip(at_stage1, at_refined, strict=True)
    )
    return kept, repaired


def summarize_transitions(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per probe key (and ``all``): probes, changed, each destination, how many flips to another case's
    new object land on an edit of the probe's own relation (and how many would by chance), and how many
    "something else" answers are still an answer of the probe's relation."""
    table: dict[str, dict[str, float]] = {}
    groups: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        groups["all"].append(record)
        groups[record["key"]].append(record)
    for key in [k for k in KEYS if k in groups] + sorted(set(groups) - set(KEYS)):
        rows = groups[key]
        changed = [r for r in rows if r["changed"]]
        other_case = [r for r in changed if r["destination"] == "other_new_object"]
        else_rows = [r for r in changed if r["destination"] == "other"]
        table[key] = {
            "probes": len(rows),
            "changed": len(changed),
            **{d: sum(r["destination"] == d for r in changed) for d in DESTINATIONS},
            "other_new_object_same_relation": sum(r["same_relation"] for r in other_case),
            "other_new_object_same_relation_by_chance": sum(r["chance_same_relation"] for r in other_case),
            "other_same_relation_object": sum(r["same_relation"] for r in else_rows),
            "same_type": sum(r["same_type"] for r in changed),
            "same_type_edited_object": sum(r["edited_object"] for r in changed),
            "same_type_edited_object_by_chance": sum(r["chance_edited_object"] for r in changed),
            "edited_object_writers": sum(r.get("writers", 0) for r in changed),
            "edited_object_writers_by_chance": sum(r.get("writers_by_chance", 0.0) for r in changed),
        }
    return table


def add_up(tables: Iterable[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """The sum of several :func:`summarize_transitions` tables (seeds of one condition)."""
    total: dict[str, dict[str, float]] = {}
    for table in tables:
        for key, counts in table.items():
            slot = total.setdefault(key, {})
            for name, value in counts.items():
                slot[name] = slot.get(name, 0) + value
    return total


def prompt_sets(
    agt_locality_prompts: Iterable[str], pool_prompts: Iterable[str], evaluated_prompts: Iterable[str]
) -> dict[str, list[str]]:
    """The distinct prompts of each set: the AGT locality rows (every stage-2 method sees them), the rest of
    the locality pool (only the locality loss sees them) and the evaluated locality probes (never trained).
    Raises if an evaluated prompt is also a training prompt: then the split would measure nothing."""
    rows = list(dict.fromkeys(agt_locality_prompts))
    pool = [p for p in dict.fromkeys(pool_prompts) if p not in set(rows)]
    evaluated = list(dict.fromkeys(evaluated_prompts))
    leaked = set(evaluated) & (set(rows) | set(pool))
    if leaked:
        raise ValueError(
            f"{len(leaked)} evaluated locality prompt(s) are also training prompts: {sorted(leaked)[:3]}"
        )
    return {"agt_rows": rows, "pool_only": pool, "evaluated": evaluated}


def kept_share(answers: dict[str, str], reference: dict[str, str], prompts: Iterable[str]) -> tuple[int, int]:
    """(prompts, prompts whose answer is still the reference answer), normalized exact match."""
    prompts = list(prompts)
    kept = sum(exact_match(answers[p], [reference[p]]) for p in prompts)
    return len(prompts), kept


def kept_changes(
    first: dict[str, str], later: dict[str, str], reference: dict[str, str], prompts: Iterable[str]
) -> tuple[int, int]:
    """(prompts that kept the reference answer at the first point and lost it later, prompts that had lost
    it and got it back)."""
    broken = repaired = 0
    for prompt in prompts:
        before = exact_match(first[prompt], [reference[prompt]])
        after = exact_match(later[prompt], [reference[prompt]])
        broken += before and not after
        repaired += after and not before
    return broken, repaired


# Besides the rewards: the share of groups whose rewards were all equal (no GRPO advantage) and PGAA's
# mean absolute advantage, alignment term included.
SIGNAL_FIGURES = ("frac_reward_zero_std", "pgaa/advantage/abs_mean")


def rewards_up_to(log_history: Sequence[dict], start: int, stop: int) -> dict[str, float]:
    """Means of the reward figures (and :data:`SIGNAL_FIGURES`) the trainer logged at steps in
    (start, stop]."""
    sums: dict[str, list[float]] = defaultdict(list)
    for entry in log_history:
        step = entry.get("step")
        if step is None or not start < step <= stop:
            continue
        for name, value in entry.items():
            wanted = (
                name == "reward"
                or name in SIGNAL_FIGURES
                or (name.startswith("rewards/") and name.endswith("/mean"))
            )
            if wanted and isinstance(value, int | float):
                sums[name].append(float(value))
    return {name: statistics.fmean(values) for name, values in sums.items()}


# ------------------------------------------------------------------------------------------ plumbing
def run_identity(run: Path) -> dict[str, Any]:
    seed = run.parent.name
    return {
        "run": str(run),
        "seed": int(seed[4:]) if seed.startswith("seed") else seed,
        "condition": run.name,
    }


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_jsonl(rows: Iterable[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    print(f"wrote {path}")


def world_objects(cases: Sequence[EditCase]) -> dict[str, list[str]]:
    """Each relation's whole object pool when the cases come from the knowledge world, else nothing."""
    if not cases or not str(cases[0].source or "").startswith("world:"):
        return {}
    from edit_grpo_trl.world.world import CITIES, OBJECTS

    return {"birth_city": list(CITIES), **{name: list(pool) for name, pool in OBJECTS.items()}}


def command_flips(options) -> int:
    from edit_grpo_trl.data.cases import load_cases

    rows = []
    for run in map(Path, options.runs):
        cases = load_cases(run / "cases.jsonl")
        probes = {
            point: read_jsonl(run / "eval" / point / "probes.jsonl")
            for point in ("pre_edit", "post_edit", "post_refinement")
            if (run / "eval" / point / "probes.jsonl").is_file()
        }
        if "post_refinement" not in probes:
            continue
        records = {}
        for label, point in (("pre->stage1", "post_edit"), ("pre->refined", "post_refinement")):
            records[label] = locality_transitions(
                cases, probes["pre_edit"], probes[point], world_objects(cases)
            )
            # The evaluation classified these already: the two must agree.
            recorded = [r.get("flipped_to") for r in probes[point] if r["family"] == "locality"]
            if recorded != [r.get("destination") for r in records[label]]:
                raise SystemExit(
                    f"{run}: {label}: the classification differs from the evaluation's flipped_to"
                )
        records["stage-2 breaks"], repaired = stage2_breaks(records["pre->stage1"], records["pre->refined"])
        for label in TRANSITIONS:
            table = summarize_transitions(records[label])
            extra = {"repaired": repaired} if label == "stage-2 breaks" else {}
            rows.append(run_identity(run) | {"transition": label, "table": table} | extra)
    write_jsonl(rows, Path(options.out))
    return 0


def run_model_settings(recipe: dict[str, Any]) -> dict[str, Any]:
    """The sections of a run's ``recipe.json`` that loading and scoring its models need (``model`` and
    ``evaluation``), the model key under its current name (runs written before the rename of
    ``model.name_or_path`` to ``model.model_name_or_path`` still read)."""
    model = dict(recipe.get("model") or {})
    if "name_or_path" in model:
        model.setdefault("model_name_or_path", model.pop("name_or_path"))
    return {"model": model, "evaluation": dict(recipe.get("evaluation") or {})}


class ModelAnswers:
    """Greedy plain answers of checkpoints to prompts, through the project's loader and generation.
    Answers are kept per (resolved model folder, prompts) for the whole process: the conditions of a seed
    share the pre-edit and stage-1 models."""

    _cache: ClassVar[dict[tuple[str, int, tuple[str, ...]], dict[str, str]]] = {}

    def __init__(self, run: Path, max_new_tokens: int) -> None:
        from functools import partial

        from edit_grpo_trl.pipeline import load_model, resolve_model_path
        from edit_grpo_trl.recipe import recipe_from_dict

        self.recipe = recipe_from_dict(run_model_settings(json.loads((run / "recipe.json").read_text())))
        self.base_model = resolve_model_path(self.recipe.model.model_name_or_path, device="cpu")
        self.load = partial(load_model, recipe=self.recipe)
        self.max_new_tokens = max_new_tokens

    def __call__(self, model_path: str | Path, prompts: Sequence[str]) -> dict[str, str]:
        import gc

        from edit_grpo_trl.generation import greedy_generate

        key = (str(Path(model_path).resolve()), self.max_new_tokens, tuple(prompts))
        if key not in self._cache:
            model, tokenizer = self.load(str(model_path))
            texts = greedy_generate(model, tokenizer, list(prompts), max_new_tokens=self.max_new_tokens)
            self._cache[key] = {p: extract_plain(t) for p, t in zip(prompts, texts, strict=True)}
            del model
            gc.collect()
        return self._cache[key]


def run_prompt_sets(run: Path) -> dict[str, list[str]]:
    import datasets

    from edit_grpo_trl.data.cases import load_cases

    agt = datasets.load_from_disk(str(run / "agt_dataset"))
    if not all(isinstance(p, str) for p in agt["prompt"]):
        raise SystemExit(f"{run}: only plain-prompt AGT datasets are scored")
    agt_rows = [row["prompt"] for row in agt if row["role"] == "locality"]
    pool = [row["prompt"] for row in read_jsonl(run / "locality_pool.jsonl")]
    evaluated = [
        p.prompt for case in load_cases(run / "cases.jsonl") for p in case.probes_of(ProbeKind.LOCALITY)
    ]
    return prompt_sets(agt_rows, pool, evaluated)


def score_sets(answers: ModelAnswers, run: Path, sets: dict[str, list[str]], points: dict[str, Path]):
    """Per point and set: prompts and how many keep the pre-edit model's answer."""
    everything = [p for prompts in sets.values() for p in prompts]
    reference = answers(answers.base_model, everything)
    pool_answers = {row["prompt"]: row["answers"][0] for row in read_jsonl(run / "locality_pool.jsonl")}
    # The pool's stored answers were decoded by the same pre-edit model when the AGT data was built.
    disagree = sum(not exact_match(reference[p], [a]) for p, a in pool_answers.items() if p in reference)
    rows = []
    first = None
    for point, path in points.items():
        got = answers(path, everything)
        for name, prompts in sets.items():
            n, kept = kept_share(got, reference, prompts)
            row = {"point": point, "set": name, "prompts": n, "kept": kept}
            if first is not None:
                row["broken"], row["repaired"] = kept_changes(first, got, reference, prompts)
            rows.append(row)
        first = got if first is None else first
    return rows, disagree


def command_trained(options) -> int:
    rows = []
    for run in map(Path, options.runs):
        answers = ModelAnswers(run, options.max_new_tokens)
        sets = run_prompt_sets(run)
        points = {"stage1": run / "stage1" / "model", "refined": run / "stage2" / "final"}
        scored, disagree = score_sets(answers, run, sets, points)
        identity = run_identity(run)
        for row in scored:
            rows.append(identity | row | {"pool_answer_disagreements": disagree})
        print(
            identity["condition"],
            identity["seed"],
            [(r["point"], r["set"], r["kept"], r["prompts"]) for r in scored],
        )
    write_jsonl(rows, Path(options.out))
    return 0


def command_checkpoints(options) -> int:
    from edit_grpo_trl.data.cases import load_cases
    from edit_grpo_trl.evaluation.evaluate import EvalBaseline
    from edit_grpo_trl.evaluation.run import evaluate_checkpoint

    rows = []
    for run in map(Path, options.runs):
        checkpoints = sorted(
            (run / "stage2").glob("checkpoint-*"), key=lambda path: int(path.name.rsplit("-", 1)[1])
        )
        if not checkpoints:
            raise SystemExit(f"{run}: no stage2/checkpoint-* (train with --training.save_strategy steps)")
        answers = ModelAnswers(run, options.max_new_tokens)
        cases = load_cases(run / "cases.jsonl")
        baseline = EvalBaseline.load(run / "eval" / "pre_edit" / "baseline.json")
        sets = run_prompt_sets(run)
        history = json.loads((checkpoints[-1] / "trainer_state.json").read_text())["log_history"]
        points = [(0, run / "stage1" / "model")] + [(int(c.name.rsplit("-", 1)[1]), c) for c in checkpoints]
        previous = 0
        for step, path in points:
            if step == 0:  # stage 1: the pipeline's own post-edit evaluation
                out = run / "eval" / "post_edit"
            elif options.eval_root:
                out = Path(options.eval_root) / run.parent.name / run.name / f"step-{step}"
            else:
                out = run / "eval_checkpoints" / f"step-{step}"
            written = (out / "metrics.json").is_file() and (out / "locality.json").is_file()
            if step == 0 or (written and not options.again):
                metrics = json.loads((out / "metrics.json").read_text())
                locality = json.loads((out / "locality.json").read_text())
            else:
                result = evaluate_checkpoint(
                    answers.load,
                    str(path),
                    cases,
                    dataclasses.replace(answers.recipe.evaluation, progress=False),
                    out,
                    baseline=baseline,
                )
                metrics, locality = result.metrics, result.locality_breakdown()
            trained, _ = score_sets(answers, run, sets, {"checkpoint": path})
            row = run_identity(run) | {
                "step": step,
                "reliability": metrics["gen_em_reliability"],
                "generalization": metrics["gen_em_generalization"],
                "locality": metrics["gen_em_locality"],
                **{f"locality/{k}": metrics.get(f"gen_em_locality/{k}") for k in KEYS[1:]},
                "flips": {k: {d: locality[k][d] for d in ("changed", *DESTINATIONS)} for k in locality},
                "trained_sets": {r["set"]: [r["kept"], r["prompts"]] for r in trained},
                "rewards": rewards_up_to(history, previous, step) if step else {},
            }
            previous = step
            rows.append(row)
            print(
                row["condition"],
                row["seed"],
                step,
                f"rel {row['reliability']:.3f} gen {row['generalization']:.3f} loc {row['locality']:.3f}",
                row["trained_sets"],
                flush=True,
            )
    write_jsonl(rows, Path(options.out))
    return 0


# ------------------------------------------------------------------------------------------ report
def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}" if whole else "-"


def _mean_sd(values: Sequence[float]) -> str:
    if not values:
        return "-"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.1f} ± {spread:.1f}"


def report_flips(rows: list[dict], keys: Sequence[str] = KEYS) -> str:
    grouped: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for row in rows:
        grouped[(row["transition"], row["condition"])].append(row)
    lines = [
        "| transition | condition | seeds | key | probes | changed (%) | this case's new obj. "
        "| another case's new obj. | of which same relation (blind pick) | else "
        "| right-type answers that are an edited obj. (blind pick) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for (transition, condition), group in sorted(grouped.items(), key=lambda item: (item[0][1], item[0][0])):
        total = add_up(r["table"] for r in group)
        if transition == "stage-2 breaks":  # the probes stage 1 broke and refinement gave back
            transition = f"stage-2 breaks ({sum(r['repaired'] for r in group)} repaired)"
        for key in [k for k in keys if k in total]:
            t = total[key]
            other = t["other_new_object"]
            typed = t.get("same_type", 0)
            lines.append(
                f"| {transition} | {condition} | {len(group)} | {key} | {t['probes']:.0f} | "
                f"{t['changed']:.0f} ({_pct(t['changed'], t['probes'])}) | {t['own_new_object']:.0f} | "
                f"{other:.0f} | {_pct(t['other_new_object_same_relation'], other)}% "
                f"({_pct(t['other_new_object_same_relation_by_chance'], other)}%) | {t['other']:.0f} | "
                f"{t.get('same_type_edited_object', 0):.0f}/{typed:.0f} = "
                f"{_pct(t.get('same_type_edited_object', 0), typed)}% "
                f"({_pct(t.get('same_type_edited_object_by_chance', 0), typed)}%) |"
            )
    return "\n".join(lines)


def report_breaks_by_key(rows: list[dict]) -> str:
    """Per condition: the share of the probes stage 1 kept that refinement broke, per key, summed over
    seeds, and how many probes stage 1 broke that refinement gave back."""
    grouped: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        if row["transition"] == "stage-2 breaks":
            grouped[row["condition"]].append(row)
    lines = [
        "| condition | seeds | " + " | ".join(KEYS[1:]) + " | all | repaired |",
        "| --- | --- |" + " --- |" * (len(KEYS) + 1),
    ]
    for condition, group in sorted(grouped.items()):
        total = add_up(r["table"] for r in group)
        cells = [
            f"{total[k]['changed']:.0f}/{total[k]['probes']:.0f} = {_pct(total[k]['changed'], total[k]['probes'])}%"
            for k in (*KEYS[1:], "all")
        ]
        repaired = sum(r["repaired"] for r in group)
        lines.append(f"| {condition} | {len(group)} | " + " | ".join(cells) + f" | {repaired} |")
    return "\n".join(lines)


def report_writers(rows: list[dict]) -> str:
    """Per condition and comparison, over all keys: the changed answers that are an edited object of the
    probe's relation, and how many cases write that object on average, against a blind pick among the
    relation's edited objects."""
    grouped: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for row in rows:
        grouped[(row["condition"], row["transition"])].append(row)
    lines = [
        "| condition | comparison | answers that are an edited object | cases writing it, mean (blind pick) |",
        "| --- | --- | ---: | --- |",
    ]
    for (condition, transition), group in sorted(grouped.items()):
        total = add_up(r["table"] for r in group)["all"]
        count = total["same_type_edited_object"]
        if not count or "edited_object_writers" not in total:
            continue
        lines.append(
            f"| {condition} | {transition} | {count:.0f} | {total['edited_object_writers'] / count:.2f} "
            f"({total['edited_object_writers_by_chance'] / count:.2f}) |"
        )
    return "\n".join(lines)


def report_trained(rows: list[dict]) -> str:
    grouped: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for row in rows:
        grouped[(row["condition"], row["point"], row["set"])].append(row)
    lines = [
        "| condition | point | " + " | ".join(SETS) + " |",
        "| --- | --- |" + " --- |" * len(SETS),
    ]
    for condition in sorted({c for c, _, _ in grouped}):
        for point in ("stage1", "refined"):
            cells = []
            for name in SETS:
                group = grouped.get((condition, point, name), [])
                cell = _mean_sd([100 * r["kept"] / r["prompts"] for r in group])
                if group and "broken" in group[0]:
                    cell += f" (−{sum(r['broken'] for r in group)} / +{sum(r['repaired'] for r in group)})"
                cells.append(cell)
            lines.append(f"| {condition} | {point} | " + " | ".join(cells) + " |")
    sizes = {
        name: sorted({r["prompts"] for (_, _, s2), g in grouped.items() if s2 == name for r in g})
        for name in SETS
    }
    lines.append("")
    lines.append("Distinct prompts per set and seed: " + ", ".join(f"{s} {sizes[s]}" for s in SETS) + ".")
    return "\n".join(lines)


def report_checkpoints(rows: list[dict]) -> str:
    grouped: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for row in rows:
        grouped[(row["condition"], row["step"])].append(row)
    figures = ["reliability", "generalization", "locality", *(f"locality/{k}" for k in KEYS[1:])]
    lines = [
        "| condition | step | seeds | "
        + " | ".join(figures)
        + " | changed (to another case's new obj.) | trained prompts kept | reward (anchor, gen., loc.) |",
        "| --- | --- | --- |" + " --- |" * (len(figures) + 3),
    ]
    for (condition, step), group in sorted(grouped.items()):
        cells = [_mean_sd([100 * r[f] for r in group if r.get(f) is not None]) for f in figures]
        trained = _mean_sd(
            [
                100
                * (r["trained_sets"]["agt_rows"][0] + r["trained_sets"]["pool_only"][0])
                / (r["trained_sets"]["agt_rows"][1] + r["trained_sets"]["pool_only"][1])
                for r in group
            ]
        )
        rewards = [r["rewards"] for r in group if r["rewards"]]
        names = (
            "rewards/anchor_accuracy/mean",
            "rewards/generalization_accuracy/mean",
            "rewards/locality_preservation/mean",
        )
        reward = (
            ", ".join(f"{statistics.fmean(r[n] for r in rewards if n in r):.2f}" for n in names)
            if rewards and all(n in rewards[0] for n in names)
            else "-"
        )
        changed = sum(r["flips"]["all"]["changed"] for r in group)
        attracted = sum(r["flips"]["all"]["other_new_object"] for r in group)
        lines.append(
            f"| {condition} | {step} | {len(group)} | "
            + " | ".join(cells)
            + f" | {changed} ({attracted}) | {trained} | {reward} |"
        )
    return "\n".join(lines)


def report_training_signal(rows: list[dict]) -> str:
    """Per condition and checkpoint, over the steps since the previous one (mean over seeds): the share of
    groups with equal rewards and PGAA's mean absolute advantage, where the trainer logged them."""
    grouped: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for row in rows:
        if any(name in row["rewards"] for name in SIGNAL_FIGURES):
            grouped[(row["condition"], row["step"])].append(row)
    lines = [
        "| condition | steps up to | groups with equal rewards | mean abs. advantage (EditGRPOTrainer) |",
        "| --- | --- | --- | --- |",
    ]
    for (condition, step), group in sorted(grouped.items()):
        cells = []
        for name in SIGNAL_FIGURES:
            values = [r["rewards"][name] for r in group if name in r["rewards"]]
            cells.append(f"{statistics.fmean(values):.2f}" if values else "-")
        lines.append(f"| {condition} | {step} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def command_report(options) -> int:
    parts = []
    if options.flips:
        flips = read_jsonl(Path(options.flips))
        parts.append(
            "Locality probes stage 1 kept that refinement broke, per key (summed over seeds):\n\n"
            + report_breaks_by_key(flips)
        )
        parts.append(
            "Do objects that several edits write attract more? (summed over seeds):\n\n"
            + report_writers(flips)
        )
        parts.append("Where changed locality answers went (summed over seeds):\n\n" + report_flips(flips))
    if options.trained:
        parts.append(
            "Answers kept, trained vs never-trained prompts (% of prompts, mean ± sd over seeds):\n\n"
            + report_trained(read_jsonl(Path(options.trained)))
        )
    if options.checkpoints:
        checkpoints = read_jsonl(Path(options.checkpoints))
        parts.append("Per checkpoint (%, mean ± sd over seeds):\n\n" + report_checkpoints(checkpoints))
        parts.append(
            "Training signal per checkpoint window (mean over seeds):\n\n"
            + report_training_signal(checkpoints)
        )
    print("\n\n".join(parts))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    flips = commands.add_parser("flips", help="where changed locality answers go, per probe key")
    flips.add_argument("runs", nargs="+", help="finished run folders (.../seed<seed>/<condition>)")
    flips.add_argument("--out", required=True, help="JSONL: one row per run and transition")
    trained = commands.add_parser(
        "trained", help="trained vs never-trained locality prompts, stage 1 and refined"
    )
    trained.add_argument("runs", nargs="+")
    trained.add_argument("--out", required=True, help="JSONL: one row per run, point and prompt set")
    trained.add_argument("--max-new-tokens", type=int, default=8)
    checkpoints = commands.add_parser("checkpoints", help="evaluate every stage2/checkpoint-* of runs")
    checkpoints.add_argument("runs", nargs="+")
    checkpoints.add_argument("--out", required=True, help="JSONL: one row per run and checkpoint")
    checkpoints.add_argument(
        "--eval-root",
        default=None,
        help="where each checkpoint's evaluation is written (default: <run>/eval_checkpoints)",
    )
    checkpoints.add_argument("--max-new-tokens", type=int, default=8)
    checkpoints.add_argument(
        "--again",
        action="store_true",
        help="evaluate a checkpoint again even when its evaluation folder is already written",
    )
    report = commands.add_parser("report", help="Markdown tables from the files above")
    report.add_argument("--flips")
    report.add_argument("--trained")
    report.add_argument("--checkpoints")
    return parser


COMMANDS = {
    "flips": command_flips,
    "trained": command_trained,
    "checkpoints": command_checkpoints,
    "report": command_report,
}


def main(argv: list[str] | None = None) -> int:
    options = build_parser().parse_args(argv)
    return COMMANDS[options.command](options)


if __name__ == "__main__":
    raise SystemExit(main())
