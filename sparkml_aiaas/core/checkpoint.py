"""Optimizer checkpoints: the solver state saved atomically every few iterations.

A checkpoint is one ``.npz`` file of plain arrays (no pickle): the solver's
state (:class:`sparkml_aiaas.core.solver_state.ArrayState`), the objective
history and the method name.  It is written to a temporary file and renamed
over the previous one, so a job killed mid-write leaves the last complete
checkpoint.  A fit that completes removes its checkpoint; a re-run of a killed
fit with the same arguments finds it and resumes, ending with exactly the
coefficients of an uninterrupted run (the passes are deterministic).
"""

from __future__ import annotations

import os
from typing import Dict, Optional

import numpy as np

from sparkml_aiaas.atomic import atomic_file
from sparkml_aiaas.errors import SparkmlAiaasError


class FileCheckpoint:
    """Checkpoint file ``<directory>/<key>.npz`` written every ``interval`` iterations.

    Parameters
    ----------
    directory : str
        A local (or mounted) directory; created when missing.
    key : str
        Identifies the fit: the same estimator params and data give the same key
        (see ``sparkml_aiaas.models.linear``), so a re-run finds its own checkpoint.
    interval : int
        Save after every ``interval``-th iteration (>= 1).
    """

    def __init__(self, directory: str, key: str, interval: int = 10):
        if interval < 1:
            raise SparkmlAiaasError(f"checkpointInterval must be >= 1, got {interval}")
        if directory.startswith("file:"):
            directory = directory[len("file:"):].lstrip("/")
            directory = "/" + directory
        elif "://" in directory:
            raise SparkmlAiaasError(
                f"checkpointDir {directory!r}: only local or mounted paths are supported")
        self.directory = directory
        self.path = os.path.join(directory, f"{key}.npz")
        self.interval = int(interval)
        self.saves = 0

    def load(self) -> Optional[Dict[str, np.ndarray]]:
        """The saved arrays, or None when there is no checkpoint for this fit."""
        if not os.path.exists(self.path):
            return None
        try:
            with np.load(self.path, allow_pickle=False) as data:
                return {name: data[name] for name in data.files}
        except (OSError, ValueError) as exc:
            raise SparkmlAiaasError(
                f"checkpoint {self.path} is unreadable ({exc}); delete it to start over") from None

    def save(self, arrays: Dict[str, np.ndarray]) -> None:
        with atomic_file(self.path, "wb", suffix=".npz") as f:
            np.savez(f, **arrays)
        self.saves += 1

    def due(self, iteration: int) -> bool:
        return iteration % self.interval == 0

    def clear(self) -> None:
        if os.path.exists(self.path):
            os.unlink(self.path)
