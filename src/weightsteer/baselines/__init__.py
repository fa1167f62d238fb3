"""Baselines that weight steering is compared against at a matched KL budget.

Prompt baselines live in methods.py; the activation-steering methods are here: directions.py
fits the vectors, hooks.py applies edits to the residual stream, activation.py ties them into a
SteeringMethod that can be fitted, applied, saved and loaded.
"""

from .activation import (
    ACTIVATION_METHODS,
    ActivationSteering,
    fit_activation_method,
    load_activation_method,
    save_activation_method,
)

__all__ = ["ACTIVATION_METHODS", "ActivationSteering", "fit_activation_method", "load_activation_method",
           "save_activation_method"]
