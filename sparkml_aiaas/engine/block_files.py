"""Executor-local block files: how a partition's block is written and opened.

Imported on the executors (never pickled), and free of pyspark imports at
module level so that workers load it cheaply.

A block lives in a folder of its own below the executor's Spark local
directory (``SPARK_LOCAL_DIRS``, which Spark deletes when the executor or
application stops, so even a killed job leaves nothing behind for long):
``<local>/sparkml_aiaas-blocks/<fit id>/part-<partition>-<attempt>/`` holding
``X.bin`` (row-major float64, appended batch by batch so memory stays
bounded), ``y.npy``, ``w.npy`` and ``_COMPLETE`` written last.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Optional, Tuple

import numpy as np

BLOCKS_DIRNAME = "sparkml_aiaas-blocks"
COMPLETE_MARKER = "_COMPLETE"


def local_root() -> str:
    """The first Spark local directory of this process (a temp dir outside Spark)."""
    dirs = os.environ.get("SPARK_LOCAL_DIRS", "")
    first = dirs.split(",")[0] if dirs else tempfile.gettempdir()
    return os.path.join(first, BLOCKS_DIRNAME)


def fit_dir(fit_id: str) -> str:
    return os.path.join(local_root(), fit_id)


class BlockWriter:
    """Appends row batches to a new block folder; :meth:`close` marks it complete."""

    def __init__(self, fit_id: str, partition: int, attempt: int, n_features: int, dtype=np.float64):
        self.path = os.path.join(fit_dir(fit_id), f"part-{partition:05d}-{attempt}")
        if os.path.exists(self.path):
            shutil.rmtree(self.path)
        os.makedirs(self.path)
        self.n_features = n_features
        self.dtype = np.dtype(dtype)
        self.rows = 0
        self._x = open(os.path.join(self.path, "X.bin"), "wb")
        self._y: list = []
        self._w: list = []

    def append(self, X: np.ndarray, y: np.ndarray, w: np.ndarray) -> None:
        X = np.ascontiguousarray(X, dtype=self.dtype)
        if X.size:
            self._x.write(memoryview(X).cast("B"))  # no intermediate bytes copy
        self._y.append(np.asarray(y, dtype=np.float64))
        self._w.append(np.asarray(w, dtype=np.float64))
        self.rows += X.shape[0]

    def close(self) -> str:
        self._x.close()
        y = np.concatenate(self._y) if self._y else np.empty(0)
        w = np.concatenate(self._w) if self._w else np.empty(0)
        np.save(os.path.join(self.path, "y.npy"), y)
        np.save(os.path.join(self.path, "w.npy"), w)
        with open(os.path.join(self.path, COMPLETE_MARKER), "w") as marker:
            marker.write(f"{self.rows} {self.n_features} {self.dtype.str}\n")
        return self.path

    def abort(self) -> None:
        self._x.close()
        shutil.rmtree(self.path, ignore_errors=True)


def open_block(path: str) -> Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Memory-map a complete block, or return None when it is not on this machine."""
    marker = os.path.join(path, COMPLETE_MARKER)
    try:
        with open(marker) as f:
            rows_s, cols_s, dtype_s = f.read().split()
    except FileNotFoundError:
        return None
    rows, cols = int(rows_s), int(cols_s)
    if rows == 0:
        X = np.empty((0, cols), dtype=np.dtype(dtype_s))
    else:
        X = np.memmap(os.path.join(path, "X.bin"), dtype=np.dtype(dtype_s), mode="r",
                      shape=(rows, cols))
    y = np.load(os.path.join(path, "y.npy"), mmap_mode="r")
    w = np.load(os.path.join(path, "w.npy"), mmap_mode="r")
    return X, y, w


def remove_fit(fit_id: str) -> int:
    """Delete every block of a fit on this machine; returns how many folders went."""
    root = fit_dir(fit_id)
    try:
        # Another task of the same cleanup job may be removing it concurrently.
        count = len(os.listdir(root))
    except (FileNotFoundError, NotADirectoryError):
        return 0
    shutil.rmtree(root, ignore_errors=True)
    return count
