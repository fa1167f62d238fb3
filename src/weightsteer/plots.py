"""PNG plots for the report: metric vs alpha, per-foundation shifts, calibration curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt  # noqa: E402

from .atomic import atomic_path  # noqa: E402
from .calibrate import load_calibration  # noqa: E402

FOUNDATIONS = ("Care", "Sanctity", "Authority", "Loyalty", "Fairness", "Liberty", "Social Norms")


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)


def alpha_curve(doses: list[dict]) -> list[tuple[float, dict]]:
    """(coefficient, shift) at every calibrated side of every dose, and 0 at alpha 0, by coefficient."""
    points = [(0.0, {"mean": 0.0, "lo": 0.0, "hi": 0.0})]
    points += [(side["coef"], side["shift"]) for s in doses for side in s["sides"].values()]
    return sorted((p for p in points if p[1]["mean"] is not None), key=lambda p: p[0])


def mean_curve(curves: list[list[tuple[float, dict]]]) -> list[tuple[float, float]]:
    """The seeds' curves averaged point by point (the same doses and sides in the same order)."""
    n = min(len(c) for c in curves)
    return [(sum(c[i][0] for c in curves) / len(curves), sum(c[i][1]["mean"] for c in curves) / len(curves))
            for i in range(n)]


def metric_vs_alpha(runs: list[dict[str, list[dict]]], bench: str, path: Path) -> None:
    """One panel per method with a coefficient: the shift vs base at every calibrated coefficient of
    every dose (and 0 at alpha 0). One seed: its line with the 95% CI band. Several seeds: each seed's
    line faintly, behind the mean over seeds."""
    first = runs[0]
    methods = [m for m, doses in first.items() if doses[0]["sides"]["pos"].get("coef") is not None]
    path.unlink(missing_ok=True)  # an old plot must not outlive the data it showed
    if not methods:
        return
    cols = min(4, len(methods))
    rows = -(-len(methods) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False, sharey=True)
    for ax, method in zip(axes.flat, methods, strict=False):
        curves = [alpha_curve(run[method]) for run in runs if method in run]
        if len(curves) == 1:
            xs = [p[0] for p in curves[0]]
            ax.plot(xs, [p[1]["mean"] for p in curves[0]], marker="o")
            ax.fill_between(xs, [p[1]["lo"] for p in curves[0]], [p[1]["hi"] for p in curves[0]], alpha=0.25)
        else:
            for curve in curves:
                ax.plot([p[0] for p in curve], [p[1]["mean"] for p in curve], color="C0", alpha=0.3, lw=0.8)
            ax.plot(*zip(*mean_curve(curves), strict=True), color="C0", marker="o", label=f"mean of {len(curves)} seeds")
            ax.legend(fontsize=6)
        ax.set_title(method, fontsize=9)
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_xlabel("alpha (calibrated doses)", fontsize=8)
    for ax in list(axes.flat)[len(methods):]:
        ax.set_visible(False)
    band = "95% CI" if len(runs) == 1 else "faint: each seed"
    fig.suptitle(f"{bench}: shift vs base against alpha ({band})", fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def dose_nearest_one(doses: list[dict]) -> dict:
    return min(doses, key=lambda s: abs((s["target_kl"] or 1.0) - 1.0))


def foundation_bars(by_method: dict[str, list[dict]], path: Path) -> None:
    """Per-foundation mean delta-logit at +C for every method (at its dose nearest kl 1)."""
    methods = list(by_method)
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(methods)), 3.5))
    width = 0.8 / len(FOUNDATIONS)
    for j, foundation in enumerate(FOUNDATIONS):
        values = [dose_nearest_one(by_method[m])["sides"]["pos"]["summary"]["shift"]["foundations"]
                  .get(foundation, {}).get("mean") or 0.0 for m in methods]
        ax.bar([i + j * width for i in range(len(methods))], values, width, label=foundation)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(methods))], methods, rotation=45, ha="right", fontsize=8)
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_ylabel("delta logit(wrongness) at +C")
    ax.legend(fontsize=7, ncol=4)
    _save(fig, path)


def calibration_curves(root: Path, methods: list[str], path: Path) -> None:
    """kl_p95 against |alpha| for every evaluation the searches made, both signs, log-log."""
    fig, ax = plt.subplots(figsize=(6, 4))
    targets = set()
    for method in methods:
        for cal_path in sorted((root / method).glob("kl-*/calibration.json")):
            for side, result in load_calibration(cal_path).items():
                points = sorted((abs(c), k) for c, k in result.history if c and k > 0)
                if points:
                    ax.plot(*zip(*points, strict=True), marker=".", ls="-" if side == "pos" else "--",
                            label=f"{method} {side} ({cal_path.parent.name})")
                targets.add(result.target)
    for target in targets:
        ax.axhline(target, color="black", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("|alpha|")
    ax.set_ylabel("kl_p95 (nats)")
    ax.legend(fontsize=6, ncol=2)
    _save(fig, path)


def plot_all(root: Path, by_seed: dict[int, dict], behaviour: str, report_dir: Path) -> list[str]:
    """Write every plot that has data; return their file names. `root` is the first seed's folder,
    by_seed {seed: benchmark -> method -> summaries}, the first seed first."""
    summaries = next(iter(by_seed.values()))
    written = []
    for bench in summaries:
        name = f"{behaviour}-{bench}-vs-alpha.png"
        metric_vs_alpha([found[bench] for found in by_seed.values() if bench in found], bench, report_dir / name)
        if (report_dir / name).exists():
            written.append(name)
    if "tinymfv" in summaries:
        foundation_bars(summaries["tinymfv"], report_dir / f"{behaviour}-foundations.png")
        written.append(f"{behaviour}-foundations.png")
    methods = list(dict.fromkeys(m for by_method in summaries.values() for m in by_method))
    calibration_curves(root, methods, report_dir / f"{behaviour}-calibration.png")
    written.append(f"{behaviour}-calibration.png")
    return written
