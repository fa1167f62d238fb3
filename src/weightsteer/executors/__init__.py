"""Executors run a sweep's units: `local` one after another in this process (the default), `ray`
as Ray tasks on a local Ray instance or a cluster (executors/ray.py).

An executor has one method, run(work, units, submitted, finished): it runs each unit with
work.run(unit) (work: sweep.UnitWork, holding the model) or with an equivalent elsewhere, calls
submitted(n) when n units have been handed out and finished(result) with each unit's UnitResult,
in this process, as results arrive. The driver (sweep_driver.py) records what finished reports.
"""

from __future__ import annotations

EXECUTORS = ("local", "ray")


class LocalExecutor:
    """Today's sweep: each unit in this process, with the driver's model, writing in place."""

    def __init__(self, log=print):
        self.log = log

    def run(self, work, units, submitted, finished) -> None:
        for i, unit in enumerate(units, 1):
            self.log(f"== [{i}/{len(units)}] {work.behaviour.name}: {unit}")
            submitted(1)
            finished(work.run(unit))
