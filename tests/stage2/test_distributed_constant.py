"""The constant-bonus control under two processes: the split check recomputes the batch with the same
term, and every generalization row gets lambda times the whole gathered batch's mean cosine."""

import json
from pathlib import Path

import pytest
import torch

from edit_grpo_trl.stage2.pgaa import Role, pgaa_advantages

from ..torchrun import torchrun
from .conftest import make_agt_rows

pytestmark = pytest.mark.distributed

WORKER = Path(__file__).with_name("distributed_worker.py")


def test_constant_control_is_one_batch_wide_across_ranks(tmp_path):
    env = {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    result = torchrun([str(WORKER), str(tmp_path), "constant"], env, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for rank in ranks:  # the trainer's own one-process recomputation agrees with what the ranks used
        checks = rank[-1]["split_checks"]
        assert len(checks) == 2 and all(c["max_abs_diff_advantage"] <= 1e-5 for c in checks)
    rows = make_agt_rows(6)
    role_of = dict(zip(rows["prompt"], rows["role"], strict=True))
    for step0, step1 in zip(*ranks, strict=True):
        rewards = torch.tensor(step0["gathered_rewards"]).nansum(dim=1)
        rewards[torch.isnan(torch.tensor(step0["gathered_rewards"])).all(dim=1)] = float("nan")
        cases = step0["gathered_case_ids"]
        codes = {c: i for i, c in enumerate(dict.fromkeys(cases))}
        prompts = step0["local_prompts"] + step1["local_prompts"]
        roles = torch.tensor([int(Role.parse(role_of[p])) for p in prompts])
        expected = pgaa_advantages(rewards, torch.tensor([codes[c] for c in cases]), roles).advantages
        bonus = torch.tensor(step0["local_advantages"] + step1["local_advantages"]) - expected
        generalization = roles == Role.GENERALIZATION
        assert bonus[~generalization].abs().max() < 1e-6
        # one bonus for every generalization row of both ranks: the mean is over the gathered batch
        assert bonus[generalization].max() - bonus[generalization].min() < 1e-6
        assert bonus[generalization].abs().max() > 1e-4
