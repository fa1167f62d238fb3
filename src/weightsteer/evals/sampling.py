"""Seeded, stratified subsets: a quick look (`--limit N`) that sees every group, not the first rows.

Benchmark files are often sorted by group (tiny-mfv by foundation, MMLU by subject), so the first N
rows would all come from one group. The rule, the same everywhere:

1. Units are grouped by their group key; each group's members are shuffled with
   random.Random(f"{seed}:{group}") (string seeds hash deterministically across runs and machines).
2. Groups are visited in sorted order, round-robin: the first member of every group, then the
   second of every group that has one, and so on, until n units are taken.
3. The chosen units are returned in their original order.

So n >= the number of groups covers every group, groups differ in size by at most one unit unless
a group runs out, and the subset for a smaller n is contained in the subset for a larger one.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

T = TypeVar("T")


def stratified_sample(units: Sequence[T], group_of: Callable[[T], Hashable], n: int | None,
                      seed: int = 0) -> list[T]:
    """At most n units, round-robin over groups in seeded order (see the module docstring); all for None."""
    if n is None or n >= len(units):
        return list(units)
    members: dict[Hashable, list[int]] = {}
    for index, unit in enumerate(units):
        members.setdefault(group_of(unit), []).append(index)
    for group, indices in members.items():
        random.Random(f"{seed}:{group}").shuffle(indices)
    queues = [members[g] for g in sorted(members, key=str)]
    chosen: list[int] = []
    depth = 0
    while len(chosen) < n:
        for queue in queues:
            if depth < len(queue) and len(chosen) < n:
                chosen.append(queue[depth])
        depth += 1
    return [units[i] for i in sorted(chosen)]
