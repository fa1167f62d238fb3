"""Surgical informedness on hand-made rows whose counts, and so whose SI, are known exactly."""

import pytest

from weightsteer import WeightsteerError
from weightsteer.evals.si import si_parts, surgical_informedness


def rows(metrics, masses=None):
    masses = masses or [1.0] * len(metrics)
    return [{"id": i, "m": m, "mass": p} for i, (m, p) in enumerate(zip(metrics, masses, strict=True))]


# Ten rows: 0-5 correct at alpha=0, 6-9 failing.
BASE = [1, 1, 1, 1, 1, 1, -1, -1, -1, -1]
# +c fixes rows 6, 7, 8 and breaks row 0.        SI_fwd = 3/4 - 2 * 1/6 = 5/12
PLUS = [-1, 1, 1, 1, 1, 1, 1, 1, 1, -1]
# -c flips rows 0-3 and counter-flips row 9.     SI_rev = 4/6 - 2 * 1/4 = 1/6
MINUS = [-1, -1, -1, -1, 1, 1, -1, -1, -1, 1]


def test_known_counts_give_the_known_si():
    result = surgical_informedness(rows(MINUS, [0.8] * 10), rows(BASE), rows(PLUS, [0.9] * 10),
                                   metric="m", mass="mass", n_boot=200)
    assert {k: result[k] for k in ("n_correct", "n_failing", "fixed", "broken", "flipped", "counter")} == {
        "n_correct": 6, "n_failing": 4, "fixed": 3, "broken": 1, "flipped": 4, "counter": 1}
    assert result["si_fwd"] == pytest.approx(5 / 12)
    assert result["si_rev"] == pytest.approx(1 / 6)
    assert result["mass_scale"] == pytest.approx(0.64)  # min(0.9, 0.8) squared
    assert result["si"] == pytest.approx(100 * (5 / 12 + 1 / 6) / 2 * 0.64)  # 18.666...
    assert result["lo"] <= result["si"] <= result["hi"]
    again = surgical_informedness(rows(MINUS, [0.8] * 10), rows(BASE), rows(PLUS, [0.9] * 10),
                                  metric="m", mass="mass", n_boot=200)
    assert (again["lo"], again["hi"]) == (result["lo"], result["hi"])


def test_sign_minus_one_reads_lower_as_the_target():
    negate = [-x for x in BASE], [-x for x in PLUS], [-x for x in MINUS]
    result = surgical_informedness(rows(negate[2]), rows(negate[0]), rows(negate[1]), metric="m", mass="mass",
                                   sign=-1.0, n_boot=10)
    assert result["si"] == pytest.approx(100 * (5 / 12 + 1 / 6) / 2)


def test_perfect_and_worst_steering_hit_the_ends_of_the_range():
    base = [1, 1, -1, -1]
    assert si_parts(minus=[-1, -1, -1, -1], base=base, plus=[1, 1, 1, 1], mass_minus=[1], mass_plus=[1])["si"] == 100
    assert si_parts(minus=[1, 1, 1, 1], base=base, plus=[-1, -1, -1, -1], mass_minus=[1], mass_plus=[1])["si"] == -200


def test_a_metric_of_exactly_zero_is_failing():
    parts = si_parts(minus=[0.0], base=[0.0], plus=[0.5], mass_minus=[1], mass_plus=[1])
    assert (parts["n_failing"], parts["fixed"], parts["counter"]) == (1, 1, 0)


def test_an_empty_class_contributes_zero():
    # Every row already correct: nothing to fix or counter. -c flips them all, +c keeps them: (0 + 1) / 2.
    parts = si_parts(minus=[-1, -1], base=[1, 1], plus=[1, 1], mass_minus=[1, 1], mass_plus=[1, 1])
    assert (parts["n_failing"], parts["si_fwd"], parts["si_rev"], parts["si"]) == (0, 0.0, 1.0, 50.0)
    # Every row failing: +c fixes half of them, nothing to break or flip.
    parts = si_parts(minus=[-1, -1], base=[-1, -1], plus=[1, -1], mass_minus=[1, 1], mass_plus=[1, 1])
    assert (parts["n_correct"], parts["si_fwd"], parts["si_rev"], parts["si"]) == (0, 0.5, 0.0, 25.0)


def test_rows_that_do_not_line_up_are_an_error():
    shuffled = rows(PLUS)[::-1]
    with pytest.raises(WeightsteerError, match=r"\+c rows are not the base rows' items in the same order"):
        surgical_informedness(rows(MINUS), rows(BASE), shuffled, metric="m", mass="mass")
