"""Probe kinds: how a behaviour file says its behaviour is measured (the `[probe]` table).

Each kind is a benchmark object (evals/__init__.py) whose headline is higher for more POS:
`next_word`, `yes_no`, `choice` and `tinymfv`; docs/behaviours.md describes their keys.
"""

from __future__ import annotations

from .base import Probe
from .choice import ChoiceProbe
from .next_word import NextWordProbe
from .tinymfv_axis import TinyMfvProbe
from .yes_no import YesNoProbe

KINDS = {cls.kind: cls for cls in (NextWordProbe, YesNoProbe, ChoiceProbe, TinyMfvProbe)}


def probe_from_fields(f) -> Probe:
    """The probe a behaviour file's [probe] table describes (f: a fields.Fields over that table)."""
    kind = f.text("kind")
    if kind not in KINDS:
        raise f.fail("kind", f"unknown probe kind '{kind}': choose one of {', '.join(KINDS)}")
    probe = KINDS[kind].from_fields(f)
    f.done()
    return probe


__all__ = ["KINDS", "ChoiceProbe", "NextWordProbe", "Probe", "TinyMfvProbe", "YesNoProbe", "probe_from_fields"]
