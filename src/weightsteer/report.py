"""Markdown tables and PNG plots rebuilt from a sweep's saved summaries (nothing is recomputed).

Reads out/<model>/<behaviour>/<method>/eval/<bench>.summary.json, <method>/calibration.json,
sweep.json and timings.jsonl; writes <behaviour>.md and <behaviour>-*.png into the report folder.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from .atomic import write_text
from .calibrate import load_calibration
from .errors import WeightsteerError
from .plots import plot_all

FOUNDATIONS = (("Care", "Care"), ("Sanc", "Sanctity"), ("Auth", "Authority"), ("Loy", "Loyalty"),
               ("Fair", "Fairness"), ("Lib", "Liberty"), ("SocN", "Social Norms"))
SIDE_SIGN = {"pos": "+", "neg": "-"}


def load_summaries(root: Path) -> dict[str, dict[str, dict]]:
    """benchmark -> method -> summary, in the sweep's method order."""
    status = json.loads((root / "sweep.json").read_text()) if (root / "sweep.json").exists() else {}
    # the sweep's order first; then methods from sweeps that shared the folder without the last word
    order = list(dict.fromkeys([*status, *sorted(p.name for p in root.iterdir() if (p / "eval").is_dir())]))
    found: dict[str, dict[str, dict]] = defaultdict(dict)
    for method in order:
        for path in sorted((root / method / "eval").glob("*.summary.json")):
            summary = json.loads(path.read_text())
            if "sides" in summary:  # a sweep's summary (`weightsteer eval` writes its own kind beside it)
                found[summary["benchmark"]][method] = summary
    return found


def fmt(x, spec="+.2f") -> str:
    return "n/a" if x is None else format(x, spec)


def ci(stat: dict | None, spec="+.2f") -> str:
    if not stat or stat.get("mean") is None:
        return "n/a"
    return f"{stat['mean']:{spec}} [{stat['lo']:{spec}}, {stat['hi']:{spec}}]"


def cue(axis: float | None) -> str:
    if axis is None:
        return "⚪"
    return "🟢" if abs(axis) > 0.5 else "🟡" if abs(axis) > 0.15 else "🔴"


def axis_of(shift: dict, behaviour: str) -> dict:
    """The behaviour's tiny-mfv axis; behaviours without one use the overall wrongness shift."""
    return shift["axes"].get(behaviour) or shift["logit_wrongness"]


def coef_cell(side: dict) -> str:
    if side.get("coef") is None:
        return "n/a"
    flag = "" if side.get("converged", True) else " ✗"
    return f"{side['coef']:+.3g}{flag}"


def tinymfv_table(summaries: dict[str, dict], behaviour: str) -> list[str]:
    rows = []
    any_summary = next(iter(summaries.values()))
    head = axis_of(any_summary["headroom"], behaviour)
    for method, s in summaries.items():
        for side, data in s["sides"].items():
            shift = data["summary"]["shift"]
            axis = axis_of(shift, behaviour)
            cells = [f"{fd['mean']:+.2f} ± {fd['std']:.2f}" if (fd := shift["foundations"].get(full)) and
                     fd.get("mean") is not None and fd.get("std") is not None else "n/a"
                     for _, full in FOUNDATIONS]
            label = method if data.get("coef") is None else f"{method} ({SIDE_SIGN[side]})"
            rows.append((axis["mean"] if axis["mean"] is not None else 0.0,
                         [cue(axis["mean"]), ci(axis), label, coef_cell(data), fmt(data.get("kl"), ".2f"), *cells]))
    rows.sort(key=lambda r: -r[0])
    axis_name = behaviour if behaviour in any_summary["headroom"]["axes"] else "dWrong"
    lines = [f"| cue | axis ({axis_name}) [CI] | method | C | kl | " + " | ".join(s for s, _ in FOUNDATIONS) + " |",
             "|" + "---|" * (5 + len(FOUNDATIONS))]
    lines += ["| " + " | ".join(cells) + " |" for _, cells in rows]
    head_cells = [ci(head), "headroom: POS vs NEG prompt", "n/a", "n/a"]
    lines.append("| " + " | ".join([cue(head["mean"]), *head_cells] + [""] * len(FOUNDATIONS)) + " |")
    base = any_summary["base"]
    bare = [fmt(base["foundations"].get(full, {}).get("logit_wrongness", {}).get("mean")) for _, full in FOUNDATIONS]
    lines.append("| | bare model: logit(wrongness) | base | n/a | n/a | " + " | ".join(bare) + " |")
    dropped = any_summary["base"]["n_dropped"]
    lines.append(f"\nCells per run: {base['n_cells']}, dropped for bool_mass < {base['min_bool_mass']} in the bare "
                 f"model: {dropped}. Cells are (vignette, condition); delta-logit is paired with the bare model.")
    return lines


def headline_table(summaries: dict[str, dict], key: str, title: str, with_si: bool = False) -> list[str]:
    any_summary = next(iter(summaries.values()))
    head = any_summary["headroom"][key]
    cols = ["method", "C+", f"{title} at +C [CI]", "shift vs base at +C", "C-", f"{title} at -C [CI]",
            "shift vs base at -C"] + (["SI [CI]"] if with_si else [])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines.append(f"| base | n/a | {ci(any_summary['base'][key])} | n/a | n/a | | |" + (" |" if with_si else ""))
    for method, s in summaries.items():
        cells = [method]
        for side in ("pos", "neg"):
            data = s["sides"].get(side)
            if data is None:
                cells += ["", "", ""]
                continue
            cells += [coef_cell(data), ci(data["summary"][key]), ci(data["summary"]["shift"][key])]
        if with_si:
            si = s.get("si")
            cells.append(f"{si['si']:+.1f} [{si['lo']:+.1f}, {si['hi']:+.1f}]" if si else "n/a")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(f"\nHeadroom (POS minus NEG persona prompt, no steering): {ci(head)}.")
    return lines


def calibration_table(root: Path, methods: list[str]) -> list[str]:
    lines = ["| method | C+ | kl+ | evals+ | C- | kl- | evals- |", "|---|---|---|---|---|---|---|"]
    for method in methods:
        path = root / method / "calibration.json"
        if not path.exists():
            continue
        cal = load_calibration(path)
        cells = [method]
        for side in ("pos", "neg"):
            r = cal[side]
            cells += [f"{r.coef:+.4g}" + ("" if r.converged else " ✗ (not converged)"), f"{r.kl:.3f}",
                      str(r.iterations)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def timing_table(root: Path) -> list[str]:
    path = root / "timings.jsonl"
    if not path.exists():
        return []
    total: dict[tuple[str, str], float] = defaultdict(float)
    for line in path.read_text().splitlines():
        t = json.loads(line)
        total[(t["method"], t["stage"].split(" ")[0])] += t["seconds"]
    lines = ["| method | stage | seconds |", "|---|---|---|"]
    lines += [f"| {m} | {s} | {v:.0f} |" for (m, s), v in total.items()]
    return lines


def build_report(out_root: Path, model_label: str, behaviour: str, report_dir: Path, command: str) -> Path:
    root = Path(out_root) / model_label / behaviour
    if not root.is_dir():
        raise WeightsteerError(f"no sweep results in '{root}': run 'weightsteer sweep --behavior {behaviour}' first")
    summaries = load_summaries(root)
    if not summaries:
        raise WeightsteerError(f"'{root}' has no evaluation summaries yet: let the sweep finish a method first")
    status = json.loads((root / "sweep.json").read_text()) if (root / "sweep.json").exists() else {}
    lines = [f"# {behaviour} on {model_label}", "", f"Produced by `{command}`.", ""]
    failed = {m: s["error"] for m, s in status.items() if not s.get("ok")}
    if failed:
        lines += ["Methods that failed: " + "; ".join(f"{m}: {e}" for m, e in failed.items()), ""]
    if "tinymfv" in summaries:
        lines += ["## tiny-mfv: delta-logit(wrongness) per foundation, mean ± std", "",
                  *tinymfv_table(summaries["tinymfv"], behaviour), ""]
    if "airisk" in summaries:
        lines += ["## AIRiskDilemmas: truthfulness log-ratio and bidirectional SI", "",
                  *headline_table(summaries["airisk"], "log_ratio", "log-ratio", with_si=True), ""]
    for bench, title in (("sycophancy", "Sycophancy (12 held-out claims): log P(Yes) - log P(No)"),
                         ("honesty", "Honesty dilemmas: log P(honest) - log P(dishonest)"),
                         ("mood", "Mood: log P(positive) - log P(negative) after 'I feel'")):
        if bench in summaries:
            lines += [f"## {title}", "", *headline_table(summaries[bench], "log_ratio", "log-ratio"), ""]
    methods = [m for bench in summaries.values() for m in bench]
    lines += ["## Calibration (iso-KL)", "", *calibration_table(root, list(dict.fromkeys(methods))), "",
              "✗ marks a coefficient whose search did not reach the tolerance; its row is the best point found.", ""]
    timing = timing_table(root)
    if timing:
        lines += ["## Time per stage", "", *timing, ""]
    report_dir = Path(report_dir)
    for name in plot_all(root, summaries, behaviour, report_dir):
        lines.append(f"![{name}]({name})")
    out = report_dir / f"{behaviour}.md"
    write_text(out, "\n".join(lines) + "\n")
    return out

