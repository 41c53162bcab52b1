"""``python -m edit_grpo_trl.data.facts``: what a fact bank holds, and which of its facts a model knows.

    python -m edit_grpo_trl.data.facts --counts
    python -m edit_grpo_trl.data.facts --model HuggingFaceTB/SmolLM2-135M-Instruct --seed 0 \\
        --save known.jsonl --report recall.json

With ``--model`` it draws the cases (``--limit``, default all), asks the model every anchor and held-out
prompt, prints the recall report and optionally saves the kept cases (``load_edit_cases(path)`` reads them).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edit_grpo_trl.data.cases import save_cases
from edit_grpo_trl.data.facts.bank import available_banks, load_bank
from edit_grpo_trl.data.facts.cases import DEFAULT_BANK, editable_facts, fact_cases
from edit_grpo_trl.data.facts.recall import filter_known_cases


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m edit_grpo_trl.data.facts", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--bank", default=DEFAULT_BANK, choices=available_banks())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, help="draw only the first LIMIT cases (default: every case)")
    parser.add_argument("--counts", action="store_true", help="print facts and cases per relation, no model")
    parser.add_argument("--model", help="a causal LM (Hub name or folder) to check pre-edit recall with")
    parser.add_argument("--device", default="cuda" if _cuda() else "cpu")
    parser.add_argument(
        "--heldout-share", type=float, default=1.0, help="share of held-out prompts to get right"
    )
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--save", type=Path, help="write the kept cases here (JSON lines)")
    parser.add_argument("--report", type=Path, help="write the recall report here (JSON)")
    return parser


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def print_counts(bank_name: str, seed: int) -> None:
    bank = load_bank(bank_name)
    drawable = editable_facts(bank, seed)
    per_relation = {name: sum(r == name for r, _ in drawable) for name in bank.relations}
    width = max(len(name) for name in bank.relations)
    print(f"bank {bank.name!r}: {len(bank.relations)} relations, {sum(bank.count().values())} facts")
    print(f"{'relation':<{width}}  facts  cases  objects  two-hop")
    for name, relation in bank.relations.items():
        hop = relation.two_hop.via if relation.two_hop else "-"
        objects = len(relation.objects())
        print(f"{name:<{width}}  {len(relation.facts):>5}  {per_relation[name]:>5}  {objects:>7}  {hop}")
    print(f"at most {len(drawable)} cases in one draw")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.counts or not args.model:
        print_counts(args.bank, args.seed)
        return 0
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model).to(args.device).eval()
    cases = fact_cases(args.bank, seed=args.seed, limit=args.limit)
    kept, report = filter_known_cases(
        model,
        tokenizer,
        cases,
        heldout_share=args.heldout_share,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
    )
    print(report.format())
    if args.save:
        save_cases(kept, args.save)
        print(f"saved {len(kept)} cases to {args.save}")
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report.to_dict(), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
