"""The report's trade-off section: how far each method moves the behaviour, and what that costs.

Reads what the sweep wrote (nothing is recomputed): <method>/[kl-<dose>/]eval/cost.json (MMLU and
coherence, cost.py) beside the behaviour probe's summary of the same condition. One table row per
(method, dose, side): the probe's shift vs base, MMLU accuracy and its paired change vs base, the
change of the normalised log P(correct) (the finer capability signal on a near-chance model), the
coherence flag and kl_p95. Two PNGs draw one line per (method, sign) through its doses, starting at
the unsteered model (0, 0): behaviour shift against the MMLU drop, and against kl_p95.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from . import coherence  # noqa: E402
from .atomic import read_jsonl  # noqa: E402
from .calibrate import load_calibration  # noqa: E402
from .coherence import flag_cell  # noqa: E402
from .plots import _save  # noqa: E402

SIGN = {"pos": "+", "neg": "-"}


def load_costs(root: Path, methods: list[str]) -> dict[str, list[dict]]:
    """method -> cost summaries (one per dose, lowest first; a prompt baseline's single one first)."""
    found = {}
    for method in methods:
        costs = []
        for path in sorted((root / method).glob("**/eval/cost.json")):
            cost = json.loads(path.read_text())
            rejudge_coherence(cost, path.parent, root)
            calibration = path.parent.parent / "calibration.json"  # whether each side's search converged
            if calibration.exists():
                for side, result in load_calibration(calibration).items():
                    if side in cost["sides"]:
                        cost["sides"][side]["converged"] = result.converged
            costs.append(cost)
        if costs:
            found[method] = sorted(costs, key=lambda c: c["target_kl"] if c["target_kl"] is not None else -1.0)
    return found


def rejudge_coherence(cost: dict, eval_dir: Path, root: Path) -> None:
    """Replace each side's coherence summary by one of its kept rows under the current thresholds
    (coherence.judge), so flags written by an older version agree with the rest of the table."""
    base_path = root / "base" / "coherence.rows.jsonl"
    if not base_path.exists():
        return
    base = read_jsonl(base_path)
    cost["base"]["coherence"] = coherence.summarise(base)
    for side, data in cost["sides"].items():
        rows_path = eval_dir / f"coherence.{side}.rows.jsonl"
        if rows_path.exists():
            data["coherence"] = coherence.summarise(read_jsonl(rows_path), base_rows=base)


def probe_shift(probe_by_method: dict[str, list[dict]] | None, method: str, target_kl, side: str) -> dict | None:
    """The probe's shift vs base at one condition, or None where the probe has no such summary."""
    for summary in (probe_by_method or {}).get(method, []):
        if summary["target_kl"] == target_kl and side in summary["sides"]:
            return summary["sides"][side]["shift"]
    return None


def points(costs: dict[str, list[dict]], probe_by_method) -> list[dict]:
    """One point per (method, dose, side) with every number the table and the plots show."""
    out = []
    for method, doses in costs.items():
        for cost in doses:
            for side, data in cost["sides"].items():
                numbers = data["numbers"]
                out.append({"method": method, "kind": cost.get("kind"), "dose": cost["target_kl"], "side": side,
                            "coef": data.get("coef"), "kl": data.get("kl"), "converged": data.get("converged", True),
                            "shift": probe_shift(probe_by_method, method, cost["target_kl"], side),
                            "acc": numbers["mmlu_acc"], "acc_shift": numbers["mmlu_shift"],
                            "logp_shift": numbers["mmlu_logp_shift"], "coherence": data["coherence"]})
    return out


def _ci(stat: dict | None, spec: str) -> str:
    if not stat or stat.get("mean") is None:
        return "n/a"
    return f"{stat['mean']:{spec}} [{stat['lo']:{spec}}, {stat['hi']:{spec}}]"


def tradeoff_table(costs: dict[str, list[dict]], probe_by_method, probe_name: str | None) -> list[str]:
    if not costs:
        return []
    base = next(iter(costs.values()))[0]["base"]
    shift_head = f"{probe_name} shift [CI]" if probe_name else "behaviour shift"
    cols = ["method", "dose", "side", "C", "kl_p95", shift_head, "MMLU acc [CI]", "Δacc vs base [CI]",
            "ΔlogP(correct) [CI]", "coherence"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols),
             "| base | n/a | n/a | n/a | 0 | 0 | " + f"{_ci((base['mmlu'] or {}).get('correct'), '.3f')} | 0 | 0 | "
             f"{flag_cell(base['coherence'])} |"]
    for p in points(costs, probe_by_method):
        lines.append("| " + " | ".join([
            p["method"], "n/a" if p["dose"] is None else f"{p['dose']:g}", SIGN[p["side"]] if p["coef"] is not None
            else "n/a", "n/a" if p["coef"] is None else f"{p['coef']:+.3g}" + ("" if p["converged"] else " ✗"),
            "n/a" if p["kl"] is None else f"{p['kl']:.2f}", _ci(p["shift"], "+.2f"), _ci(p["acc"], ".3f"),
            _ci(p["acc_shift"], "+.3f"), _ci(p["logp_shift"], "+.3f"), flag_cell(p["coherence"])]) + " |")
    thresholds = base["coherence"]["thresholds"]
    n_mmlu = base["mmlu"]["correct"]["n"] if base["mmlu"] else 0
    lines += ["", f"MMLU: {n_mmlu} questions (seeded, stratified by subject), zero-shot, paired with the unsteered "
              f"model; chance is 0.25 accuracy and ΔlogP is the change of log P(correct letter) renormalised over "
              f"the four letters. Coherence: degenerate greedy continuations of {base['coherence']['n']} prompts "
              f"(loop at the end, repeated 3-gram rate >= {thresholds['max_repeat_rate']}, or mean log-likelihood "
              f"under the unsteered model < {thresholds['min_loglik']}); ⚠ when at least "
              f"{thresholds['flag_share']:.0%} are. ✗: the coefficient's search did not reach the KL tolerance."]
    return lines


def _lines(ax, pts: list[dict], x_of, x_err) -> None:
    """One line per (method, sign) through its doses from (0, 0), a colour per method (solid +C, dashed
    -C); prompt baselines as single squares."""
    methods = list(dict.fromkeys(p["method"] for p in pts))
    for (method, side) in dict.fromkeys((p["method"], p["side"]) for p in pts):
        mine = [p for p in pts if p["method"] == method and p["side"] == side and p["shift"] and x_of(p) is not None]
        if not mine:
            continue
        dosed = mine[0]["coef"] is not None
        mine.sort(key=lambda p: p["dose"] or 0.0)
        xs = ([0.0] if dosed else []) + [x_of(p) for p in mine]
        ys = ([0.0] if dosed else []) + [p["shift"]["mean"] for p in mine]
        yerr = [[0.0] * dosed + [p["shift"]["mean"] - p["shift"]["lo"] for p in mine],
                [0.0] * dosed + [p["shift"]["hi"] - p["shift"]["mean"] for p in mine]]
        xerr = x_err(mine, dosed)
        label = f"{method} ({SIGN[side]})" if dosed else method
        ax.errorbar(xs, ys, yerr=yerr, xerr=xerr, marker="o" if dosed else "s", ms=4, capsize=2, lw=1,
                    ls="-" if side == "pos" else "--", label=label, color=f"C{methods.index(method) % 10}")
        for p, x, y in zip(mine, xs[dosed:], ys[dosed:], strict=True):
            if p["coherence"]["flagged"]:
                ax.annotate("⚠", (x, y), fontsize=9, color="red")
    ax.axhline(0, color="grey", lw=0.5)
    ax.axvline(0, color="grey", lw=0.5)


def _stat_err(key: str, flip: bool):
    def err(mine, dosed):
        lo = [0.0] * dosed + [(p[key]["hi"] - p[key]["mean"]) if flip else (p[key]["mean"] - p[key]["lo"]) for p in mine]
        hi = [0.0] * dosed + [(p[key]["mean"] - p[key]["lo"]) if flip else (p[key]["hi"] - p[key]["mean"]) for p in mine]
        return [lo, hi]
    return err


def plot_tradeoff(costs: dict[str, list[dict]], probe_by_method, behaviour: str, probe_name: str,
                  report_dir: Path) -> list[str]:
    """<behaviour>-tradeoff-mmlu.png (shift vs accuracy drop and vs log P drop) and
    <behaviour>-tradeoff-kl.png (shift vs kl_p95); returns the names written."""
    pts = [p for p in points(costs, probe_by_method) if p["shift"] and p["shift"].get("mean") is not None]
    names = [f"{behaviour}-tradeoff-mmlu.png", f"{behaviour}-tradeoff-kl.png"]
    for name in names:
        (report_dir / name).unlink(missing_ok=True)  # an old plot must not outlive the data it showed
    if not pts:
        return []
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    _lines(axes[0], pts, lambda p: -p["acc_shift"]["mean"], _stat_err("acc_shift", flip=True))
    axes[0].set_xlabel("MMLU accuracy drop vs base (paired, 95% CI)")
    _lines(axes[1], pts, lambda p: -p["logp_shift"]["mean"], _stat_err("logp_shift", flip=True))
    axes[1].set_xlabel("MMLU drop of normalised log P(correct), nats")
    axes[0].set_ylabel(f"{probe_name} shift vs base (95% CI)")
    axes[1].legend(fontsize=7)
    fig.suptitle(f"{behaviour}: behaviour moved vs capability lost, one line per method through its doses "
                 "(⚠ = incoherent text)", fontsize=9)
    fig.tight_layout()
    _save(fig, report_dir / names[0])
    fig, ax = plt.subplots(figsize=(6, 4.2))
    _lines(ax, [p for p in pts if p["kl"] is not None], lambda p: p["kl"], lambda mine, dosed: None)
    ax.set_xlabel("kl_p95 (nats)")
    ax.set_ylabel(f"{probe_name} shift vs base (95% CI)")
    ax.legend(fontsize=7)
    ax.set_title(f"{behaviour}: behaviour moved vs kl_p95", fontsize=9)
    fig.tight_layout()
    _save(fig, report_dir / names[1])
    return names


def tradeoff_section(root: Path, summaries: dict, methods: list[str], behaviour: str, report_dir: Path) -> list[str]:
    """The markdown lines of the section, plots written beside; [] when the sweep measured no cost."""
    costs = load_costs(root, methods)
    if not costs:
        return []
    probe_name = next((bench for bench, by_method in summaries.items()
                       if any(s.get("probe") for doses in by_method.values() for s in doses)), None)
    probe_by_method = summaries.get(probe_name)
    lines = ["## Trade-off: behaviour shift against capability (MMLU) and coherence", "",
             *tradeoff_table(costs, probe_by_method, probe_name), ""]
    for name in plot_tradeoff(costs, probe_by_method, behaviour, probe_name or "behaviour", Path(report_dir)):
        lines.append(f"![{name}]({name})")
    return lines + [""]
