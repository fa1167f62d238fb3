"""Markdown tables and PNG plots rebuilt from a sweep's saved summaries (nothing is recomputed).

Reads out/<model>/<behaviour>/<method>/[kl-<dose>/]eval/<bench>.summary.json, the calibration.json
beside each, sweep.json and timings.jsonl; writes <behaviour>.md and <behaviour>-*.png into the
report folder. Every number in a summary was written by the sweep with its benchmark's own `stat`,
so the report needs no benchmark code: a row is a (method, dose) and its two calibrated sides.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from .across_seeds import across_seed_table
from .atomic import read_json, write_text
from .calibrate import load_calibration
from .errors import WeightsteerError
from .jsonl import jsonl_rows
from .pipeline import seed_folders
from .plots import plot_all
from .tradeoff import tradeoff_section

FOUNDATIONS = (("Care", "Care"), ("Sanc", "Sanctity"), ("Auth", "Authority"), ("Loy", "Loyalty"),
               ("Fair", "Fairness"), ("Lib", "Liberty"), ("SocN", "Social Norms"))
SIDE_SIGN = {"pos": "+", "neg": "-"}
REBUILD = "run the same 'weightsteer sweep' again to rewrite it (finished stages are reused)"


def read_status(root: Path) -> dict:
    """sweep.json: {method: {"ok", ...}}, {} before the sweep wrote it."""
    path = root / "sweep.json"
    status = read_json(path, REBUILD) if path.exists() else {}
    if not isinstance(status, dict) or not all(isinstance(s, dict) for s in status.values()):
        raise WeightsteerError(f"'{path}' is damaged (not the sweep's status per method): {REBUILD}")
    return status


def load_summaries(root: Path) -> dict[str, dict[str, list[dict]]]:
    """benchmark -> method -> summaries (one per dose, lowest first), in the sweep's method order."""
    status = read_status(root)
    # the sweep's order first; then methods from sweeps that shared the folder without the last word
    on_disk = sorted(p.name for p in root.iterdir() if p.is_dir() and any(p.glob("**/eval/*.summary.json")))
    order = list(dict.fromkeys([*status, *on_disk]))
    found: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for method in order:
        for path in sorted((root / method).glob("**/eval/*.summary.json")):
            summary = read_json(path, REBUILD)
            if not isinstance(summary, dict):
                raise WeightsteerError(f"'{path}' is damaged (not a JSON object): {REBUILD}")
            if "sides" in summary:  # a sweep's summary (`weightsteer eval` writes its own kind beside it)
                found[summary["benchmark"]][method].append(summary)
    for by_method in found.values():
        for doses in by_method.values():
            doses.sort(key=lambda s: s["target_kl"] if s["target_kl"] is not None else -1.0)
    return {bench: dict(by_method) for bench, by_method in found.items()}


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


def coef_cell(side: dict) -> str:
    if side.get("coef") is None:
        return "n/a"
    flag = "" if side.get("converged", True) else " ✗"
    return f"{side['coef']:+.3g}{flag}"


def dose_cell(summary: dict) -> str:
    return "n/a" if summary["target_kl"] is None else f"{summary['target_kl']:g}"


def rows_of(by_method: dict[str, list[dict]]):
    """(method, summary) for every method and dose, in order."""
    for method, doses in by_method.items():
        for summary in doses:
            yield method, summary


DROP_FLAG = 0.05  # a run that lost more than this share of its cells is flagged: it is scored on its survivors


def si_cell(summary: dict) -> str:
    si = summary.get("si")
    if not si or si.get("si") is None:
        return "n/a"
    return f"{si['si']:+.1f} [{si['lo']:+.1f}, {si['hi']:+.1f}]"


def dropped_cell(summary: dict) -> str:
    """Cells a run dropped for low bool mass, as count and share, flagged above DROP_FLAG."""
    n, dropped = summary["n_cells"], summary["n_dropped"]
    flag = " ⚠" if n and dropped / n > DROP_FLAG else ""
    return f"{dropped} ({100 * dropped / n:.0f}%){flag}" if n else "n/a"


def tinymfv_table(by_method: dict[str, list[dict]]) -> list[str]:
    """Per-foundation shifts of every (method, dose, side); the headline column is the behaviour's
    axis when the probe defines one, else the overall wrongness shift. Each row shows the cells that
    run dropped and how many were paired with the bare model."""
    rows = []
    for method, s in rows_of(by_method):
        for side, data in s["sides"].items():
            shift = data["summary"]["shift"]
            cells = [f"{fd['mean']:+.2f} ± {fd['std']:.2f}" if (fd := shift["foundations"].get(full)) and
                     fd.get("mean") is not None and fd.get("std") is not None else "n/a"
                     for _, full in FOUNDATIONS]
            label = method if data.get("coef") is None else f"{method} ({SIDE_SIGN[side]})"
            mean = data["shift"]["mean"]
            rows.append((mean if mean is not None else 0.0,
                         [cue(mean), ci(data["shift"]), label, dose_cell(s), coef_cell(data),
                          fmt(data.get("kl"), ".2f"), si_cell(s), dropped_cell(data["summary"]),
                          str(shift["n_paired"]), *cells]))
    rows.sort(key=lambda r: -r[0])
    any_summary = next(rows_of(by_method))[1]
    axis_name = next(iter(any_summary["base"].get("axes") or {}), None) or "dWrong"
    n_cols = 9 + len(FOUNDATIONS)
    lines = [f"| cue | {axis_name} shift [CI] | method | dose | C | kl | SI [CI] | dropped | paired | "
             + " | ".join(s for s, _ in FOUNDATIONS) + " |", "|" + "---|" * n_cols]
    lines += ["| " + " | ".join(cells) + " |" for _, cells in rows]
    head = any_summary.get("headroom_stat")
    lines.append("| " + " | ".join([cue(head["mean"] if head else None), ci(head), "headroom: POS vs NEG prompt",
                                    "n/a", "n/a", "n/a", "", "", ""] + [""] * len(FOUNDATIONS)) + " |")
    base = any_summary["base"]
    bare = [fmt(base["foundations"].get(full, {}).get("logit_wrongness", {}).get("mean")) for _, full in FOUNDATIONS]
    lines.append(f"| | bare model: logit(wrongness) | base | n/a | n/a | n/a | | {dropped_cell(base)} | | "
                 + " | ".join(bare) + " |")
    lines.append(f"\nCells per run: {base['n_cells']} (vignette, condition); a cell is dropped when its bool_mass is "
                 f"below {base['min_bool_mass']} in either frame, and delta-logit is over the cells kept in both the "
                 f"run and the bare model (paired). ⚠: the run lost more than {100 * DROP_FLAG:.0f}% of its cells, so it "
                 "is scored on its survivors only (tiny-mfv has no mass penalty besides SI's). SI: bidirectional "
                 "surgical informedness on the behaviour's axis, from both calibrated sides (the same for both rows).")
    return lines


def headline_table(by_method: dict[str, list[dict]], with_si: bool = False) -> list[str]:
    """The benchmark's headline at each calibrated side of every (method, dose), and its shift vs base."""
    any_summary = next(rows_of(by_method))[1]
    cols = ["method", "dose", "C+", "at +C [CI]", "shift vs base at +C", "C-", "at -C [CI]",
            "shift vs base at -C"] + (["SI [CI]"] if with_si else [])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines.append(f"| base | n/a | n/a | {ci(any_summary['base_stat'])} | n/a | n/a | | |" + (" |" if with_si else ""))
    for method, s in rows_of(by_method):
        cells = [method, dose_cell(s)]
        for side in ("pos", "neg"):
            data = s["sides"].get(side)
            cells += ["", "", ""] if data is None else [coef_cell(data), ci(data["stat"]), ci(data["shift"])]
        if with_si:
            cells.append(si_cell(s))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(f"\nHeadroom (POS minus NEG persona prompt, no steering): {ci(any_summary.get('headroom_stat'))}.")
    return lines


def calibration_table(root: Path, methods: list[str]) -> list[str]:
    lines = ["| method | dose | C+ | kl+ | evals+ | C- | kl- | evals- |", "|---|---|---|---|---|---|---|---|"]
    for method in methods:
        for path in sorted((root / method).glob("kl-*/calibration.json"), key=lambda p: float(p.parent.name[3:])):
            cal = load_calibration(path)
            cells = [method, path.parent.name[3:]]
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
    for t, _ in jsonl_rows(path):
        total[(t["method"], t["stage"].split(" ")[0])] += t["seconds"]
    lines = ["| method | stage | seconds |", "|---|---|---|"]
    lines += [f"| {m} | {s} | {v:.0f} |" for (m, s), v in total.items()]
    return lines


def section_title(bench: str, by_method: dict[str, list[dict]]) -> str:
    probe = next(rows_of(by_method))[1].get("probe")
    if bench == "tinymfv":
        return "tiny-mfv: delta-logit(wrongness) per foundation, mean ± std" + (" (the behaviour's probe)" if probe else "")
    if bench == "airisk":
        with_si = any(s.get("si") for _, s in rows_of(by_method))
        return "AIRiskDilemmas: truthfulness log-ratio" + (" and bidirectional SI" if with_si else "")
    return f"{bench}: " + ("the behaviour's probe, " if probe else "") + "mean log-ratio (higher = more POS)"


def preset_section(root: Path) -> list[str]:
    """The settings-vs-seed table a sweep run with --preset wrote (preset.json), or nothing."""
    if not (root / "preset.json").exists():
        return []
    from .presets import markdown

    preset = json.loads((root / "preset.json").read_text())
    return [f"## Settings beside the seed's (`--preset {preset['preset']}`)", "", *markdown(preset["settings"]), ""]


def build_report(out_root: Path, model_label: str, behaviour: str, report_dir: Path, command: str) -> Path:
    """The report of a behaviour's sweep: the tables of its first seed, then, when the sweep ran
    several seeds, every headline number's mean and across-seed SD beside the within-run CI."""
    folders = seed_folders(Path(out_root) / model_label, behaviour)
    if not folders:
        raise WeightsteerError(f"no sweep results in '{Path(out_root) / model_label / behaviour}': run "
                               f"'weightsteer sweep --behavior {behaviour}' first")
    by_seed = {seed: found for seed, folder in folders.items() if (found := load_summaries(folder))}
    if not by_seed:
        raise WeightsteerError(f"'{next(iter(folders.values()))}' has no evaluation summaries yet: let the sweep "
                               "finish a method first")
    first = next(iter(by_seed))
    root, summaries = folders[first], by_seed[first]
    lines = [f"# {behaviour} on {model_label}", "", f"Produced by `{command}`.", ""]
    if len(by_seed) > 1:
        lines += [f"Seeds {', '.join(map(str, by_seed))}: the tables are seed {first}'s; the last section shows "
                  "how each number moves across seeds.", ""]
    for seed, folder in folders.items():
        status = read_status(folder)
        failed = {m: s["error"] for m, s in status.items() if not s.get("ok")}
        if failed:
            lines += [f"Methods that failed (seed {seed}): " + "; ".join(f"{m}: {e}" for m, e in failed.items()), ""]
    lines += preset_section(root)
    ordered = sorted(summaries, key=lambda b: not next(rows_of(summaries[b]))[1].get("probe"))
    for bench in ordered:
        by_method = summaries[bench]
        lines += [f"## {section_title(bench, by_method)}", ""]
        with_si = any(s.get("si") for _, s in rows_of(by_method))
        lines += tinymfv_table(by_method) if bench == "tinymfv" else headline_table(by_method, with_si)
        lines.append("")
    methods = list(dict.fromkeys(m for by_method in summaries.values() for m in by_method))
    lines += tradeoff_section(root, summaries, methods, behaviour, Path(report_dir))
    lines += ["## Calibration (iso-KL)", "", *calibration_table(root, methods), "",
              "✗ marks a coefficient whose search did not reach the tolerance; its row is the best point found.", ""]
    if len(by_seed) > 1:
        lines += [f"## Across seeds ({len(by_seed)} seeds)", "",
                  "Mean and standard deviation across seeds of each calibrated coefficient and headline shift vs "
                  "base, beside the within-run bootstrap CI (its half-width, averaged over seeds). Prompt "
                  "baselines run at the first seed only: nothing in them depends on a seed.", ""]
        for bench in ordered:
            lines += [f"### {bench}", "", *across_seed_table({s: found[bench] for s, found in by_seed.items()
                                                             if bench in found}), ""]
    timing = timing_table(root)
    if timing:
        lines += ["## Time per stage", "", *timing, ""]
    report_dir = Path(report_dir)
    for name in plot_all(root, by_seed, behaviour, report_dir):
        lines.append(f"![{name}]({name})")
    out = report_dir / f"{behaviour}.md"
    write_text(out, "\n".join(lines) + "\n")
    return out
