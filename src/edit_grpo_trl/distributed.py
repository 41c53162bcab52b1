"""Distributed coordination: the processes of one launch, and work that runs on the main process only.

Under a multi-process launch (``accelerate launch`` or ``torchrun``) every process runs the pipeline, but
only the ``train`` stage runs on all of them; :class:`Processes` runs the other stages on the main process
while the others wait, and :func:`whole_model_loading` lets such a stage load a model whole after a ZeRO-3
trainer ran in the same process.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch

logger = logging.getLogger(__name__)

# How long the other processes wait for one main-process stage (stage 1 of an 8B model with MEMIT's key
# statistics can take hours). Seconds; overridable through this environment variable.
STAGE_TIMEOUT_ENV = "EDIT_GRPO_STAGE_TIMEOUT"
DEFAULT_STAGE_TIMEOUT_S = 24 * 3600

T = TypeVar("T")


class MainProcessStageError(RuntimeError):
    """Raised on the other processes when a step that runs on the main process only failed there."""


@dataclass(frozen=True)
class _Failure:
    what: str
    message: str


class Processes:
    """The processes of one launch, and how work that runs on the main process only is shared out.

    One process (no ``WORLD_SIZE`` > 1 in the environment): everything runs here, nothing is set up.
    Several: accelerate's ``PartialState`` sets up the process group (with the recipe's ``ddp_timeout``, as
    the trainer would have), and the waits for the main process go through a separate gloo group with a
    long timeout. The training group's own timeout (30 minutes by default; NCCL's watchdog kills a rank
    stuck in a collective past it) is far shorter than stage 1 of a large model can take, and a CPU-side
    wait holds no GPU collective open.
    """

    def __init__(self, ddp_timeout_s: float = 1800.0, cpu: bool = False) -> None:
        self.rank, self.num_processes = 0, 1
        self.group = None
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1 and not torch.distributed.is_initialized():
            return
        from accelerate import PartialState

        # cpu as the trainer will ask for it: accelerate sets up a CPU (gloo) launch only when told to.
        state = PartialState(cpu=cpu, timeout=timedelta(seconds=ddp_timeout_s))
        self.rank, self.num_processes = state.process_index, state.num_processes
        if self.num_processes > 1:
            wait = float(os.environ.get(STAGE_TIMEOUT_ENV, DEFAULT_STAGE_TIMEOUT_S))
            self.group = torch.distributed.new_group(backend="gloo", timeout=timedelta(seconds=wait))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def on_main(self, what: str, body: Callable[[], T]) -> T:
        """Run ``body`` on the main process; every process returns its result, or raises if it failed.

        The other processes block until the main one is done, so this is also a barrier.
        """
        if self.group is None:
            return body()
        if not self.is_main:
            logger.debug("process %d: waiting for the main process: %s", self.rank, what)
            outcome = self._share(None)
            if isinstance(outcome, _Failure):
                raise MainProcessStageError(f"{outcome.what} failed on the main process: {outcome.message}")
            return outcome
        try:
            result = body()
        except BaseException as error:
            # Tell the waiting processes before raising, so that they stop too instead of timing out.
            self._share(_Failure(what, f"{type(error).__name__}: {error}"))
            raise
        return self._share(result)

    def _share(self, value: Any) -> Any:
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0, group=self.group)
        return box[0]


@contextlib.contextmanager
def whole_model_loading() -> Iterator[None]:
    """Load models whole inside the block, even after a ZeRO-3 trainer ran in this process.

    TrainingArguments registers DeepSpeed's config globally, and transformers then partitions every model
    it loads (``deepspeed.zero.Init``), a collective. A main-process-only stage that loads a model after
    training (the post-refinement evaluation) would wait forever for processes that are not loading.
    """
    from transformers.integrations import deepspeed as hf_deepspeed

    reference = getattr(hf_deepspeed, "_hf_deepspeed_config_weak_ref", None)
    config = reference() if reference is not None else None
    if config is None:
        yield
        return
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_deepspeed.set_hf_deepspeed_config(config)
