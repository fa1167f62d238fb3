"""Headroom: how far a probe moves when the model is simply told the persona.

Before a steering result can mean anything, the probe must be able to move on this model. The
same probe is run under the POS and the NEG persona prompt (no steering; results.References keeps
those rows); the paired difference POS - NEG is the prompt contrast. A steering shift is read
against it: "steering moved 0.1 of a possible 0.04" says the probe is stuck, not that steering failed.
"""

from __future__ import annotations

MIN_HEADROOM = 0.25  # nats: below this, or with a CI that includes 0, a null steering result is uninformative


def headroom_verdict(contrast: dict | None) -> str:
    if contrast is None or contrast.get("mean") is None:
        return "no headroom measured (the behaviour has no persona pairs or no probe)"
    mean, lo, hi = contrast["mean"], contrast["lo"], contrast["hi"]
    if abs(mean) < MIN_HEADROOM or lo <= 0 <= hi:
        return (f"headroom too small ({mean:+.2f} nats, CI [{lo:+.2f}, {hi:+.2f}]): the model barely moves "
                "even when told the persona, so a null steering result here says nothing about the method")
    return f"headroom {mean:+.2f} nats (CI [{lo:+.2f}, {hi:+.2f}])"
