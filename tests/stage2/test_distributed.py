"""Two CPU processes (torchrun, gloo): case-grouped batches are consistent across ranks, each rank gets its
own slice, and the gathered PGAA advantages equal a single-process computation."""

import json
from pathlib import Path

import pytest
import torch

from edit_grpo_trl.stage2.pgaa import Role

from ..torchrun import torchrun
from .conftest import make_agt_rows

pytestmark = pytest.mark.distributed


def test_two_ranks_share_case_batches_and_split_them(tmp_path):
    worker = Path(__file__).with_name("distributed_worker.py")
    env = {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    result = torchrun([str(worker), str(tmp_path)], env, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 2  # two generation batches
    rows = make_agt_rows(6)
    role_of = dict(zip(rows["prompt"], rows["role"], strict=True))
    for step0, step1 in zip(*ranks, strict=True):
        assert step0["gathered_case_ids"] == step1["gathered_case_ids"]  # same case list on both ranks
        assert step0["local_case_ids"] + step1["local_case_ids"] == step0["gathered_case_ids"]
        assert step0["local_prompts"] != step1["local_prompts"]  # each rank its own slice
        assert set(step0["local_case_ids"]) & set(step1["local_case_ids"]), "no case straddles the ranks"
        cases = step0["gathered_case_ids"]
        for case in set(cases):  # whole cases: 4 prompts x G=2 in the batch
            assert cases.count(case) == 8
        # Rank 0's half of case A and rank 1's half must be normalized together: recompute on one process.
        from edit_grpo_trl.stage2.pgaa import pgaa_advantages

        rewards = torch.tensor(step0["gathered_rewards"]).nansum(dim=1)
        rewards[torch.isnan(torch.tensor(step0["gathered_rewards"])).all(dim=1)] = float("nan")
        codes = {c: i for i, c in enumerate(dict.fromkeys(cases))}
        prompts = step0["local_prompts"] + step1["local_prompts"]
        roles = torch.tensor([int(Role.parse(role_of[p])) for p in prompts])
        expected = pgaa_advantages(rewards, torch.tensor([codes[c] for c in cases]), roles).advantages
        got = torch.tensor(step0["local_advantages"] + step1["local_advantages"])
        baseline_part = roles != Role.GENERALIZATION  # generalization rows also carry the alignment term
        torch.testing.assert_close(got[baseline_part], expected[baseline_part])
        assert ((got - expected)[~baseline_part].abs() <= 0.2 + 1e-6).all()  # |lambda * cos| <= lambda
