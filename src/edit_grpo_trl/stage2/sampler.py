"""Case-grouped sampling: every generation batch holds whole edit cases.

PGAA normalizes each case's samples against each other, so all prompts of a case (anchor,
generalization, locality) must be generated in the same generation batch. The sampler works like TRL's
``RepeatSampler`` with cases in place of prompts:

* cases are shuffled once per pass with a generator seeded by the trainer's seed, so every process
  draws the same order (accelerate then gives each process its own slice of each batch);
* a case's rows stay together, in dataset order, and each row is repeated ``num_generations`` times;
* each generation batch (``cases_per_batch`` cases) is yielded ``repeat_count`` times in a row, because
  the trainer draws one batch per optimizer micro-step but generates only once per
  ``steps_per_generation * num_iterations`` steps;
* a last batch with too few cases is dropped, as TRL drops incomplete prompt batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


class CaseBatchError(ValueError):
    """The dataset's cases cannot be packed whole into the configured generation batches."""


def group_rows_by_case(case_ids: Sequence) -> dict:
    """Row indices of each case, cases in order of first appearance, rows in dataset order."""
    groups: dict = {}
    for row, case_id in enumerate(case_ids):
        groups.setdefault(case_id, []).append(row)
    return groups


def cases_per_generation_batch(case_ids: Sequence, generation_batch_size: int, num_generations: int) -> int:
    """How many whole cases one generation batch holds; raises when the sizes do not fit."""
    groups = group_rows_by_case(case_ids)
    if not groups:
        raise CaseBatchError("the training dataset is empty: it has no edit cases")
    sizes = {len(rows) for rows in groups.values()}
    if len(sizes) != 1:
        smallest, largest = min(sizes), max(sizes)
        raise CaseBatchError(
            f"edit cases have between {smallest} and {largest} prompts; every case must have the same number of "
            "rows (1 anchor + K generalization + L locality) so whole cases fill each generation batch. Build the "
            "dataset with a fixed num_generalization and num_locality."
        )
    rows_per_case = sizes.pop()
    prompts_per_batch = generation_batch_size // num_generations
    if prompts_per_batch % rows_per_case:
        raise CaseBatchError(
            f"a generation batch holds {prompts_per_batch} prompts (generation_batch_size={generation_batch_size} / "
            f"num_generations={num_generations}), which is not a whole number of cases of {rows_per_case} prompts. "
            f"Set generation_batch_size to a multiple of {rows_per_case * num_generations} "
            "(or change per_device_train_batch_size / steps_per_generation accordingly)."
        )
    cases_per_batch = prompts_per_batch // rows_per_case
    if cases_per_batch > len(groups):
        raise CaseBatchError(
            f"a generation batch needs {cases_per_batch} cases but the dataset has only {len(groups)}; "
            "lower generation_batch_size or add cases"
        )
    return cases_per_batch


class CaseGroupedSampler(Sampler[int]):
    """Yields dataset row indices so that each generation batch is a set of whole, repeated cases."""

    def __init__(
        self,
        case_ids: Sequence,
        num_generations: int,
        cases_per_batch: int,
        repeat_count: int = 1,
        shuffle: bool = True,
        seed: int = 0,
    ) -> None:
        if num_generations < 1 or cases_per_batch < 1 or repeat_count < 1:
            raise ValueError("num_generations, cases_per_batch and repeat_count must all be at least 1")
        self.cases = list(group_rows_by_case(case_ids).values())
        self.num_generations = num_generations
        self.cases_per_batch = cases_per_batch
        self.repeat_count = repeat_count
        self.shuffle = shuffle
        self.seed = seed
        self.generator = torch.Generator()
        self.generator.manual_seed(seed)

    @property
    def num_batches(self) -> int:
        return len(self.cases) // self.cases_per_batch

    def batches(self) -> list[list[int]]:
        """One pass: the case indices of each generation batch (advances the shuffling generator)."""
        order = torch.randperm(len(self.cases), generator=self.generator).tolist() if self.shuffle else None
        order = order if order is not None else list(range(len(self.cases)))
        return [
            order[start : start + self.cases_per_batch]
            for start in range(0, self.num_batches * self.cases_per_batch, self.cases_per_batch)
        ]

    def __iter__(self) -> Iterator[int]:
        for batch in self.batches():
            rows = [row for case in batch for row in self.cases[case] for _ in range(self.num_generations)]
            for _ in range(self.repeat_count):
                yield from rows

    def __len__(self) -> int:
        rows_per_batch = sum(len(case) for case in self.cases[: self.cases_per_batch]) * self.num_generations
        return self.num_batches * rows_per_batch * self.repeat_count
