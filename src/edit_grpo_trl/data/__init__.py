"""Edit cases and the data they come from: KnowEdit and friends, training pools, and the AGT dataset
the trainer consumes. The knowledge world, a synthetic test bed, is :mod:`edit_grpo_trl.world`."""

from edit_grpo_trl.data.cases import CaseError, EditCase, Probe, ProbeKind, load_cases, save_cases

__all__ = ["CaseError", "EditCase", "Probe", "ProbeKind", "load_cases", "save_cases"]
