"""First-order update rules and step-size schedules, shared by the driver and the tasks.

A rule maps ``(x, gradient, state, step)`` to the next ``x`` and state.  The
driver applies it after each mini-batch gradient pass; with ``localSteps``
each task applies the very same function several times on its own block
before the driver averages parameters and state (local SGD).  State is a dict
of arrays so that it broadcasts, averages and checkpoints as plain numpy.

An L1 penalty is applied as a proximal step after the update, with each
coordinate's effective step (adaptive rules scale steps per coordinate).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np

RULES = ("sgd", "momentum", "nesterov", "adam", "rmsprop", "adagrad")
#: The linear models' step of each rule when ``stepSize`` is not set (its declared default,
#: 1.0, is gd's first trial step).  Measured on standardized logistic regression
#: (breast_cancer, regParam 0.01): each reaches the L-BFGS objective within ~3 %, full batch
#: or with ``miniBatchFraction`` 0.1; adaptive rules and momentum oscillate at 1.0.
DEFAULT_STEPS = {"sgd": 1.0, "momentum": 0.05, "nesterov": 0.05, "adam": 0.05,
                 "rmsprop": 0.02, "adagrad": 0.5}
SCHEDULES = ("constant", "inverse_time", "step_decay")

State = Dict[str, np.ndarray]


@dataclass(frozen=True)
class RuleSettings:
    """Hyper-parameters of the update rules (MLlib/PyTorch names and defaults)."""

    momentum: float = 0.9
    beta1: float = 0.9
    beta2: float = 0.999
    rho: float = 0.99  # RMSprop's decay of the squared-gradient average (torch's alpha)
    epsilon: float = 1e-8

    def validate(self) -> None:
        for name in ("momentum", "beta1", "beta2", "rho"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value}")
        if self.epsilon <= 0:
            raise ValueError(f"epsilon must be > 0, got {self.epsilon}")


def init_state(rule: str, n: int) -> State:
    """Zero state for ``rule`` over ``n`` variables (``t`` counts applied steps)."""
    if rule not in RULES:
        raise ValueError(f"unknown update rule {rule!r}; expected one of {list(RULES)}")
    state: State = {"t": np.zeros((), dtype=np.int64)}
    if rule in ("momentum", "nesterov"):
        state["velocity"] = np.zeros(n)
    elif rule == "adam":
        state["m"] = np.zeros(n)
        state["v"] = np.zeros(n)
    elif rule in ("rmsprop", "adagrad"):
        state["v"] = np.zeros(n)
    return state


def scheduled_step(base: float, schedule: str, t: int, decay: float = 0.0,
                   drop_every: int = 10) -> float:
    """Step size at step ``t`` (0-based).

    ``constant``: ``base``; ``inverse_time``: ``base / (1 + decay·t)``;
    ``step_decay``: ``base · decay^floor(t / drop_every)`` (``decay`` in (0, 1]).
    """
    if schedule == "constant":
        return base
    if schedule == "inverse_time":
        return base / (1.0 + decay * t)
    if schedule == "step_decay":
        return base * (decay ** (t // max(drop_every, 1)))
    raise ValueError(f"unknown step schedule {schedule!r}; expected one of {list(SCHEDULES)}")


def apply_update(rule: str, x: np.ndarray, grad: np.ndarray, state: State, step: float,
                 settings: RuleSettings = RuleSettings(),
                 l1: Optional[np.ndarray] = None) -> Tuple[np.ndarray, State]:
    """One step of ``rule``; returns new ``(x, state)`` (inputs are not modified)."""
    t = int(state["t"]) + 1
    new: State = {"t": np.asarray(t, dtype=np.int64)}
    if rule == "sgd":
        effective = step
        x_new = x - step * grad
    elif rule in ("momentum", "nesterov"):
        velocity = settings.momentum * state["velocity"] + grad
        new["velocity"] = velocity
        direction = grad + settings.momentum * velocity if rule == "nesterov" else velocity
        effective = step
        x_new = x - step * direction
    elif rule == "adam":
        m = settings.beta1 * state["m"] + (1.0 - settings.beta1) * grad
        v = settings.beta2 * state["v"] + (1.0 - settings.beta2) * grad * grad
        new["m"], new["v"] = m, v
        m_hat = m / (1.0 - settings.beta1 ** t)
        v_hat = v / (1.0 - settings.beta2 ** t)
        effective = step / (np.sqrt(v_hat) + settings.epsilon)
        x_new = x - effective * m_hat
    elif rule == "rmsprop":
        v = settings.rho * state["v"] + (1.0 - settings.rho) * grad * grad
        new["v"] = v
        effective = step / (np.sqrt(v) + settings.epsilon)
        x_new = x - effective * grad
    elif rule == "adagrad":
        v = state["v"] + grad * grad
        new["v"] = v
        effective = step / (np.sqrt(v) + settings.epsilon)
        x_new = x - effective * grad
    else:
        raise ValueError(f"unknown update rule {rule!r}; expected one of {list(RULES)}")
    if l1 is not None and np.any(l1 > 0):
        threshold = effective * l1
        x_new = np.sign(x_new) * np.maximum(np.abs(x_new) - threshold, 0.0)
    return x_new, new


def average_states(states, weights) -> State:
    """Weighted average of several tasks' states (local SGD); ``t`` is taken from the first."""
    weights = np.asarray(weights, dtype=float)
    total = weights.sum()
    first = states[0]
    averaged: State = {"t": first["t"]}
    for key in first:
        if key == "t":
            continue
        averaged[key] = sum(w * s[key] for w, s in zip(weights, states)) / total
    return averaged
