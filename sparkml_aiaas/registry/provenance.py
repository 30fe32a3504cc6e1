"""What a registered version needs to be trained again, and whether it still can be.

A train job records a *provenance* beside the model (the model's metadata.json, then the
registry's ``registry.json``): the whole job config, the seed, the number of training
blocks, the input (each file's path, size and content hash, or the Delta table and
version), and the environment (this package's code digest and git commit; the versions
of numpy, pyspark, torch, xgboost and scikit-learn; the BLAS in use; the CPU).
:mod:`sparkml_aiaas.registry.reproduce` checks it against what is here now and retrains.

Content hashes, not modification times: a copied, unchanged file is the same input, and
a rewritten one is named.  Files are hashed where Spark reads them (here for a classic
session; on the server for Spark Connect), streaming, so a large file costs time, not
memory.

This module imports no pyspark at import time.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import os
import platform
import posixpath
import subprocess
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import unquote, urlparse

PROVENANCE_FORMAT = 1
#: Libraries whose version is recorded.  Which of them must match depends on the family:
#: see :func:`checked_keys`.
LIBRARIES = ("numpy", "pyspark", "pandas", "pyarrow", "torch", "xgboost", "scikit-learn")
_FAMILY_LIBRARIES = {"torch": ("torch",), "xgboost": ("xgboost",), "sklearn": ("scikit-learn",)}
_CHUNK = 4 << 20


# --------------------------------------------------------------------------- environment
def _package_dir() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def code_digest() -> str:
    """sha256 over this package's Python files (relative path and bytes, sorted): the
    code that trained, whether or not it is a git checkout, committed or not."""
    root = _package_dir()
    digest = hashlib.sha256()
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                digest.update(os.path.relpath(path, root).replace(os.sep, "/").encode())
                digest.update(b"\0")
                with open(path, "rb") as f:
                    digest.update(hashlib.sha256(f.read()).digest())
    return digest.hexdigest()


def git_commit() -> Optional[str]:
    """The git commit of the checkout this package is imported from (``+dirty`` when its
    files have uncommitted changes); None for an installed wheel or without git."""
    root = _package_dir()
    try:
        top = subprocess.run(["git", "-C", root, "rev-parse", "--show-toplevel", "HEAD"],
                             capture_output=True, text=True, timeout=5, check=False)
        if top.returncode != 0:
            return None
        toplevel, commit = top.stdout.split()[:2]
        if not os.path.abspath(root).startswith(os.path.abspath(toplevel)):
            return None
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--", "."],
                               capture_output=True, text=True, timeout=5, check=False)
        return commit + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


def _library_version(name: str) -> Optional[str]:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        if name == "xgboost":  # the xgboost-cpu wheel installs the same module
            try:
                return importlib.metadata.version("xgboost-cpu")
            except importlib.metadata.PackageNotFoundError:
                return None
        return None


def blas() -> Optional[str]:
    """The BLAS *numpy* calls at run time (threadpoolctl), e.g. ``openblas 0.3.31
    (SkylakeX)``: its kernels decide the last bits of a dot product.  Other libraries load
    their own BLAS into the process (scipy's, torch's), in an order that depends on what
    was imported first: numpy's is the one whose file sits in numpy's folders."""
    try:
        numpy = importlib.import_module("numpy")  # loads the BLAS threadpoolctl inspects
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    home = os.path.dirname(os.path.abspath(numpy.__file__))
    folders = (home + os.sep, home + ".libs" + os.sep)  # numpy/ and numpy.libs/ (wheels)
    entries = [e for e in threadpool_info() if e.get("user_api") == "blas"]
    ours = [e for e in entries if str(e.get("filepath", "")).startswith(folders)]
    for entry in ours or entries[:1]:
        arch = f" ({entry['architecture']})" if entry.get("architecture") else ""
        return f"{entry.get('internal_api')} {entry.get('version')}{arch}"
    return None


def cpu() -> str:
    """The CPU model (``/proc/cpuinfo``; the machine type elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> Dict[str, Any]:
    """Everything of this process that can change a fit's bits."""
    from sparkml_aiaas import __version__

    record: Dict[str, Any] = {"sparkml_aiaas": __version__, "code_digest": code_digest(),
                              "git_commit": git_commit(),
                              "python": platform.python_version()}
    record.update({name: _library_version(name) for name in LIBRARIES})
    record.update({"blas": blas(), "machine": platform.machine(), "cpu": cpu(),
                   "os": platform.system()})
    return record


def checked_keys(family: str) -> Tuple[str, ...]:
    """The environment entries that must match for a reproduction of ``family`` to be
    promised bit for bit: the code, numpy, pyspark and the BLAS always; torch, xgboost
    or scikit-learn for their own family only (a torch upgrade does not refuse a
    logistic regression)."""
    return ("code_digest", "numpy", "pyspark", "pyarrow", "blas") + \
        _FAMILY_LIBRARIES.get(family, ())


def environment_differences(recorded: Mapping[str, Any], current: Mapping[str, Any],
                            family: str) -> List[str]:
    """``["numpy 2.3.1 (recorded) != 2.3.2 (here)", ...]`` for the :func:`checked_keys`."""
    differences = []
    for key in checked_keys(family):
        if key in recorded and recorded.get(key) != current.get(key):
            name = "package code (sha256 of its .py files)" if key == "code_digest" else key
            was, now = recorded.get(key), current.get(key)
            if key == "code_digest":
                was, now = str(was)[:12], str(now)[:12]
                commit = recorded.get("git_commit")
                if commit:
                    name += f", recorded at git {commit[:12]}"
            differences.append(f"{name} {was} (recorded) != {now} (here)")
    return differences


def hardware_differences(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> List[str]:
    """CPU and machine type: recorded and reported, never refused (a different CPU may
    take other BLAS kernels, so bit-identity is not promised there)."""
    return [f"{key} {recorded.get(key)!r} (recorded) != {current.get(key)!r} (here)"
            for key in ("machine", "cpu") if key in recorded and recorded[key] != current.get(key)]


# --------------------------------------------------------------------------- input files
def _open(uri: str):
    """A binary stream of ``uri``: a local path or ``file:`` URI, else ``pyarrow.fs``
    (object stores, HDFS) with this process's credentials."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return open(unquote(parsed.path) if parsed.scheme else uri, "rb")
    from pyarrow import fs

    filesystem, path = fs.FileSystem.from_uri(uri)
    return filesystem.open_input_stream(path)


def hash_files(uris: Sequence[str]) -> List[Tuple[int, str]]:
    """``(size, sha256)`` of each file, read as a stream."""
    out = []
    for uri in uris:
        digest, size = hashlib.sha256(), 0
        with _open(uri) as stream:
            while True:
                chunk = stream.read(_CHUNK)
                if not chunk:
                    break
                digest.update(chunk)
                size += len(chunk)
        out.append((size, digest.hexdigest()))
    return out


def _relative(files: Sequence[str]) -> Tuple[str, List[str]]:
    """The files' common folder and each file's path below it."""
    if len(files) == 1:
        root = posixpath.dirname(files[0])
    else:
        prefix = posixpath.commonprefix(list(files))
        root = prefix[: prefix.rfind("/")] if "/" in prefix else ""
    return root, [name[len(root):].lstrip("/") if root else name for name in files]


def file_manifest(spark, files: Sequence[str]) -> Dict[str, Any]:
    """``{"root": common folder, "files": [{"path": relative, "size", "sha256"}]}`` for
    ``files`` (URIs, as ``DataFrame.inputFiles()`` names them), hashed where Spark reads
    them."""
    from sparkml_aiaas.server_tasks import run_where_paths_are

    files = sorted(set(files))
    hashes = run_where_paths_are(spark, hash_files, files) if files else []
    root, names = _relative(files)
    return {"root": root, "files": [{"path": name, "size": size, "sha256": sha}
                                    for name, (size, sha) in zip(names, hashes)]}


def input_record(spark, settings: Mapping[str, Any], data_source: Mapping[str, Any]
                 ) -> Dict[str, Any]:
    """What a train job read: ``path``, ``format``; for Delta the ``delta_version``; for
    files the :func:`file_manifest` of the files its path lists now (just after the read,
    as the job's fingerprint is taken)."""
    from sparkml_aiaas.spark_env import is_connect

    path = settings.get("path")
    if isinstance(path, str) and "://" not in path and not path.startswith("file:") \
            and not is_connect(spark):
        # Relative to the job's folder, which is not where reproduce may run.  (On Spark
        # Connect it is the server's folder, unknown here: kept as given.)
        path = os.path.abspath(path)
    record = {"path": path, "format": settings.get("format"),
              "delta_version": data_source.get("delta_version"), "manifest": None}
    if record["format"] != "delta":
        from sparkml_aiaas.data.ingest_job import source_files

        record["manifest"] = file_manifest(spark, source_files(spark, record["path"]))
    return record


def check_input(spark, recorded: Mapping[str, Any]) -> List[str]:
    """Why the recorded input cannot be read as it was ([] when it can): each file gone,
    added or changed (by content), or a Delta version that is no longer readable."""
    path = recorded.get("path")
    if recorded.get("format") == "delta":
        return _check_delta(spark, path, recorded.get("delta_version"))
    from sparkml_aiaas.data.ingest_job import source_files
    from sparkml_aiaas.errors import SparkmlAiaasError

    manifest = recorded.get("manifest") or {}
    try:
        files = source_files(spark, path)
    except SparkmlAiaasError as exc:
        return [f"input {path!r} cannot be listed: {str(exc).splitlines()[0]}"]
    except Exception as exc:  # noqa: BLE001 - Spark's AnalysisException for a missing path
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return [f"input {path!r} is gone ({first[:200]})"]
    now = file_manifest(spark, files)
    was = {entry["path"]: entry for entry in manifest.get("files") or []}
    here = {entry["path"]: entry for entry in now["files"]}
    problems = []
    for name in sorted(set(was) - set(here)):
        problems.append(f"input file gone: {name}")
    for name in sorted(set(here) - set(was)):
        problems.append(f"new input file: {name} (not among the {len(was)} recorded)")
    for name in sorted(set(was) & set(here)):
        before, after = was[name], here[name]
        if before["sha256"] != after["sha256"]:
            size = (f"; size {before['size']} -> {after['size']} bytes"
                    if before["size"] != after["size"] else "; same size")
            problems.append(f"input file changed: {name} (content differs{size})")
    return problems


def _check_delta(spark, path: str, version: Optional[int]) -> List[str]:
    from sparkml_aiaas.data.delta import read_table, table_version

    if version is None:
        return [f"the Delta version read from {path!r} was not recorded"]
    try:
        latest = table_version(spark, path)
    except Exception as exc:  # noqa: BLE001 - gone, not a table, no permission
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return [f"Delta table {path!r} cannot be read: {first[:200]}"]
    if latest < version:
        return [f"Delta table {path!r} is at version {latest}; the model was trained on "
                f"version {version} (was the table re-created?)"]
    try:
        read_table(spark, path, format="delta", version=version).schema  # noqa: B018
    except Exception as exc:  # noqa: BLE001 - version vacuumed or history truncated
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return [f"Delta table {path!r} version {version} cannot be read any more "
                f"(vacuumed?): {first[:200]}"]
    return []


# --------------------------------------------------------------------------- the record
def family_of(model_class: str) -> str:
    """``linear``, ``torch``, ``xgboost`` (forests too) or ``sklearn`` from a model class
    path such as ``sparkml_aiaas.models.torch.TorchClassificationModel``."""
    module = model_class.rsplit(".", 1)[0]
    return {"sparkml_aiaas.models.linear": "linear", "sparkml_aiaas.models.torch": "torch",
            "sparkml_aiaas.models.xgboost": "xgboost",
            "sparkml_aiaas.models.sklearn": "sklearn"}.get(module, "other")


def training_record(spark, config: Mapping[str, Any], data_source: Mapping[str, Any],
                    model, blocks: Optional[int]) -> Dict[str, Any]:
    """The provenance of a train job's model: ``config`` is the job's (redacted) config as
    a dict, ``data_source`` what the job recorded of its input, ``blocks`` the number of
    training blocks (None when the family has none)."""
    seed = None
    if model.hasParam("seed") and model.isDefined(model.getParam("seed")):
        seed = model.getOrDefault(model.getParam("seed"))
    model_class = f"{type(model).__module__}.{type(model).__name__}"
    return {"format": PROVENANCE_FORMAT, "kind": "train_job", "config": dict(config),
            "model_class": model_class, "family": family_of(model_class),
            "seed": seed, "blocks": blocks,
            "input": input_record(spark, config.get("input") or {}, data_source),
            "environment": environment()}
