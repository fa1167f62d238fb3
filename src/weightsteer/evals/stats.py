"""Bootstrap confidence intervals and paired shifts, deterministic for a given seed.

Rows that share a source item are not independent (tiny-mfv asks every vignette in two conditions,
and one vignette id appears twice), so intervals resample *groups* (ids) with replacement and keep
every row of a drawn group: a cluster bootstrap. A statistic over several populations (the difference
of two foundations' means) resamples each population separately (a stratified bootstrap), so each
keeps its own size. Intervals are percentile intervals of `n_boot` replicates drawn from
`numpy.random.default_rng(seed)`.

Summaries are plain dicts, {"mean", "lo", "hi", "n"}, with None where a value does not exist (no rows),
so they serialise as JSON as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence

import numpy as np


def group_members(groups: Sequence[Hashable] | None, n_rows: int) -> list[np.ndarray]:
    """Row indices of each group, in order of first appearance; without groups every row is its own."""
    if groups is None:
        return [np.array([i]) for i in range(n_rows)]
    if len(groups) != n_rows:
        raise ValueError(f"{len(groups)} group labels for {n_rows} rows")
    members: dict[Hashable, list[int]] = {}
    for i, label in enumerate(groups):
        members.setdefault(label, []).append(i)
    return [np.array(rows) for rows in members.values()]


def stratified_bootstrap_ci(strata: Mapping[str, tuple[np.ndarray, Sequence[Hashable] | None]],
                            stat_fn: Callable[[dict[str, np.ndarray]], float], *, n_boot: int = 256,
                            seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of stat_fn over replicates that resample each stratum's groups independently.

    strata maps a name to (values, group labels or None); values may be 1-D or (rows, columns).
    stat_fn receives {name: the resampled values of that stratum}.
    """
    if n_boot < 1:
        raise ValueError("n_boot must be at least 1")
    rng = np.random.default_rng(seed)
    prepared = {}
    for name, (values, groups) in strata.items():
        values = np.asarray(values, dtype=np.float64)
        if len(values) == 0:
            raise ValueError(f"stratum {name!r} has no rows to resample")
        prepared[name] = (values, group_members(groups, len(values)))
    draws = np.empty(n_boot)
    for b in range(n_boot):
        sample = {}
        for name, (values, members) in prepared.items():
            picks = rng.integers(len(members), size=len(members))
            sample[name] = values[np.concatenate([members[i] for i in picks])]
        draws[b] = stat_fn(sample)
    tail = 50 * (1 - level)
    lo, hi = np.percentile(draws, [tail, 100 - tail])
    return float(lo), float(hi)


def bootstrap_ci(values, stat_fn: Callable[[np.ndarray], float] = np.mean, *,
                 groups: Sequence[Hashable] | None = None, n_boot: int = 256, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of stat_fn(values), resampling groups (or rows, without groups)."""
    return stratified_bootstrap_ci({"all": (values, groups)}, lambda s: stat_fn(s["all"]),
                                   n_boot=n_boot, seed=seed, level=level)


def mean_ci(values, groups: Sequence[Hashable] | None = None, *, n_boot: int = 256, seed: int = 0) -> dict:
    """{"mean", "lo", "hi", "n"} of the values, with a group-bootstrap 95% interval."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return {"mean": None, "lo": None, "hi": None, "n": 0}
    lo, hi = bootstrap_ci(values, groups=groups, n_boot=n_boot, seed=seed)
    return {"mean": float(values.mean()), "lo": lo, "hi": hi, "n": int(len(values))}


def paired_differences(steered: Mapping[Hashable, float],
                       base: Mapping[Hashable, float]) -> tuple[list[Hashable], np.ndarray]:
    """(keys present in both, steered[key] - base[key]), in the steered mapping's order."""
    keys = [k for k in steered if k in base]
    return keys, np.array([steered[k] - base[k] for k in keys], dtype=np.float64)


def summarise_by_id(rows: Sequence[dict], keys: Sequence[str], base_rows: Sequence[dict] | None = None, *,
                    n_boot: int = 256, seed: int = 0) -> dict:
    """mean_ci of each key over rows that have one `id` each; with base_rows also
    "shift": the paired (same id) steered - base difference of each key."""
    summary: dict = {"n": len(rows)}
    for key in keys:
        summary[key] = mean_ci([r[key] for r in rows], [r["id"] for r in rows], n_boot=n_boot, seed=seed)
    if base_rows is not None:
        summary["shift"] = {}
        for key in keys:
            ids, diffs = paired_differences({r["id"]: r[key] for r in rows}, {r["id"]: r[key] for r in base_rows})
            summary["shift"][key] = mean_ci(diffs, ids, n_boot=n_boot, seed=seed)
    return summary
