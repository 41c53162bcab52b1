"""Generated person names: capitalized syllable combinations that never collide with each other or with
any other word of the world (so a name is always one token and always means one person)."""

from __future__ import annotations

import random
from collections.abc import Iterable

SYLLABLES = (
    "ka", "lo", "mi", "ra", "su", "te", "vo", "zan", "bel", "dor", "fen", "gil", "har", "jul", "kor",
    "lin", "mar", "nor", "pel", "quo", "ros", "sar", "tor", "ul", "ven", "wil", "yor", "zel", "bri", "cas",
    "dri", "eth", "fa", "go", "hu", "ix", "jo", "ke", "lu", "my",
)  # fmt: skip


def generate_names(count: int, rng: random.Random, forbidden: Iterable[str]) -> list[str]:
    """``count`` distinct names of two or three syllables, none equal (case-insensitively) to ``forbidden``."""
    capacity = len(SYLLABLES) ** 2 + len(SYLLABLES) ** 3
    taken = {word.lower() for word in forbidden}
    if count > capacity // 2:
        raise ValueError(
            f"cannot generate {count} names from {len(SYLLABLES)} syllables (at most {capacity // 2})"
        )
    names: list[str] = []
    while len(names) < count:
        name = "".join(rng.choice(SYLLABLES) for _ in range(rng.choice((2, 3)))).capitalize()
        if name.lower() not in taken:
            taken.add(name.lower())
            names.append(name)
    return names
