"""Write the corpus the SmolLM2-135M MEMIT/AlphaEdit presets compute their key statistics over.

No Hub dataset is reachable offline, so the model writes its own text: openings about 70 encyclopedic and
everyday topics, each continued by sampling (edit_grpo_trl.models.write_self_corpus).

    .venv/bin/edit-grpo fetch-model smollm2-135m
    PYTHONPATH=src .venv/bin/python scripts/smollm2_corpus.py --texts 512 \\
        --out src/edit_grpo_trl/editors/hparams/corpora/smollm2-135m-self.jsonl
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from edit_grpo_trl.models import resolve_hub_fallback, write_self_corpus


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", type=Path, default=Path("src/edit_grpo_trl/editors/hparams/corpora/smollm2-135m-self.jsonl")
    )
    options = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    summary = write_self_corpus(
        resolve_hub_fallback(options.model),
        options.out,
        n_texts=options.texts,
        max_new_tokens=options.max_new_tokens,
        batch_size=options.batch_size,
        seed=options.seed,
    )
    print(json.dumps({"out": str(options.out), **summary}))


if __name__ == "__main__":
    main()
