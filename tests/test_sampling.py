"""Stratified --limit subsets: every group is seen, the rule is deterministic and nested."""

from collections import Counter

from weightsteer.evals.sampling import stratified_sample

UNITS = [("Care", i) for i in range(10)] + [("Fairness", i) for i in range(4)] + [("Liberty", i) for i in range(2)]


def group(unit):
    return unit[0]


def test_round_robin_covers_every_group_and_keeps_file_order():
    picked = stratified_sample(UNITS, group, 7, seed=0)
    counts = Counter(group(u) for u in picked)
    assert counts == {"Care": 3, "Fairness": 2, "Liberty": 2}  # Liberty runs out after two rounds
    assert picked == sorted(picked, key=UNITS.index)


def test_first_rows_are_not_what_a_limit_takes():
    assert {group(u) for u in stratified_sample(UNITS, group, 3)} == {"Care", "Fairness", "Liberty"}


def test_deterministic_nested_and_whole_set_for_large_n():
    assert stratified_sample(UNITS, group, 5, seed=3) == stratified_sample(UNITS, group, 5, seed=3)
    small, large = set(stratified_sample(UNITS, group, 4)), set(stratified_sample(UNITS, group, 9))
    assert small <= large
    assert stratified_sample(UNITS, group, None) == UNITS
    assert stratified_sample(UNITS, group, 100) == UNITS
    assert stratified_sample(UNITS, group, 5, seed=1) != stratified_sample(UNITS, group, 5, seed=2)
