"""Measure a pretrained knowledge world: ``python -m edit_grpo_trl.world --size tiny --seed 0``.

Pretrains the world first when the cache misses, then measures the saved model again (greedy exact
match over every prompt of each split: the templates, each held-out key, every alias probe form, the
composed and the stated two-hop question) and prints the shares as JSON.
"""

from __future__ import annotations

import argparse
import json

import torch


def main(argv: list[str] | None = None) -> int:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from edit_grpo_trl.world import KnowledgeWorld, ensure_world_model, recall_report

    parser = argparse.ArgumentParser(prog="python -m edit_grpo_trl.world", description=__doc__)
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--device", default=None, help="for pretraining on a cache miss; measuring is on the CPU"
    )
    options = parser.parse_args(argv)
    path = ensure_world_model(options.size, seed=options.seed, device=options.device)
    torch.set_num_threads(1)  # a model this small is fastest single-threaded (model.py)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    shares = recall_report(model, tokenizer, KnowledgeWorld.load(path))
    print(json.dumps({"world": str(path), "recall": {k: round(v, 4) for k, v in shares.items()}}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
