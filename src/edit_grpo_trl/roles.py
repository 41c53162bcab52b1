"""The roles of an AGT row (docs/design.md section 4), defined once.

Datasets carry a role by name in their ``role`` column (``"anchor"``, ``"generalization"``,
``"locality"``); the trainer turns the names into :class:`Role` codes, which gather across processes as
tensors. The data builder, the rewards, the PGAA math and the trainer all take both from here.
"""

from __future__ import annotations

from enum import IntEnum


class Role(IntEnum):
    """Roles as integer codes, so that they can be gathered across processes as tensors."""

    ANCHOR = 0
    GENERALIZATION = 1
    LOCALITY = 2

    @property
    def label(self) -> str:
        """The role's name as the dataset's ``role`` column holds it."""
        return self.name.lower()

    @classmethod
    def parse(cls, name: str) -> Role:
        try:
            return cls[name.upper()]
        except KeyError:
            valid = ", ".join(role.label for role in cls)
            raise ValueError(
                f"unknown role {name!r}; the dataset's 'role' column must hold one of: {valid}"
            ) from None


ANCHOR = Role.ANCHOR.label
GENERALIZATION = Role.GENERALIZATION.label
LOCALITY = Role.LOCALITY.label
ROLES = tuple(role.label for role in Role)

__all__ = ["ANCHOR", "GENERALIZATION", "LOCALITY", "ROLES", "Role"]
