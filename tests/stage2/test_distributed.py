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


WORKER = Path(__file__).with_name("distributed_worker.py")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """What each of the two ranks recorded in one run of the worker (4 steps, 2 generation batches)."""
    out = tmp_path_factory.mktemp("two_ranks")
    env = {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    result = torchrun([str(WORKER), str(out)], env, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


def test_two_ranks_share_case_batches_and_split_them(ranks):
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


def test_a_case_straddling_two_ranks_gets_one_process_advantages_and_cosines(ranks, tmp_path):
    """The run's own split check passes, and an independent one-process trainer, given the first
    generation batch of both ranks (before any optimizer step, so the weights are the initial ones),
    computes the same alignment cosines and advantages to 1e-5."""
    import sys

    from datasets import Dataset

    from edit_grpo_trl import EditGRPOTrainer
    from edit_grpo_trl.stage2.pgaa import add_alignment_term, pgaa_advantages

    from .conftest import make_model, make_tokenizer

    for rank in ranks:  # the trainer's own check ran on the first two batches, on both ranks, and passed
        checks = rank[-1]["split_checks"]
        assert [c["processes"] for c in checks] == [2, 2]
        assert all(c["straddling_cases"] >= 1 for c in checks)
        assert all(c["max_abs_diff_advantage"] <= 1e-5 and c["max_abs_diff_cosine"] <= 1e-5 for c in checks)

    sys.path.insert(0, str(WORKER.parent))
    from distributed_worker import training_config

    first = [rank[0] for rank in ranks]
    reference = EditGRPOTrainer(
        make_model(seed=7),
        args=training_config(str(tmp_path / "one"), per_device_train_batch_size=12),
        train_dataset=Dataset.from_dict(make_agt_rows(6)),
        processing_class=make_tokenizer(),
    )
    inputs = first[0]["local_rows"] + first[1]["local_rows"]
    prompt_ids, prompt_mask = reference._padded(first[0]["prompt_ids"] + first[1]["prompt_ids"], "left")
    completions = first[0]["completion_ids"] + first[1]["completion_ids"]
    completion_ids, completion_mask = reference._padded(completions, "right")
    output = {
        "prompt_ids": prompt_ids,
        "prompt_mask": prompt_mask,
        "completion_ids": completion_ids,
        "completion_mask": completion_mask,
    }
    cases = first[0]["gathered_case_ids"]
    codes = {case: code for code, case in enumerate(dict.fromkeys(cases))}
    expected_cosines = reference._local_alignment_cosines(inputs, output, codes)
    got_cosines = torch.tensor(first[0]["local_cosines"] + first[1]["local_cosines"])
    roles = torch.tensor([int(Role.parse(row["role"])) for row in inputs])
    assert (got_cosines[roles == Role.GENERALIZATION] != 0).all()  # the term was really computed
    torch.testing.assert_close(got_cosines, expected_cosines, atol=1e-5, rtol=0)

    rewards = torch.tensor(first[0]["gathered_rewards"]).nansum(dim=1)
    expected = add_alignment_term(
        pgaa_advantages(rewards, torch.tensor([codes[c] for c in cases]), roles).advantages,
        expected_cosines,
        roles,
        0.2,
    )
    got = torch.tensor(first[0]["local_advantages"] + first[1]["local_advantages"])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
