"""Does Edit-GRPO work? The benchmark, with its ablations and baselines, on the knowledge world or a real model.

Every condition starts from the same stage-1 checkpoint of the same edit cases, with the same AGT data and
the same step budget; only stage 2 differs:

    stage1        stage 1 only (the post-edit evaluation)
    grpo          + TRL's own GRPOTrainer: its per-prompt advantages, the same AGT rewards and data
    agt           + EditGRPOTrainer, anchor-excluded case baseline, alignment_coef 0
    pgaa-<coef>   + EditGRPOTrainer with the PGAA alignment term at alignment_coef <coef>
    sft           + TRL's SFTTrainer on the same prompts with their accepted answers (the non-RL baseline)

Each (editor, seed) draws its own edit cases from the world (a case set). The first trained condition of a
pair runs the whole pipeline (cases, pre-edit eval, stage 1, post-edit eval, AGT data); the others copy
those finished stages and run only training and the post-refinement evaluation. Stage 2 is seeded with the
pair's seed, or, with ``--train-seeds``, once per training seed from the same stage-1 checkpoint (case sets
x training seeds). Conditions run as separate ``edit-grpo pipeline`` processes, several at once (a
26M-parameter model leaves a GPU mostly idle), and every finished condition appends one JSON line to
``--results`` at once, so a call cut short keeps what it finished and a rerun skips it.

    python bench/knowledge_world.py run --size small --editors rome memit --seeds 0 1 2 \\
        --workers 8 --results $OUT/knowledge_world.jsonl
    python bench/knowledge_world.py report docs/results/knowledge_world/*.jsonl --out docs/results.md

On a real model, the recipes of its folder and a real data source (the recipe's ``data.keep_known`` keeps
the facts the model knows):

    python bench/knowledge_world.py run --recipes smollm2-135m --source 'facts:real:{seed}' \
        --editors rome memit --seeds 0 1 2 --results $OUT/smollm2.jsonl

Wall times of conditions that ran side by side share the machine: compare them only within one run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from edit_grpo_trl.stages import STAGES, RunLayout

REPO = Path(__file__).resolve().parent.parent
# The stages before training: every condition of a pair shares them (cases, evaluations, stage 1, AGT data).
PRE_TRAIN_STAGES = STAGES[: STAGES.index("train")]
DEFAULT_CONDITIONS = ("stage1", "grpo", "agt", "pgaa-0.2", "sft")


@dataclass(frozen=True)
class Condition:
    """A stage-2 method, optionally with recipe changes: ``pgaa-0.2+training.beta=0.04+lora.enabled=true``."""

    name: str

    @property
    def method(self) -> str:
        return self.name.split("+")[0]

    @property
    def changes(self) -> list[tuple[str, str]]:
        pairs = []
        for change in self.name.split("+")[1:]:
            key, equals, value = change.partition("=")
            if not equals or "." not in key:
                raise ValueError(
                    f"condition {self.name!r}: write changes as +section.key=value, got {change!r}"
                )
            pairs.append((key, value))
        return pairs

    @property
    def trains(self) -> bool:
        return self.method != "stage1"

    def overrides(self) -> list[str]:
        """Recipe overrides that make this condition's stage 2."""
        method = self.method
        if method == "grpo":
            base = ["--refinement", "grpo"]
        elif method == "sft":
            base = ["--refinement", "sft"]
        elif method == "agt":
            base = ["--training.alignment_coef", "0"]
        elif method.startswith("pgaa-"):
            base = ["--training.alignment_coef", method.removeprefix("pgaa-")]
        else:
            raise ValueError(f"unknown condition {self.name!r}: stage1, grpo, agt, sft or pgaa-<coef>")
        return base + [item for key, value in self.changes for item in (f"--{key}", value)]

    @property
    def alignment_coef(self) -> float | None:
        if self.method.startswith("pgaa-"):
            return float(self.method.removeprefix("pgaa-"))
        return 0.0 if self.method == "agt" else None


@dataclass(frozen=True)
class Pair:
    """One stage-1 checkpoint: an editor and a seed (which picks the cases, and seeds training unless
    ``--train-seeds`` names other training seeds)."""

    size: str
    editor: str
    seed: int

    @property
    def key(self) -> str:
        return f"{self.size}/{self.editor}/seed{self.seed}"


# ---------------------------------------------------------------------------------------------- running
def is_world(options) -> bool:
    return options.source is None


def recipe_folder(options) -> str:
    return options.recipes or f"world-{options.size}"


def run_name(pair: Pair, condition: Condition, train_seed: int) -> str:
    """A condition's run folder under its pair: the condition's name, tagged when training is seeded apart
    from the cases (so the folders of earlier benchmarks, one training seed per case set, keep their names)."""
    return condition.name if train_seed == pair.seed else f"{condition.name}@train{train_seed}"


def pipeline_command(
    pair: Pair, condition: Condition, run_dir: Path, options, train_seed: int | None = None
) -> list[str]:
    # The world's cases are drawn here, per seed; another source is drawn by the pipeline (with the
    # recipe's keep_known filter), its "{seed}" replaced by the pair's seed.
    if is_world(options):
        source = str(run_dir.parent / "cases.input.jsonl")
    else:
        source = options.source.replace("{seed}", str(pair.seed))
    command = [
        sys.executable,
        "-m",
        "edit_grpo_trl.cli",
        "--log-level",
        "WARNING",
        "pipeline",
        "--config",
        str(REPO / "recipes" / recipe_folder(options) / f"{pair.editor}.yaml"),
        "--output-dir",
        str(run_dir),
        "--data.source",
        source,
        "--data.num_cases",
        str(options.num_cases),
        "--data.seed",
        str(pair.seed),
        "--training.seed",
        str(pair.seed if train_seed is None else train_seed),
    ]
    if options.max_steps is not None:
        command += ["--training.max_steps", str(options.max_steps)]
    # The seeds of one condition share a W&B run group (used when the recipe or --extra names a project).
    command += ["--wandb.group", f"{recipe_folder(options)}/{pair.editor}/{condition.name}"]
    # A condition's own changes come last, so they win over --extra's (pgaa-0.2+training.locality_coef=0
    # beside --extra '--training.locality_coef 1').
    return command + shlex.split(options.extra) + condition.overrides()


def write_cases(pair: Pair, folder: Path, num_cases: int) -> Path:
    """This pair's edit cases: drawn from the world with the pair's seed."""
    from edit_grpo_trl.data.cases import save_cases
    from edit_grpo_trl.world import KnowledgeWorld

    path = folder / "cases.input.jsonl"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        world = KnowledgeWorld.generate(size=pair.size, seed=0)
        save_cases(world.edit_cases(num_cases=num_cases, seed=1000 + pair.seed), path)
    return path


def copy_finished_stages(source: Path, target: Path) -> None:
    """Give a condition the finished pre-training stages of its pair's first run (stage 1 is linked)."""
    given, taking = RunLayout(source), RunLayout(target)
    if taking.marker(PRE_TRAIN_STAGES[-1]).is_file():
        return
    taking.marker(PRE_TRAIN_STAGES[-1]).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(given.cases, taking.cases)
    for point in ("pre_edit", "post_edit"):
        shutil.copytree(given.evaluation(point), taking.evaluation(point), dirs_exist_ok=True)
    shutil.copytree(given.agt_dataset, taking.agt_dataset, dirs_exist_ok=True)
    if given.locality_pool.is_file():
        shutil.copy2(given.locality_pool, taking.locality_pool)
    stage1 = given.edited_model.parent.relative_to(given.root)  # the folder stage 1 writes
    if (source / stage1).exists() and not (target / stage1).exists():
        (target / stage1).symlink_to(Path("..") / source.name / stage1)
    for stage in PRE_TRAIN_STAGES:  # markers last: a stage counts as done only once its files are in place
        shutil.copy2(given.marker(stage), taking.marker(stage))


# Runs take the machine's GPUs in turn (each run is one process on one GPU).
_NEXT_RUN = itertools.count()


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def run_condition(pair: Pair, condition: Condition, train_seed: int, root: Path, options) -> dict:
    name = run_name(pair, condition, train_seed)
    run_dir = root / pair.key / name
    log = run_dir.parent / f"{name}.log"  # not with_suffix: condition names hold dots
    log.parent.mkdir(parents=True, exist_ok=True)
    environment = dict(
        os.environ, OMP_NUM_THREADS=str(options.threads_per_worker), TOKENIZERS_PARALLELISM="false"
    )
    if options.gpus > 1:
        environment["CUDA_VISIBLE_DEVICES"] = str(next(_NEXT_RUN) % options.gpus)
    started = time.perf_counter()
    with log.open("a") as stream:
        completed = subprocess.run(
            pipeline_command(pair, condition, run_dir, options, train_seed),
            stdout=stream,
            stderr=subprocess.STDOUT,
            env=environment,
            cwd=REPO,
        )
    wall = time.perf_counter() - started
    if completed.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-25:]
        raise RuntimeError(
            f"{pair.key} {condition.name} failed (exit {completed.returncode}):\n" + "\n".join(tail)
        )
    return collect(pair, condition, run_dir, wall, train_seed)


def collect(
    pair: Pair, condition: Condition, run_dir: Path, wall: float | None, train_seed: int | None = None
) -> dict:
    def read(path: Path) -> dict:
        return json.loads(path.read_text())

    layout = RunLayout(run_dir)
    post_edit = read(layout.evaluation("post_edit") / "metrics.json")
    record = {
        "size": pair.size,
        "editor": pair.editor,
        "seed": pair.seed,
        # stage 1 is not trained: it has no training seed
        "train_seed": (pair.seed if train_seed is None else train_seed) if condition.trains else None,
        "condition": condition.name,
        "alignment_coef": condition.alignment_coef,
        "pre_edit": read(layout.evaluation("pre_edit") / "metrics.json"),
        "post_edit": post_edit,
        "metrics": post_edit,
        "edit_seconds": read(layout.marker("edit"))["seconds"],
        "wall_seconds": wall,
    }
    final = "post_refinement" if condition.trains else "post_edit"
    record["per_case"] = per_case_scores(layout.evaluation(final))
    if condition.trains:
        train = read(layout.marker("train"))
        record["metrics"] = read(layout.evaluation("post_refinement") / "metrics.json")
        record["train_seconds"] = train["seconds"]
        record["global_step"] = train.get("global_step")
        runtime = train.get("train_seconds")
        if runtime and train.get("global_step"):
            record["seconds_per_step"] = runtime / train["global_step"]
        record["train_log"] = training_log_means(layout.training)
    return record


def per_case_scores(folder: Path) -> dict[str, dict[str, float]]:
    """Each case's numeric scores at one evaluation point (its folder), for paired tests over cases."""
    from edit_grpo_trl.evaluation.evaluate import read_per_case

    return {
        str(row["case_id"]): {
            key: value for key, value in row.items() if isinstance(value, int | float) and key != "case_id"
        }
        for row in read_per_case(folder) or []
    }


def train_seed_of(row: dict) -> int | None:
    """A row's training seed: None for stage 1 (nothing trained); rows written before training seeds were
    recorded were trained with their case seed."""
    if row["condition"] == "stage1":
        return None
    return row.get("train_seed", row["seed"])


def matched_runs(rows: list[dict], editor: str, first: str, second: str) -> list[tuple[dict, dict]]:
    """The (A, B) rows of one editor scored on the same cases: the same case set and training seed, or every
    training seed of one condition against the other's untrained row (stage 1)."""
    index: dict[tuple[int, str], dict[int | None, dict]] = {}
    for row in rows:
        if row["editor"] == editor and row["condition"] in (first, second):
            index.setdefault((row["seed"], row["condition"]), {})[train_seed_of(row)] = row
    matched = []
    for seed in sorted({seed for seed, _ in index}):
        runs_a, runs_b = index.get((seed, first), {}), index.get((seed, second), {})
        if None in runs_a:
            matched += [(runs_a[None], runs_b[t]) for t in sorted(t for t in runs_b if t is not None)]
        elif None in runs_b:
            matched += [(runs_a[t], runs_b[None]) for t in sorted(runs_a)]
        else:
            matched += [(runs_a[t], runs_b[t]) for t in sorted(runs_a.keys() & runs_b.keys())]
    return matched


def case_paired_table(rows: list[dict], metrics, compare: tuple[str, str]) -> str:
    """Per editor: condition A - condition B over (case set, case) units, both scored on the same cases.

    A case's difference is averaged over the training seeds both conditions ran, then tested with the sign-flip
    permutation test (``edit_grpo_trl.evaluation.paired``); the spread is the sample standard deviation over
    matched runs of each run's mean difference."""
    import statistics

    from edit_grpo_trl.evaluation.paired import paired_permutation_test

    first, second = compare
    lines = [
        "| editor | matched runs | cases | " + " | ".join(label for _, label in metrics) + " |",
        "| --- | --- | --- |" + " --- |" * len(metrics),
    ]
    for editor in sorted({r["editor"] for r in rows}):
        matched = [(a, b) for a, b in matched_runs(rows, editor, first, second) if b.get("per_case")]
        if not matched:
            continue
        cells, units = [], 0
        for metric, _ in metrics:
            per_case: dict[tuple[int, str], list[float]] = {}
            run_means = []
            for a, b in matched:
                a_cases, b_cases = a.get("per_case", {}), b["per_case"]
                differences = {
                    case: a_cases[case][metric] - b_cases[case][metric]
                    for case in a_cases
                    if case in b_cases and metric in a_cases[case] and metric in b_cases[case]
                }
                for case, difference in differences.items():
                    per_case.setdefault((a["seed"], case), []).append(difference)
                if differences:
                    run_means.append(statistics.fmean(differences.values()))
            if not per_case:
                cells.append("-")
                continue
            test = paired_permutation_test([statistics.fmean(values) for values in per_case.values()])
            units = max(units, test.n)
            scale = 1 if metric == "fluency" else 100
            spread = scale * statistics.stdev(run_means) if len(run_means) > 1 else 0.0
            cells.append(f"{scale * test.mean:+.1f} ± {spread:.1f} (p {test.p_value:.2g})")
        lines.append(f"| {editor} | {len(matched)} | {units} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


TRAIN_LOG_KEYS = ("reward", "reward_std", "frac_reward_zero_std", "kl", "entropy", "loss")


def training_log_means(folder: Path) -> dict[str, float]:
    """Means over the run of what the trainer logged (PGAA figures, zero-std share, KL), from its last
    checkpoint's ``trainer_state.json``: the evidence for why a condition moved or did not."""
    checkpoints = sorted(folder.glob("checkpoint-*"), key=lambda path: int(path.name.split("-")[-1]))
    if not checkpoints or not (checkpoints[-1] / "trainer_state.json").is_file():
        return {}
    history = json.loads((checkpoints[-1] / "trainer_state.json").read_text()).get("log_history", [])
    sums: dict[str, list[float]] = {}
    for entry in history:
        for key, value in entry.items():
            if (key.startswith("pgaa/") or key in TRAIN_LOG_KEYS) and isinstance(value, int | float):
                sums.setdefault(key, []).append(float(value))
    return {key: sum(values) / len(values) for key, values in sums.items()}


def device_name() -> str:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"


def row_key(row: dict) -> tuple:
    return (row["size"], row["editor"], row["seed"], train_seed_of(row), row["condition"])


def read_rows(path: Path) -> list[dict]:
    """The result rows of one JSONL file (gzipped when its name ends in .gz), in the order they were written."""
    import gzip

    text = gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def command_run(options) -> int:
    import logging

    from edit_grpo_trl.world import ensure_world_model

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    root = Path(options.root)
    results = Path(options.results)
    if results.suffix == ".gz":
        raise SystemExit(f"--results {results}: rows are appended as plain JSONL; gzip the file afterwards")
    results.parent.mkdir(parents=True, exist_ok=True)
    conditions = [Condition(name) for name in options.conditions]
    for condition in conditions:
        if condition.trains:
            condition.overrides()  # an unknown condition fails before any work
    trained = [c for c in conditions if c.trains]
    if not trained:
        raise SystemExit("at least one trained condition is needed (stage 1 runs as part of the first one)")
    started = time.perf_counter()
    device = device_name()
    if is_world(options):
        print(f"world {options.size}: {ensure_world_model(options.size)}", flush=True)
        print(f"world ready after {time.perf_counter() - started:.0f} s on {device}", flush=True)
    done = {row_key(row) for row in read_rows(results)} if results.is_file() else set()
    label = options.size if is_world(options) else recipe_folder(options)
    pairs = [Pair(label, editor, seed) for editor in options.editors for seed in options.seeds]
    if is_world(options):
        for pair in pairs:
            write_cases(pair, root / pair.key, options.num_cases)

    def record(row: dict) -> None:
        row["device"] = device
        with results.open("a") as stream:
            stream.write(json.dumps(row) + "\n")
        metrics = row["metrics"]
        trained_with = "" if row["train_seed"] in (None, row["seed"]) else f" train seed {row['train_seed']}"
        print(
            f"[{time.perf_counter() - started:6.0f}s] {row['editor']} seed {row['seed']}{trained_with} "
            f"{row['condition']}: "
            f"rel {metrics.get('gen_em_reliability', 0):.3f} gen {metrics.get('gen_em_generalization', 0):.3f} "
            f"loc {metrics.get('gen_em_locality', 0):.3f} (wall {row['wall_seconds'] or 0:.0f} s)",
            flush=True,
        )

    def todo(pair: Pair, condition: Condition, train_seed: int | None) -> bool:
        return (pair.size, pair.editor, pair.seed, train_seed, condition.name) not in done

    def train_seeds(pair: Pair) -> list[int]:
        return options.train_seeds or [pair.seed]

    first = trained[0]
    if options.gpus is None:
        options.gpus = gpu_count()
    with ThreadPoolExecutor(max_workers=options.workers) as pool:
        # Phase 1: per pair, the first trained condition (first training seed) runs the whole pipeline,
        # stage 1 included.
        firsts = {pool.submit(run_condition, p, first, train_seeds(p)[0], root, options): p for p in pairs}
        # Phase 2: as soon as a pair's stages are done, its other runs start from them.
        futures = {}
        for future in as_completed(firsts):
            pair = firsts[future]
            row = future.result()
            source = root / pair.key / run_name(pair, first, train_seeds(pair)[0])
            if todo(pair, first, train_seeds(pair)[0]):
                record(row)
            if "stage1" in options.conditions and todo(pair, Condition("stage1"), None):
                record(collect(pair, Condition("stage1"), source, None))
            for condition, train_seed in itertools.product(trained, train_seeds(pair)):
                if (condition, train_seed) == (first, train_seeds(pair)[0]):
                    continue
                if todo(pair, condition, train_seed):
                    copy_finished_stages(source, root / pair.key / run_name(pair, condition, train_seed))
                    futures[pool.submit(run_condition, pair, condition, train_seed, root, options)] = pair
        failures = []
        for future in as_completed(futures):
            try:
                record(future.result())
            except RuntimeError as error:
                failures.append(str(error))
                print(error, file=sys.stderr, flush=True)
    print(f"benchmark finished in {time.perf_counter() - started:.0f} s; results in {results}", flush=True)
    return 1 if failures else 0


# ---------------------------------------------------------------------------------------------- report
REPORT_METRICS = (
    ("gen_em_reliability", "reliability"),
    ("gen_em_generalization", "held-out gen."),
    ("gen_em_generalization_beyond_anchor", "held-out gen. not ending with the anchor"),
    ("gen_em_portability/Subject_Aliasing", "alias"),
    ("gen_em_portability/Reasoning", "two-hop"),
    ("gen_em_locality", "locality"),
    ("tf_reliability", "reliability"),
    ("tf_generalization", "held-out gen."),
    ("tf_locality", "locality"),
)
# A real model phrases its answers freely: its table scores generations by "contains" (every alias, whole
# words), locality teacher-forced (a whole continuation rarely repeats word for word), and fluency.
CONTAINS_METRICS = (
    ("gen_contains_reliability", "reliability"),
    ("gen_contains_generalization", "held-out gen."),
    ("gen_contains_portability/Subject_Aliasing", "alias"),
    ("gen_contains_portability/Reasoning", "two-hop"),
    ("tf_locality", "locality"),
    ("fluency", "fluency"),
)
METRIC_SETS = {"exact": REPORT_METRICS, "contains": CONTAINS_METRICS}


def scaled(row_metrics: dict, metric: str) -> float | None:
    """A metric in percent (fluency, already x100 n-gram entropy, as it is)."""
    value = row_metrics.get(metric)
    if value is None:
        return None
    return value if metric == "fluency" else 100 * value


def paired_differences(rows: list[dict], metrics=CONTAINS_METRICS, baseline: str = "stage1") -> str:
    """Per editor and condition: the mean and spread over runs of (condition - baseline) on the same cases."""
    import statistics

    lines = [
        f"| editor | condition - {baseline} | runs | " + " | ".join(label for _, label in metrics) + " |",
        "| --- | --- | --- |" + " --- |" * len(metrics),
    ]
    for editor in sorted({r["editor"] for r in rows}):
        conditions = sorted({r["condition"] for r in rows if r["editor"] == editor}, key=condition_order)
        for condition in conditions:
            if condition == baseline:
                continue
            matched = matched_runs(rows, editor, condition, baseline)
            cells = []
            for metric, _ in metrics:
                deltas = [
                    scaled(a["metrics"], metric) - scaled(b["metrics"], metric)
                    for a, b in matched
                    if scaled(a["metrics"], metric) is not None and scaled(b["metrics"], metric) is not None
                ]
                spread = statistics.stdev(deltas) if len(deltas) > 1 else 0.0
                cells.append(f"{statistics.fmean(deltas):+.1f} ± {spread:.1f}" if deltas else "-")
            lines.append(f"| {editor} | {condition} | {len(matched)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def load_rows(paths: list[str]) -> list[dict]:
    rows = {row_key(row): row for path in paths for row in read_rows(Path(path))}  # the latest run wins
    return list(rows.values())


def condition_order(name: str) -> tuple:
    method, _, changes = name.partition("+")
    fixed = {"stage1": 0, "sft": 1, "grpo": 2, "agt": 3}
    if method in fixed:
        return (changes, fixed[method], 0.0)
    return (changes, 4, float(method.removeprefix("pgaa-")))


def summarize(rows: list[dict], metrics=REPORT_METRICS) -> dict[tuple[str, str], dict]:
    """Per (editor, condition): mean and sample standard deviation over runs (case sets x training seeds) of
    every reported figure."""
    import statistics

    grouped: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        grouped.setdefault((row["editor"], row["condition"]), []).append(row)
    summary = {}
    for key, group in grouped.items():
        entry = {"runs": len(group), "case_sets": len({r["seed"] for r in group})}
        for metric, _ in metrics:
            values = [v for r in group if (v := scaled(r["metrics"], metric)) is not None]
            if values:
                spread = statistics.stdev(values) if len(values) > 1 else 0.0
                entry[metric] = (statistics.fmean(values), spread)
        for timing in ("train_seconds", "seconds_per_step"):
            values = [r[timing] for r in group if r.get(timing)]
            if values:
                entry[timing] = statistics.median(values)
        summary[key] = entry
    return summary


def markdown(summary: dict[tuple[str, str], dict], metrics=REPORT_METRICS) -> str:
    def label(metric: str, name: str) -> str:
        return f"{metric.split('_')[0]} {name}" if metric.startswith(("gen_", "tf_")) else name

    header = (
        "| editor | condition | runs | "
        + " | ".join(label(metric, name) for metric, name in metrics)
        + " | train s (median) | s/step |"
    )
    lines = [header, "|" + " --- |" * (header.count("|") - 1)]
    for editor in sorted({e for e, _ in summary}):
        for condition in sorted({c for e, c in summary if e == editor}, key=condition_order):
            entry = summary[(editor, condition)]
            cells = []
            for metric, _ in metrics:
                if metric in entry:
                    mean, spread = entry[metric]
                    cells.append(f"{mean:.1f} ± {spread:.1f}")
                else:
                    cells.append("-")
            train = f"{entry['train_seconds']:.0f}" if "train_seconds" in entry else "-"
            step = f"{entry['seconds_per_step']:.3f}" if "seconds_per_step" in entry else "-"
            lines.append(
                f"| {editor} | {condition} | {entry['runs']} | "
                + " | ".join(cells)
                + f" | {train} | {step} |"
            )
    return "\n".join(lines)


def plot(summary: dict[tuple[str, str], dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    editors = sorted({e for e, _ in summary})
    shown = [
        ("gen_em_reliability", "reliability"),
        ("gen_em_generalization", "held-out"),
        ("gen_em_locality", "locality"),
    ]
    figure, axes = plt.subplots(1, len(editors), figsize=(6.5 * len(editors), 4), squeeze=False)
    for axis, editor in zip(axes[0], editors, strict=True):
        conditions = sorted({c for e, c in summary if e == editor}, key=condition_order)
        width = 0.8 / len(shown)
        for offset, (metric, label) in enumerate(shown):
            means = [summary[(editor, c)].get(metric, (0.0, 0.0))[0] for c in conditions]
            spreads = [summary[(editor, c)].get(metric, (0.0, 0.0))[1] for c in conditions]
            positions = [i + offset * width for i in range(len(conditions))]
            axis.bar(positions, means, width, yerr=spreads, capsize=2, label=label)
        axis.set_xticks([i + width for i in range(len(conditions))])
        axis.set_xticklabels(
            [c.replace("training.", "") for c in conditions], rotation=30, ha="right", fontsize=8
        )
        axis.set_ylim(0, 105)
        axis.set_ylabel("% (greedy exact match)")
        axis.set_title(editor)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def command_report(options) -> int:
    rows = load_rows(options.results)
    if not rows:
        raise SystemExit("no result rows in " + ", ".join(options.results))
    metrics = METRIC_SETS[options.match]
    summary = summarize(rows, metrics)
    table = markdown(summary, metrics)
    if options.match == "contains":
        table += "\n\nPaired differences, per run against stage 1 (mean ± std over runs):\n\n"
        table += paired_differences(rows, metrics)
    for first, second in options.compare or []:
        table += (
            f"\n\n{first} - {second}, paired over cases (each case set's cases, a case's difference averaged over "
            "training seeds; mean difference ± std over matched runs, and the two-sided sign-flip permutation "
            "p-value over cases; metrics no case holds are left '-'):\n\n"
        )
        table += case_paired_table(rows, metrics, (first, second))
    print(table)
    if options.out:
        out = Path(options.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        figure = out.with_suffix(".png")
        plot(summary, figure)
        devices = sorted({row.get("device", "?") for row in rows})
        out.write_text(
            "<!-- generated by bench/knowledge_world.py report: regenerate it, do not edit it -->\n"
            f"Devices: {', '.join(devices)}. Rows: {len(rows)}.\n\n{table}\n\n![results]({figure.name})\n"
        )
        print(f"wrote {out} and {figure}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run conditions and append one JSON line per finished condition")
    run.add_argument("--size", default="small", help="knowledge-world size (tiny on a CPU, small on a GPU)")
    run.add_argument(
        "--recipes",
        default=None,
        help="recipe folder under recipes/ (default: world-<size>), e.g. smollm2-135m",
    )
    run.add_argument(
        "--source",
        default=None,
        help="data source instead of the world, '{seed}' replaced per seed: facts:real:{seed}, a CounterFact file",
    )
    run.add_argument("--editors", nargs="+", default=["rome", "memit"])
    run.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    run.add_argument(
        "--train-seeds",
        nargs="+",
        type=int,
        default=None,
        help="stage-2 training seeds, each run from every pair's stage-1 checkpoint (default: the pair's seed)",
    )
    run.add_argument("--conditions", nargs="+", default=list(DEFAULT_CONDITIONS))
    run.add_argument("--num-cases", type=int, default=100)
    run.add_argument("--max-steps", type=int, default=None, help="stage-2 steps (default: the recipe's)")
    run.add_argument("--workers", type=int, default=4, help="conditions running at once")
    run.add_argument("--threads-per-worker", type=int, default=2)
    run.add_argument(
        "--gpus",
        type=int,
        default=None,
        help="GPUs the runs take in turn, one per run (default: every GPU torch sees; 0 or 1: no choice made)",
    )
    run.add_argument("--root", default="runs/bench", help="run folders")
    run.add_argument("--results", required=True, help="JSONL file the finished conditions are appended to")
    run.add_argument(
        "--extra", default="", help="recipe overrides for every condition, one string: '--training.beta 0.01'"
    )
    report = commands.add_parser("report", help="table and plot from result files")
    report.add_argument("results", nargs="+")
    report.add_argument(
        "--out", default=None, help="Markdown file to write (a .png plot is written beside it)"
    )
    report.add_argument(
        "--match",
        choices=sorted(METRIC_SETS),
        default="exact",
        help="exact: greedy exact match (the world); contains: a real model's free answers, with fluency",
    )
    report.add_argument(
        "--compare",
        nargs=2,
        action="append",
        metavar=("A", "B"),
        help="condition A - condition B paired over cases (rows recorded with per-case scores); repeatable",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    options = build_parser().parse_args(argv)
    return command_run(options) if options.command == "run" else command_report(options)


if __name__ == "__main__":
    raise SystemExit(main())
