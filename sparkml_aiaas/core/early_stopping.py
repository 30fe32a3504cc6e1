"""Early stopping on a held-out validation set (driver side, no Spark).

:class:`EarlyStopping` is a *monitor* that every optimizer loop of the package
accepts: it evaluates the validation loss at the starting point and after each
iteration, remembers the variables of the best (lowest) one, and tells the loop
to stop once ``patience`` consecutive iterations have not improved on it.  The
fit then returns the best iteration's variables, not the last ones.

Its whole state (:class:`EarlyStoppingState`) is an
:class:`~sparkml_aiaas.core.solver_state.ArrayState`, saved into the optimizer's
checkpoint next to the solver state under the :data:`PREFIX` keys, so a killed
fit that resumes ends with the same validation history, best iteration and
coefficients as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional

import numpy as np

from sparkml_aiaas.core.solver_state import ArrayState

#: Checkpoint keys of the monitor's state start with this (solver fields never do).
PREFIX = "validation__"


@dataclass(eq=False)
class EarlyStoppingState(ArrayState):
    """What the monitor knows after some iterations; exactly restorable.

    Attributes
    ----------
    history : ndarray
        Validation loss after 0, 1, 2, … iterations (0: the starting point).
    best_x : ndarray
        Variables of the best iteration so far.
    best_value : float
        Its validation loss.
    best_iteration : int
        Its iteration number (index into ``history``).
    since_best : int
        Consecutive iterations since the best one that did not improve on it.
    """

    history: np.ndarray
    best_x: np.ndarray
    best_value: float
    best_iteration: int = 0
    since_best: int = 0

    _FLOATS = ("best_value",)
    _INTS = ("best_iteration", "since_best")
    _NDIM = {"history": 1, "best_x": 1}


class EarlyStopping:
    """Stop when the validation loss has not improved for ``patience`` iterations.

    Parameters
    ----------
    evaluate : callable
        ``evaluate(x) -> float``: the validation loss at the optimizer's
        variables ``x`` (for the models: the weighted mean data loss over the
        validation rows, without the penalty; one pass over them).
    patience : int
        Consecutive non-improving iterations tolerated (>= 1).  An iteration
        improves when its loss is strictly below the best so far.

    After the run, :attr:`history`, :attr:`best_iteration`, :attr:`best_x` and
    :attr:`stopped_early` describe what happened.
    """

    def __init__(self, evaluate: Callable[[np.ndarray], float], patience: int = 5):
        if int(patience) < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        self.evaluate = evaluate
        self.patience = int(patience)
        self.state: Optional[EarlyStoppingState] = None
        self.stopped_early = False

    # -- the loop's side ------------------------------------------------------------
    def start(self, x: np.ndarray) -> None:
        """Evaluate the starting point (iteration 0)."""
        value = self._value(x, 0)
        self.state = EarlyStoppingState(history=np.array([value]), best_x=np.array(x, float),
                                        best_value=value, best_iteration=0, since_best=0)
        self.stopped_early = False

    def update(self, iteration: int, x: np.ndarray) -> bool:
        """Record the loss after ``iteration``; True when the loop must stop now."""
        state = self._require_state()
        value = self._value(x, iteration)
        history = np.append(state.history, value)
        if value < state.best_value:
            self.state = EarlyStoppingState(history=history, best_x=np.array(x, float),
                                            best_value=value, best_iteration=int(iteration),
                                            since_best=0)
        else:
            self.state = EarlyStoppingState(history=history, best_x=state.best_x,
                                            best_value=state.best_value,
                                            best_iteration=state.best_iteration,
                                            since_best=state.since_best + 1)
        self.stopped_early = self.state.since_best >= self.patience
        return self.stopped_early

    @property
    def message(self) -> str:
        state = self._require_state()
        return (f"early stopping: the validation loss has not improved for {self.patience} "
                f"iterations (best {state.best_value:.10g} at iteration {state.best_iteration})")

    # -- checkpoints ----------------------------------------------------------------
    def to_arrays(self) -> Dict[str, np.ndarray]:
        """The monitor's state as prefixed checkpoint arrays."""
        return {PREFIX + k: v for k, v in self._require_state().to_arrays().items()}

    @staticmethod
    def in_checkpoint(arrays: Mapping[str, np.ndarray]) -> bool:
        """Whether a checkpoint was saved with a monitor (so it can restore one)."""
        return any(str(k).startswith(PREFIX) for k in arrays)

    def restore(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Resume from :meth:`to_arrays` output (extra keys are ignored)."""
        mine = {k[len(PREFIX):]: arrays[k] for k in arrays if str(k).startswith(PREFIX)}
        self.state = EarlyStoppingState.from_arrays(mine)
        self.stopped_early = False

    # -- results ----------------------------------------------------------------------
    @property
    def history(self) -> List[float]:
        return [float(v) for v in self._require_state().history]

    @property
    def best_iteration(self) -> int:
        return int(self._require_state().best_iteration)

    @property
    def best_x(self) -> np.ndarray:
        return np.array(self._require_state().best_x)

    def _value(self, x: np.ndarray, iteration: int) -> float:
        value = float(self.evaluate(np.asarray(x, float)))
        if not np.isfinite(value):
            raise ValueError(f"the validation loss is not finite at iteration {iteration} "
                             f"({value}): the fit diverged")
        return value

    def _require_state(self) -> EarlyStoppingState:
        if self.state is None:
            raise RuntimeError("EarlyStopping.start() (or restore()) has not been called")
        return self.state
