"""Doses: a direction calibrated to several KL budgets, each kept in its own folder beside it.

A dose is a target kl_p95. The coefficients of dose T for a direction at <dir>/delta.safetensors
(or a method's folder in a sweep) live in <dir>/kl-<T>/calibration.json, both signs, so `run`,
`sweep`, `calibrate`, `eval --calibrated` and `export` find the same files, and a sweep over doses
resumes dose by dose.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

from .calibrate import CalibrationResult, calibrate_both_signs, load_calibration, save_calibration
from .errors import WeightsteerError
from .matmuls import compute_key
from .stages import run_stage


def parse_doses(text: str, flag: str = "--target-kl") -> tuple[float, ...]:
    """"0.25,0.5,1" -> (0.25, 0.5, 1.0): positive finite numbers of nats, without repeats, sorted."""
    try:
        values = [float(part) for part in str(text).split(",") if part.strip()]
    except ValueError:
        raise WeightsteerError(f"{flag} must be a number of nats or a comma list such as 0.5,1,2; "
                               f"got {text!r}") from None
    bad = [v for v in values if not (math.isfinite(v) and v > 0)]
    if not values or bad:
        raise WeightsteerError(f"{flag} takes positive, finite numbers of nats; got {text!r}")
    return tuple(sorted(set(values)))


def dose_dir(folder: Path, target_kl: float) -> Path:
    return Path(folder) / f"kl-{target_kl:g}"


def calibrate_dose(model, tokenizer, method, source: str, prompts: list[str], folder: Path, target_kl: float,
                   tol: float = 0.05, log=print, start: float = 1.0) -> dict[str, CalibrationResult]:
    """Both signs' coefficients at one dose, as a resumable stage in folder/kl-<dose>/calibration.json.

    `source` is what defines the method (the direction file's hash...): a new direction recalibrates.
    `start` is where the search begins; any converged result is a valid one, so it is not in the key."""
    path = dose_dir(folder, target_kl) / "calibration.json"
    inputs = {"source": source, "target": target_kl, "tol": tol, "prompts": list(prompts), **compute_key(model)}
    run_stage("calibrate", path, inputs, lambda out: save_calibration(out, calibrate_both_signs(
        model, tokenizer, method, target_kl, tol, list(prompts), log, start=start)), log)
    return load_calibration(path)


def calibrate_doses(model, tokenizer, method, source: str, prompts: list[str], folder: Path, doses,
                    tol: float = 0.05, log=print) -> Iterator[tuple[float, dict[str, CalibrationResult]]]:
    """(dose, both signs' results) for each dose in turn, each calibrate_dose's resumable stage.

    After the first, each search starts where the previous dose's POS alpha predicts this one's
    (KL grows about as alpha^2, so alpha * sqrt(dose / previous dose)) rather than at 1: often one
    or two evaluations instead of a walk from 1."""
    start, previous = 1.0, None
    for dose in doses:
        if previous is not None and previous[1]["pos"].converged and previous[1]["pos"].coef != 0:
            start = abs(previous[1]["pos"].coef) * math.sqrt(dose / previous[0])
        results = calibrate_dose(model, tokenizer, method, source, prompts, folder, dose, tol, log, start=start)
        yield dose, results
        previous = (dose, results)


def calibrations_beside(delta_path) -> dict[float, dict[str, CalibrationResult]]:
    """Every dose calibrated for the direction at delta_path: {target_kl: {"pos": ..., "neg": ...}}."""
    found = {}
    for path in Path(delta_path).parent.glob("kl-*/calibration.json"):
        try:
            target = float(path.parent.name[3:])
        except ValueError:
            continue
        found[target] = load_calibration(path)
    return dict(sorted(found.items()))


def calibrated_coef(delta_path, side: str, target_kl: float | None = None) -> float:
    """The calibrated coefficient of one side, at the given dose or at the only one there is."""
    doses = calibrations_beside(delta_path)
    folder = Path(delta_path).parent
    if not doses:
        raise WeightsteerError(f"no calibration beside '{delta_path}' (looked for {folder}/kl-*/calibration.json): "
                               f"run 'weightsteer calibrate --delta {delta_path}' first")
    if target_kl is None:
        if len(doses) > 1:
            raise WeightsteerError(f"'{delta_path}' is calibrated at several doses ({', '.join(f'{t:g}' for t in doses)}"
                                   " nats): choose one with --target-kl")
        target_kl = next(iter(doses))
    if target_kl not in doses:
        raise WeightsteerError(f"'{delta_path}' has no calibration at kl {target_kl:g} (it has "
                               f"{', '.join(f'{t:g}' for t in doses)}): run 'weightsteer calibrate --delta "
                               f"{delta_path} --target-kl {target_kl:g}'")
    return doses[target_kl][side].coef
