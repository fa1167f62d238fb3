"""Bootstrap intervals: deterministic, resampling whole groups, strata kept apart; paired shifts by id."""

import numpy as np
import pytest

from weightsteer.evals.stats import (
    bootstrap_ci,
    group_members,
    mean_ci,
    paired_differences,
    stratified_bootstrap_ci,
    summarise_by_id,
)


def test_same_seed_same_interval_and_another_seed_differs():
    values = np.random.default_rng(1).normal(size=50)
    assert bootstrap_ci(values, seed=3) == bootstrap_ci(values, seed=3)
    assert bootstrap_ci(values, seed=3) != bootstrap_ci(values, seed=4)


def test_group_members_in_order_of_first_appearance():
    members = group_members(["b", "a", "b", "c"], 4)
    assert [m.tolist() for m in members] == [[0, 2], [1], [3]]
    assert [m.tolist() for m in group_members(None, 3)] == [[0], [1], [2]]


def test_groups_are_resampled_whole():
    # Group a is three zeros, group b one 10. A group bootstrap draws {a,a}, {a,b} or {b,b}: means 0, 2.5
    # or 10, each extreme with probability 1/4, so the 95% interval is exactly (0, 10). Resampling rows
    # draws four 10s with probability 1/256 and three or more with about 5%, so its upper end is 7.5.
    values = [0.0, 0.0, 0.0, 10.0]
    assert bootstrap_ci(values, groups=["a", "a", "a", "b"], n_boot=2000) == (0.0, 10.0)
    assert bootstrap_ci(values, n_boot=2000)[1] == 7.5


def test_interval_matches_normal_theory_for_a_mean():
    values = np.random.default_rng(0).normal(loc=2.0, scale=1.0, size=400)
    lo, hi = bootstrap_ci(values, n_boot=2000)
    half_width = 1.96 * values.std(ddof=1) / np.sqrt(len(values))
    assert lo == pytest.approx(values.mean() - half_width, abs=0.03)
    assert hi == pytest.approx(values.mean() + half_width, abs=0.03)


def test_strata_are_resampled_separately_and_keep_their_sizes():
    sizes = []

    def difference(sample):
        sizes.append((len(sample["x"]), len(sample["y"])))
        return sample["x"].mean() - sample["y"].mean()

    strata = {"x": (np.ones(5), None), "y": (np.zeros(3), list("abc"))}
    assert stratified_bootstrap_ci(strata, difference, n_boot=20) == (1.0, 1.0)
    assert set(sizes) == {(5, 3)}


def test_two_column_values_are_resampled_as_rows():
    table = np.array([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    lo, hi = bootstrap_ci(table, lambda t: float(np.abs(t[:, 0] - t[:, 1]).max()), n_boot=50)
    assert (lo, hi) == (0.0, 0.0)


def test_mean_ci_fields_and_empty_input():
    summary = mean_ci([1.0, 2.0, 3.0], n_boot=100)
    assert summary["mean"] == 2.0 and summary["n"] == 3
    assert 1.0 <= summary["lo"] <= 2.0 <= summary["hi"] <= 3.0
    assert mean_ci([]) == {"mean": None, "lo": None, "hi": None, "n": 0}


def test_paired_differences_use_keys_in_both_in_steered_order():
    keys, diffs = paired_differences({"c": 5.0, "a": 1.0, "b": 2.0}, {"a": 0.5, "c": 1.0, "z": 9.0})
    assert keys == ["c", "a"]
    assert diffs.tolist() == [4.0, 0.5]


def test_summarise_by_id_pairs_shift_by_id_not_position():
    rows = [{"id": 1, "x": 3.0}, {"id": 2, "x": 5.0}]
    base = [{"id": 2, "x": 4.0}, {"id": 1, "x": 1.0}]
    summary = summarise_by_id(rows, ["x"], base, n_boot=50)
    assert summary["x"]["mean"] == 4.0
    assert summary["shift"]["x"]["mean"] == 1.5  # (3 - 1 + 5 - 4) / 2
    assert summary["shift"]["x"]["n"] == 2
