"""Which layer should ROME edit in SmolLM2-135M? One edit per fact per candidate layer, each on the unedited
model, read teacher-forced (EasyEdit's token accuracy):

* efficacy: the anchor prompt -> the new object;
* generalization: paraphrases of the anchor (not seen by the editor) -> the new object;
* locality: a neighbouring fact (same relation, other subject): share of its answer tokens whose argmax is
  the same as before the edit.

    .venv/bin/edit-grpo fetch-model smollm2-135m
    PYTHONPATH=src .venv/bin/python scripts/layer_sweep.py --facts 10 --layers 1 2 3 4 5 6 8 10 \\
        --out runs/layer_sweep/smollm2-135m.json

Facts the model does not know (its argmax misses a token of the true object) are left out before any edit.
Results are written after every layer, and a rerun with the same --out skips the layers already there.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from edit_grpo_trl.data.cases import EditCase, Probe, ProbeKind
from edit_grpo_trl.editors.arch import architecture_for, get_module
from edit_grpo_trl.editors.presets import resolve_hparams
from edit_grpo_trl.editors.stage1 import build_editor
from edit_grpo_trl.evaluation.metrics import locality_agreement, teacher_forced_predictions
from edit_grpo_trl.models import resolve_hub_fallback

logger = logging.getLogger("layer_sweep")

# (subject, anchor prompt, true object, new object of the same relation, paraphrases, (neighbour, answer))
FACTS: list[tuple[str, str, str, str, tuple[str, ...], tuple[str, str]]] = [
    (
        "France",
        "The capital of France is",
        "Paris",
        "Rome",
        ("France's capital city is", "The city that is the capital of France is"),
        ("The capital of Germany is", "Berlin"),
    ),
    (
        "Japan",
        "The capital of Japan is",
        "Tokyo",
        "Madrid",
        ("Japan's capital city is", "The city that is the capital of Japan is"),
        ("The capital of China is", "Beijing"),
    ),
    (
        "Italy",
        "The capital of Italy is",
        "Rome",
        "Berlin",
        ("Italy's capital city is", "The city that is the capital of Italy is"),
        ("The capital of Spain is", "Madrid"),
    ),
    (
        "Russia",
        "The capital of Russia is",
        "Moscow",
        "London",
        ("Russia's capital city is", "The city that is the capital of Russia is"),
        ("The capital of Japan is", "Tokyo"),
    ),
    (
        "The Eiffel Tower",
        "The Eiffel Tower is located in the city of",
        "Paris",
        "London",
        ("The Eiffel Tower stands in the city of", "You can visit the Eiffel Tower in the city of"),
        ("The Colosseum is located in the city of", "Rome"),
    ),
    (
        "Big Ben",
        "Big Ben is located in the city of",
        "London",
        "Paris",
        ("Big Ben stands in the city of", "You can visit Big Ben in the city of"),
        ("The Eiffel Tower is located in the city of", "Paris"),
    ),
    (
        "The Colosseum",
        "The Colosseum is located in the city of",
        "Rome",
        "Athens",
        ("The Colosseum stands in the city of", "You can visit the Colosseum in the city of"),
        ("Big Ben is located in the city of", "London"),
    ),
    (
        "Brazil",
        "The official language of Brazil is",
        "Portuguese",
        "French",
        ("In Brazil, the official language is", "The language spoken officially in Brazil is"),
        ("The official language of Mexico is", "Spanish"),
    ),
    (
        "Mexico",
        "The official language of Mexico is",
        "Spanish",
        "German",
        ("In Mexico, the official language is", "The language spoken officially in Mexico is"),
        ("The official language of Brazil is", "Portuguese"),
    ),
    (
        "Japan",
        "The currency of Japan is the",
        "yen",
        "euro",
        ("Japan's currency is called the", "In Japan, people pay with the"),
        ("The currency of the United States is the", "dollar"),
    ),
    (
        "Toyota",
        "Toyota is a car company from",
        "Japan",
        "Germany",
        ("Toyota is a car manufacturer based in", "The car maker Toyota comes from"),
        ("BMW is a car company from", "Germany"),
    ),
    (
        "Microsoft",
        "Microsoft was founded by",
        "Bill Gates",
        "Steve Jobs",
        ("The founder of Microsoft is", "The company Microsoft was started by"),
        ("Apple was founded by", "Steve Jobs"),
    ),
    (
        "Kenya",
        "Kenya is a country in",
        "Africa",
        "Europe",
        ("Kenya is located on the continent of", "The continent where Kenya lies is"),
        ("Germany is a country in", "Europe"),
    ),
    (
        "Mozart",
        "Mozart was a famous",
        "composer",
        "painter",
        ("Wolfgang Amadeus Mozart is best known as a", "Mozart worked all his life as a"),
        ("Picasso was a famous", "painter"),
    ),
    (
        "The Statue of Liberty",
        "The Statue of Liberty is located in the city of",
        "New York",
        "Chicago",
        ("The Statue of Liberty stands in the city of", "You can visit the Statue of Liberty in the city of"),
        ("The Golden Gate Bridge is located in the city of", "San Francisco"),
    ),
    (
        "Germany",
        "The capital of Germany is",
        "Berlin",
        "Vienna",
        ("Germany's capital city is", "The city that is the capital of Germany is"),
        ("The capital of France is", "Paris"),
    ),
    (
        "Egypt",
        "The capital of Egypt is",
        "Cairo",
        "Nairobi",
        ("Egypt's capital city is", "The city that is the capital of Egypt is"),
        ("The capital of Italy is", "Rome"),
    ),
    (
        "Germany",
        "The official language of Germany is",
        "German",
        "Italian",
        ("In Germany, the official language is", "The language spoken officially in Germany is"),
        ("The official language of France is", "French"),
    ),
    (
        "The Amazon",
        "The Amazon river flows through the country of",
        "Brazil",
        "Canada",
        ("The Amazon river runs mostly through", "Most of the Amazon river lies in"),
        ("The Nile river flows through the country of", "Egypt"),
    ),
    (
        "Shakespeare",
        "William Shakespeare was born in the country of",
        "England",
        "Spain",
        ("Shakespeare's home country was", "The playwright Shakespeare came from"),
        ("Leonardo da Vinci was born in the country of", "Italy"),
    ),
]


def fact_cases() -> list[EditCase]:
    cases = []
    for index, (subject, prompt, true, new, paraphrases, (neighbour, answer)) in enumerate(FACTS):
        probes = [Probe(p, (new,), ProbeKind.EVAL_GENERALIZATION) for p in paraphrases]
        probes.append(Probe(neighbour, (answer,), ProbeKind.LOCALITY))
        cases.append(
            EditCase(
                case_id=f"fact-{index:02d}",
                subject=subject,
                prompt=prompt,
                target_new=(new,),
                target_true=true,
                probes=tuple(probes),
                relation=prompt.replace(subject, "{}"),
                source="layer_sweep",
            )
        )
    return cases


def spread_over_relations(cases: list[EditCase], limit: int) -> list[EditCase]:
    """Up to ``limit`` cases taken round-robin over relations, so a short sweep is not all capitals."""
    by_relation: dict[str, list[EditCase]] = {}
    for case in cases:
        by_relation.setdefault(case.relation or "", []).append(case)
    chosen: list[EditCase] = []
    while len(chosen) < limit and any(by_relation.values()):
        for group in by_relation.values():
            if group and len(chosen) < limit:
                chosen.append(group.pop(0))
    return chosen


def token_accuracy(pairs: list[tuple[list[int], list[int]]]) -> list[float]:
    return [sum(int(a == b) for a, b in zip(t, p, strict=True)) / max(1, len(t)) for t, p in pairs]


def known_cases(model, tokenizer, cases: list[EditCase]) -> list[EditCase]:
    """The cases whose true object the unedited model predicts token by token (teacher-forced)."""
    scores = token_accuracy(
        teacher_forced_predictions(
            model, tokenizer, [c.prompt for c in cases], [c.target_true for c in cases]
        )
    )
    known = [case for case, score in zip(cases, scores, strict=True) if score == 1.0]
    unknown = [case.prompt for case, score in zip(cases, scores, strict=True) if score < 1.0]
    logger.info("%d/%d facts known; left out: %s", len(known), len(cases), unknown)
    return known


def measure(model, tokenizer, case: EditCase, baseline: list[int]) -> dict[str, float]:
    paraphrases = case.probes_of(ProbeKind.EVAL_GENERALIZATION)
    (neighbour,) = case.probes_of(ProbeKind.LOCALITY)
    prompts = [case.prompt, *(p.prompt for p in paraphrases), neighbour.prompt]
    targets = [case.new_object, *(p.answer for p in paraphrases), neighbour.answer]
    pairs = teacher_forced_predictions(model, tokenizer, prompts, targets)
    scores = token_accuracy(pairs[:-1])
    return {
        "efficacy": scores[0],
        "generalization": sum(scores[1:]) / len(scores[1:]),
        "locality": locality_agreement(baseline, pairs[-1][1]),
    }


def sweep_layer(model, tokenizer, cases: list[EditCase], layer: int, hparams: str, overrides: dict) -> dict:
    settings = resolve_hparams("rome", model.config, hparams, {**overrides, "layers": [layer]})
    editor = build_editor("rome", settings.hparams, model, tokenizer, show_progress=False)
    weight = get_module(model, architecture_for(model.config).down_proj(layer)).weight
    original = weight.detach().clone()
    neighbours = [case.probes_of(ProbeKind.LOCALITY)[0] for case in cases]
    predictions = teacher_forced_predictions(
        model, tokenizer, [n.prompt for n in neighbours], [n.answer for n in neighbours]
    )
    baselines = {case.case_id: predicted for case, (_, predicted) in zip(cases, predictions, strict=True)}
    rows, started = [], time.perf_counter()
    for case in cases:
        result = editor.edit(model, tokenizer, [case], show_progress=False)
        row = {"case_id": case.case_id, **measure(model, tokenizer, case, baselines[case.case_id])}
        row["update_norm"] = result.record.update_norms[str(layer)]
        rows.append(row)
        with torch.no_grad():
            weight.copy_(original)  # every edit starts from the unedited model
        logger.info("layer %d %s: %s", layer, case.case_id, row)
    seconds = time.perf_counter() - started
    means = {key: sum(r[key] for r in rows) / len(rows) for key in ("efficacy", "generalization", "locality")}
    return {"layer": layer, **means, "seconds_per_edit": seconds / len(rows), "cases": rows}


def markdown(results: list[dict], facts: int) -> str:
    lines = [
        f"| layer | efficacy | paraphrase | neighbourhood | s/edit |  ({facts} facts, teacher-forced)",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in sorted(results, key=lambda r: r["layer"]):
        lines.append(
            f"| {r['layer']} | {r['efficacy']:.2f} | {r['generalization']:.2f} | {r['locality']:.2f} "
            f"| {r['seconds_per_edit']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m", help="a folder, a Hub id or a packaged model name")
    parser.add_argument(
        "--hparams", default="smollm2-135m", help="the ROME preset (or YAML) the sweep varies"
    )
    parser.add_argument("--layers", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6, 8, 10])
    parser.add_argument("--facts", type=int, default=10, help="at most this many known facts")
    parser.add_argument(
        "--context-templates",
        type=int,
        nargs=2,
        metavar=("LENGTH", "COUNT"),
        default=None,
        help="one [length, count] in place of the preset's context templates: the value optimization's "
        "batch is one row per template, so 5 templates cost a quarter of EasyEdit's 21 on a CPU",
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("runs/layer_sweep/smollm2-135m.json"))
    options = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if options.facts < 1:
        parser.error("--facts must be at least 1")
    if options.threads:
        torch.set_num_threads(options.threads)

    overrides = (
        {"context_template_length_params": [options.context_templates]} if options.context_templates else {}
    )
    path = resolve_hub_fallback(options.model)
    from transformers import AutoConfig

    for layer in options.layers:  # every layer checked against the config before the model loads
        resolve_hparams(
            "rome", AutoConfig.from_pretrained(path), options.hparams, {**overrides, "layers": [layer]}
        )
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    cases = spread_over_relations(known_cases(model, tokenizer, fact_cases()), options.facts)
    if not cases:
        raise SystemExit("the model knows none of the sweep's facts")

    done: list[dict] = []
    if options.out.is_file():
        previous = json.loads(options.out.read_text())
        if previous.get("case_ids") == [c.case_id for c in cases] and previous.get("overrides") == overrides:
            done = previous["results"]
    options.out.parent.mkdir(parents=True, exist_ok=True)
    for layer in options.layers:
        if any(r["layer"] == layer for r in done):
            continue
        done.append(sweep_layer(model, tokenizer, cases, layer, options.hparams, overrides))
        record = {
            "model": path,
            "hparams": options.hparams,
            "overrides": overrides,
            "case_ids": [c.case_id for c in cases],
            "results": done,
        }
        options.out.write_text(json.dumps(record, indent=1))
        print(markdown(done, len(cases)), flush=True)


if __name__ == "__main__":
    main()
