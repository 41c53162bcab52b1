import pytest

from edit_grpo_trl.stage2.sampler import CaseBatchError, CaseGroupedSampler, cases_per_generation_batch


def case_ids(num_cases, rows_per_case=3):
    return [f"c{case}" for case in range(num_cases) for _ in range(rows_per_case)]


def chunks(sequence, size):
    return [sequence[i : i + size] for i in range(0, len(sequence), size)]


def test_every_generation_batch_holds_whole_repeated_cases():
    ids = case_ids(7)
    sampler = CaseGroupedSampler(ids, num_generations=2, cases_per_batch=2, repeat_count=3, seed=1)
    indices = list(sampler)
    assert len(indices) == len(sampler) == 3 * 2 * 3 * 2 * 3  # batches x cases x rows x G x repeats
    batch_size = 2 * 3 * 2
    batches = chunks(indices, batch_size)
    for first, *repeats in chunks(batches, 3):
        assert all(r == first for r in repeats)  # one generation batch served repeat_count times
        cases = {ids[i] for i in first}
        assert len(cases) == 2
        for case in cases:  # every row of the case, each num_generations times, together
            rows = [i for i in first if ids[i] == case]
            assert sorted(rows) == sorted([r for r, c in enumerate(ids) if c == case] * 2)
        assert first[0] == first[1]  # a row's G copies are adjacent, as TRL's RepeatSampler
    distinct = [frozenset(ids[i] for i in b) for b in batches[::3]]
    assert len(set().union(*distinct)) == 6  # 7 cases, batches of 2: the odd one is dropped this pass


def test_shuffle_is_seeded_and_changes_between_passes():
    ids = case_ids(8)
    a = CaseGroupedSampler(ids, num_generations=1, cases_per_batch=2, seed=5)
    b = CaseGroupedSampler(ids, num_generations=1, cases_per_batch=2, seed=5)
    first_a, first_b = list(a), list(b)
    assert first_a == first_b  # same seed, same order on every process
    assert list(a) != first_a  # the next epoch is shuffled anew
    assert list(CaseGroupedSampler(ids, num_generations=1, cases_per_batch=2, seed=6)) != first_b


def test_no_shuffle_keeps_dataset_order():
    ids = case_ids(2, rows_per_case=2)
    assert list(CaseGroupedSampler(ids, num_generations=2, cases_per_batch=1, shuffle=False)) == [
        0,
        0,
        1,
        1,
        2,
        2,
        3,
        3,
    ]


def test_geometry_errors_say_what_to_change():
    with pytest.raises(CaseBatchError, match="multiple of 6"):
        cases_per_generation_batch(case_ids(4), generation_batch_size=8, num_generations=2)
    with pytest.raises(CaseBatchError, match="same number of rows"):
        cases_per_generation_batch(["a", "a", "b"], generation_batch_size=4, num_generations=2)
    with pytest.raises(CaseBatchError, match="only 2"):
        cases_per_generation_batch(case_ids(2), generation_batch_size=18, num_generations=2)
    assert cases_per_generation_batch(case_ids(4), generation_batch_size=12, num_generations=2) == 2
