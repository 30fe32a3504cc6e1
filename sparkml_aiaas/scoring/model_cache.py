"""One loaded model per Python worker, keyed by the artifact's digest.

The driver reads a saved model directory into ``{relative path: bytes}``
(:func:`artifact_files`) and broadcasts it, so executors never need to see
the driver's disk.  On an executor, :func:`get_predictor` writes those bytes
once into a private temporary directory, loads the Spark-free predictor and
keeps it in a module-level dict for as long as the (reused) Python worker
lives: every later task and Arrow batch on that worker gets the same object.
This is the same idea as MLflow's ``spark_model_cache``.

On Spark Connect there are no broadcasts: the files travel inside the plan (pickled with
the UDF, see :func:`broadcast_files`), so each task unpickles them, but a worker that
already holds the digest's predictor still does not load it again.

The digest is sha256 over the sorted ``(relative path, sha256 of the file)``
of the directory, so two copies of one model share an entry and a model
rewritten in place gets a new one.

The allowlist of factories the driver trusted
(:class:`~sparkml_aiaas.models.trust.Allowlist`) travels with the files and is
part of the cache key: an executor loads with exactly the driver's list (its own
``SPARKML_AIAAS_TRUSTED_FACTORIES`` adds nothing), and checks it before
importing anything.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
from typing import Any, Dict, Mapping

from sparkml_aiaas.errors import ModelFormatError
from sparkml_aiaas.models.trust import Allowlist

_LOCK = threading.Lock()
#: (digest, allowlist) -> predictor, in this Python process.
_PREDICTORS: Dict[tuple, Any] = {}
#: Predictors loaded (cache misses) in this Python process: what tests check stays low.
_LOADS = {"count": 0}
#: (id of the SparkContext, digest) -> Broadcast, on the driver.
_BROADCASTS: Dict[tuple, Any] = {}


def _walk(root: str):
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            full = os.path.join(folder, name)
            yield os.path.relpath(full, root).replace(os.sep, "/"), full


def artifact_files(path: str) -> Dict[str, bytes]:
    """Every file of a saved model directory as ``{relative path: bytes}``."""
    from sparkml_aiaas.models.artifact import local_path

    root = local_path(path)
    if not os.path.isdir(root):
        raise ModelFormatError(f"no model at {path!r}: the directory does not exist")
    files = {}
    for rel, full in _walk(root):
        with open(full, "rb") as f:
            files[rel] = f.read()
    return files


def files_digest(files: Mapping[str, bytes]) -> str:
    """sha256 over the sorted ``(relative path, sha256)`` of a model's files."""
    digest = hashlib.sha256()
    for rel in sorted(files):
        digest.update(rel.encode())
        digest.update(b"\0")
        digest.update(hashlib.sha256(files[rel]).hexdigest().encode())
        digest.update(b"\n")
    return digest.hexdigest()


def artifact_digest(path: str) -> str:
    """The digest of the saved model directory at ``path`` (see :func:`files_digest`)."""
    return files_digest(artifact_files(path))


def predictor_from_files(files: Mapping[str, bytes], trusted_factories=None):
    """Load a predictor from a model's file bytes (written to a temporary directory).

    ``trusted_factories`` as for :func:`~sparkml_aiaas.models.load_predictor`; an
    :class:`~sparkml_aiaas.models.trust.Allowlist` is used as is (no environment added).
    """
    from sparkml_aiaas.models.predictor import load_predictor

    tmp = tempfile.mkdtemp(prefix="sparkml_aiaas_model-")
    try:
        for rel, data in files.items():
            target = os.path.join(tmp, *rel.split("/"))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "wb") as f:
                f.write(data)
        return load_predictor(tmp, trusted_factories)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def get_predictor(digest: str, files: Any, allowlist: Allowlist = Allowlist()):
    """The predictor for ``digest``, loaded at most once per process and allowlist.

    ``files`` is the ``{path: bytes}`` mapping or a Broadcast of it; it is only
    dereferenced on a cache miss.  ``allowlist`` is the driver's resolved list: the
    factories this load may import, and nothing from this process's environment.
    """
    if not isinstance(allowlist, Allowlist):
        raise TypeError("get_predictor takes the driver's resolved Allowlist")
    key = (digest, allowlist)
    predictor = _PREDICTORS.get(key)
    if predictor is not None:
        return predictor
    with _LOCK:
        predictor = _PREDICTORS.get(key)
        if predictor is None:
            payload = files.value if hasattr(files, "value") else files
            predictor = predictor_from_files(payload, allowlist)
            _PREDICTORS[key] = predictor
            _LOADS["count"] += 1
        return predictor


def cache_info() -> Dict[str, int]:
    """Entries in this process's cache (for tests and diagnostics)."""
    return {"predictors": len(_PREDICTORS), "broadcasts": len(_BROADCASTS),
            "loads": _LOADS["count"]}


def clear() -> None:
    with _LOCK:
        _PREDICTORS.clear()


def broadcast_files(spark, digest: str, files: Mapping[str, bytes]):
    """A Broadcast of the model's files, created once per SparkContext and digest; on
    Spark Connect a stand-in carrying them inside the plan (refused past its size limit)."""
    from sparkml_aiaas.spark_env import is_connect, ship

    if is_connect(spark):
        check_model_fits_plan(spark, digest, files)
        return ship(spark, dict(files))
    sc = spark.sparkContext
    key = (id(sc), digest)
    with _LOCK:
        bc = _BROADCASTS.get(key)
        if bc is None:
            bc = sc.broadcast(dict(files))
            _BROADCASTS[key] = bc
        return bc


def check_model_fits_plan(spark, digest: str, files: Mapping[str, bytes]) -> None:
    """Refuse, in one line saying what to do, model files too large for a Connect plan."""
    from sparkml_aiaas.engine.connect_pass import check_plan_size

    try:
        check_plan_size(spark, dict(files), f"the model {digest[:12]}'s files",
                        instead="score it on a classic Spark session (model files are "
                                "broadcast there), or make it smaller (sparkml-aiaas compress)")
    except ValueError as exc:
        raise ModelFormatError(str(exc)) from None
