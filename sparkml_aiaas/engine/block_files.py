"""Executor-local block files: how a partition's block is written and opened.

Imported on the executors (never pickled), and free of pyspark imports at
module level so that workers load it cheaply.

A block lives in a folder of its own below the executor's Spark local
directory (``SPARK_LOCAL_DIRS``, which Spark deletes when the executor or
application stops, so even a killed job leaves nothing behind for long):
``<local>/sparkml_aiaas-blocks/<fit id>/part-<partition>-<attempt>/`` holding
the features, ``y.npy``, ``w.npy`` (float64) and ``_COMPLETE`` written last.

The features are in one of two layouts, named by the marker
(``"<rows> <cols> <dtype> dense"`` or ``"<rows> <cols> <dtype> csr <nnz>"``;
a marker of three fields is a dense block):

``dense``
    ``X.bin``: row-major values (float64 or float32), appended batch by batch
    so memory stays bounded.
``csr``
    Compressed sparse rows: ``data.bin`` (values, float64 or float32) and
    ``indices.bin`` (int32 column indices) appended batch by batch, then
    ``indptr.npy`` (int32, or int64 past 2³¹ stored entries).  :func:`open_block`
    returns a ``scipy.sparse.csr_matrix`` over the memory-mapped arrays.
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
from typing import Any, Optional, Tuple

import numpy as np

BLOCKS_DIRNAME = "sparkml_aiaas-blocks"
COMPLETE_MARKER = "_COMPLETE"
#: Feature layouts of a block.
LAYOUTS = ("dense", "csr")
#: Feature value types a block may store.
DTYPES = ("float64", "float32")


def local_root() -> str:
    """The first Spark local directory of this process (a temp dir outside Spark)."""
    dirs = os.environ.get("SPARK_LOCAL_DIRS", "")
    first = dirs.split(",")[0] if dirs else tempfile.gettempdir()
    return os.path.join(first, BLOCKS_DIRNAME)


def fit_dir(fit_id: str) -> str:
    return os.path.join(local_root(), fit_id)


class BlockWriter:
    """Appends row batches to a new block folder; :meth:`close` marks it complete.

    ``layout`` is ``"dense"`` or ``"csr"`` (see the module docstring); either
    layout accepts dense or ``scipy.sparse`` batches and converts them.
    ``dtype`` (float64 or float32) is the type the feature values are stored in.
    ``group`` names one of several blocks of the partition (grouped blocks: one per fold).
    """

    def __init__(self, fit_id: str, partition: int, attempt: int, n_features: int, dtype=np.float64,
                 layout: str = "dense", group: Optional[int] = None):
        if layout not in LAYOUTS:
            raise ValueError(f"block layout must be one of {LAYOUTS}, got {layout!r}")
        if np.dtype(dtype).name not in DTYPES:
            raise ValueError(f"block dtype must be one of {DTYPES}, got {np.dtype(dtype).name!r}")
        name = f"part-{partition:05d}-{attempt}" + ("" if group is None else f"-g{group}")
        self.path = os.path.join(fit_dir(fit_id), name)
        if os.path.exists(self.path):
            shutil.rmtree(self.path)
        os.makedirs(self.path)
        self.n_features = n_features
        self.dtype = np.dtype(dtype)
        self.layout = layout
        self.rows = 0
        self.nnz = 0
        self._indptr: list = []
        if layout == "csr":
            self._x = open(os.path.join(self.path, "data.bin"), "wb")
            self._indices = open(os.path.join(self.path, "indices.bin"), "wb")
        else:
            self._x = open(os.path.join(self.path, "X.bin"), "wb")
            self._indices = None
        self._y: list = []
        self._w: list = []

    def append(self, X, y: np.ndarray, w: np.ndarray) -> None:
        import scipy.sparse as sp

        if self.layout == "csr":
            self._append_csr(sp.csr_matrix(X) if not sp.issparse(X) else X.tocsr())
            self._y.append(np.asarray(y, dtype=np.float64))
            self._w.append(np.asarray(w, dtype=np.float64))
            return
        if sp.issparse(X):
            X = X.toarray()
        X = np.ascontiguousarray(X, dtype=self.dtype)
        if X.size:
            self._x.write(memoryview(X).cast("B"))  # no intermediate bytes copy
        self._y.append(np.asarray(y, dtype=np.float64))
        self._w.append(np.asarray(w, dtype=np.float64))
        self.rows += X.shape[0]

    def _append_csr(self, X) -> None:
        if X.shape[1] != self.n_features:
            raise ValueError(f"a batch of {X.shape[1]} features for a block of {self.n_features}")
        if not X.has_canonical_format:
            X = X.copy()
            X.sum_duplicates()  # sorted, unique column indices per row
        data = np.ascontiguousarray(X.data, dtype=self.dtype)
        indices = np.ascontiguousarray(X.indices, dtype=np.int32)
        if data.size:
            self._x.write(memoryview(data).cast("B"))
            self._indices.write(memoryview(indices).cast("B"))
        self._indptr.append(np.asarray(X.indptr[1:], dtype=np.int64) + self.nnz)
        self.nnz += int(data.size)
        self.rows += X.shape[0]

    def close(self) -> str:
        self._x.close()
        if self._indices is not None:
            self._indices.close()
            index_type = np.int32 if self.nnz < 2**31 else np.int64
            indptr = np.concatenate([np.zeros(1, np.int64), *self._indptr]).astype(index_type)
            np.save(os.path.join(self.path, "indptr.npy"), indptr)
            layout = f"csr {self.nnz}"
        else:
            layout = "dense"
        y = np.concatenate(self._y) if self._y else np.empty(0)
        w = np.concatenate(self._w) if self._w else np.empty(0)
        np.save(os.path.join(self.path, "y.npy"), y)
        np.save(os.path.join(self.path, "w.npy"), w)
        with open(os.path.join(self.path, COMPLETE_MARKER), "w") as marker:
            marker.write(f"{self.rows} {self.n_features} {self.dtype.str} {layout}\n")
        return self.path

    def abort(self) -> None:
        self._x.close()
        if self._indices is not None:
            self._indices.close()
        shutil.rmtree(self.path, ignore_errors=True)


def _map(path: str, dtype, count: int) -> np.ndarray:
    """A read-only memory map of ``count`` values (an empty array for none: mmap refuses 0)."""
    if count == 0:
        return np.empty(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=(count,))


def open_block(path: str) -> Optional[Tuple[Any, np.ndarray, np.ndarray]]:
    """Memory-map a complete block, or return None when it is not on this machine.

    ``X`` is a (rows, cols) numpy memory map for a dense block, or a
    ``scipy.sparse.csr_matrix`` over memory-mapped arrays (no copy) for a CSR block.
    """
    marker = os.path.join(path, COMPLETE_MARKER)
    try:
        with open(marker) as f:
            fields = f.read().split()
    except FileNotFoundError:
        return None
    rows_s, cols_s, dtype_s = fields[:3]
    rows, cols = int(rows_s), int(cols_s)
    layout = fields[3] if len(fields) > 3 else "dense"
    if layout == "csr":
        import scipy.sparse as sp

        nnz = int(fields[4])
        data = _map(os.path.join(path, "data.bin"), np.dtype(dtype_s), nnz)
        indices = _map(os.path.join(path, "indices.bin"), np.int32, nnz)
        indptr = np.load(os.path.join(path, "indptr.npy"), mmap_mode="r")
        X = sp.csr_matrix((data, indices, indptr), shape=(rows, cols), copy=False)
    elif layout != "dense":
        raise ValueError(f"block {path} has an unknown layout {layout!r}")
    elif rows == 0:
        X = np.empty((0, cols), dtype=np.dtype(dtype_s))
    else:
        X = np.memmap(os.path.join(path, "X.bin"), dtype=np.dtype(dtype_s), mode="r",
                      shape=(rows, cols))
    y = np.load(os.path.join(path, "y.npy"), mmap_mode="r")
    w = np.load(os.path.join(path, "w.npy"), mmap_mode="r")
    return X, y, w


def _sibling_fit_dirs(fit_id: str) -> list:
    """The fit's folders under the other local directories beside this process's own.

    Python workers get their executor's block-manager directories as
    ``SPARK_LOCAL_DIRS`` (``<app dir>/blockmgr-<uuid>``); an executor that was
    lost (killed, out of memory) never removed its folder, and its replacement
    gets a new ``blockmgr-*`` beside it.  A standalone Worker's app dir is
    ``<local dir>/spark-<uuid>/executor-<uuid>``, one per worker: with several
    workers on the machine (``local-cluster``), the lost executor's folder is in
    another worker's app dir, which a surviving executor must reach too when the
    replacement is not up yet.  The fit id names one fit of one application, so
    whatever matches it is ours to delete.
    """
    dirs = os.environ.get("SPARK_LOCAL_DIRS", "")
    found = []
    for local in filter(None, dirs.split(",")):
        parent = os.path.dirname(os.path.abspath(local))
        found += glob.glob(os.path.join(glob.escape(parent), "*", BLOCKS_DIRNAME,
                                        glob.escape(fit_id)))
        root = os.path.dirname(parent)
        if (os.path.basename(parent).startswith("executor-")
                and os.path.basename(root).startswith("spark-")):
            found += glob.glob(os.path.join(glob.escape(os.path.dirname(root)), "spark-*",
                                            "executor-*", "*", BLOCKS_DIRNAME,
                                            glob.escape(fit_id)))
    return found


def remove_fit(fit_id: str, siblings: bool = False) -> int:
    """Delete every block of a fit in this process's local directory; returns how many
    folders went.  ``siblings`` also deletes the fit's folders that other (lost)
    executors left in local directories beside it (:func:`_sibling_fit_dirs`)."""
    roots = [fit_dir(fit_id)] + (_sibling_fit_dirs(fit_id) if siblings else [])
    count = 0
    for root in dict.fromkeys(os.path.realpath(r) for r in roots):
        try:
            # Another task of the same cleanup job may be removing it concurrently.
            count += len(os.listdir(root))
        except (FileNotFoundError, NotADirectoryError):
            continue
        shutil.rmtree(root, ignore_errors=True)
    return count
