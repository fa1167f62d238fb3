"""How much each headline number of a sweep moves from seed to seed.

A seed re-samples the contrastive data and re-trains the adapters (activation methods: refits on
the seed's questions), so the spread of a number across seeds is the part of its uncertainty that
the within-run bootstrap CI (which resamples the evaluation items of one run) cannot see. Both are
shown side by side: the across-seed mean and standard deviation (n - 1 in the denominator), and
the mean over seeds of the within-run 95% CI half-width.
"""

from __future__ import annotations

import statistics

SIDE_SIGN = {"pos": "+", "neg": "-"}


def spread(values: list[float]) -> tuple[float, float | None]:
    """(mean, sample standard deviation or None for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def by_point(runs: dict[int, dict[str, list[dict]]]) -> dict[tuple, dict[int, dict]]:
    """(method, dose, side) -> {seed: that side's numbers}, over the runs of one benchmark {seed: by_method}."""
    points: dict[tuple, dict[int, dict]] = {}
    for seed, by_method in runs.items():
        for method, doses in by_method.items():
            for summary in doses:
                for side, data in summary["sides"].items():
                    points.setdefault((method, summary["target_kl"], side), {})[seed] = data
    return points


def cell(values: list[float], spec: str, sd_spec: str) -> str:
    mean, sd = spread(values)
    return f"{mean:{spec}}" + (f" ± {sd:{sd_spec}}" if sd is not None else " (one seed)")


def across_seed_table(runs: dict[int, dict[str, list[dict]]]) -> list[str]:
    """One row per (method, dose, side): the calibrated coefficient and the shift vs base, as mean ±
    across-seed SD, beside the within-run CI half-width and each seed's own shift."""
    seeds = sorted(runs)
    lines = ["| method | dose | side | seeds | C mean ± SD | shift mean ± across-seed SD | within-run 95% CI ± "
             "(mean over seeds) | " + " | ".join(f"seed {s}" for s in seeds) + " |",
             "|" + "---|" * (7 + len(seeds))]
    for (method, dose, side), per_seed in by_point(runs).items():
        shifts = {s: d["shift"] for s, d in per_seed.items() if d["shift"].get("mean") is not None}
        coefs = [d["coef"] for d in per_seed.values() if d.get("coef") is not None]
        half = [(st["hi"] - st["lo"]) / 2 for st in shifts.values()]
        cells = [method, "n/a" if dose is None else f"{dose:g}", SIDE_SIGN[side] if coefs else "n/a",
                 str(len(per_seed)), cell(coefs, "+.3g", ".2g") if coefs else "n/a",
                 cell([st["mean"] for st in shifts.values()], "+.3f", ".3f") if shifts else "n/a",
                 f"±{statistics.fmean(half):.3f}" if half else "n/a"]
        cells += [f"{shifts[s]['mean']:+.3f}" if s in shifts else "" for s in seeds]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def showcase_spread(results: dict[int, dict]) -> list[str]:
    """`run --seeds`: each probe's headline at the lowest and highest alpha of each seed's table (the
    calibrated -C and +C with --target-kl), and the distance between them, as mean ± across-seed SD."""
    lines = [f"\n== across {len(results)} seeds (mean ± SD; seeds {', '.join(map(str, results))})"]
    first = next(iter(results.values()))
    for name in first["probes"]:
        ends = {"low": [], "high": [], "moved": []}
        for result in results.values():
            by_alpha = result["probes"][name]["by_alpha"]
            low, high = (by_alpha[str(a)]["stat"]["mean"] for a in (result["alphas"][0], result["alphas"][-1]))
            if low is not None and high is not None:
                ends["low"].append(low)
                ends["high"].append(high)
                ends["moved"].append(high - low)
        if not ends["moved"]:
            lines.append(f"{name}: n/a")
            continue
        lines.append(f"{name}: at the lowest alpha {cell(ends['low'], '+.2f', '.2f')}, at the highest "
                     f"{cell(ends['high'], '+.2f', '.2f')}; steering moved it {cell(ends['moved'], '+.2f', '.2f')}")
    return lines
