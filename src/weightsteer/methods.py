"""Steering methods under one interface, so calibration and evals treat them all alike.

A method changes the model for the duration of `apply(model, coef)` (weight steering adds
coef * dW; activation steering adds hooks), and/or changes how a prompt is written (the prompt
baselines put the POS persona in the system prompt or in front of the user message). Methods
with no coefficient ignore `coef` and are reported with "n/a".
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from .delta import WeightDelta
from .steer import steer


@dataclass
class SteeringMethod:
    name: str
    has_coefficient: bool = True
    system: str | None = None  # system prompt used instead of the model's default
    user_prefix: str | None = None  # text put in front of every user message

    def apply(self, model, coef: float):
        return contextlib.nullcontext(model)


@dataclass
class WeightSteering(SteeringMethod):
    delta: WeightDelta | None = None

    def apply(self, model, coef: float):
        return steer(model, self.delta, coef)


def prompt_baseline(persona: str) -> SteeringMethod:
    """The POS persona as the system prompt."""
    return SteeringMethod("prompt", has_coefficient=False, system=persona)


def prompt_only_baseline(persona: str) -> SteeringMethod:
    """The POS persona as a prefix of the user message (the model's default system prompt stays)."""
    return SteeringMethod("prompt_only", has_coefficient=False, user_prefix=persona)


UNSTEERED = SteeringMethod("base", has_coefficient=False)
