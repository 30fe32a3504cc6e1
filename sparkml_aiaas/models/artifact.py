"""The on-disk model format, readable without Spark.

A saved model is a directory::

    metadata.json        class, params, format_version, signature, training record,
                         and the sha256 of every array file
    arrays.npz           learned arrays (numpy's open zip-of-.npy format, loaded
                         with allow_pickle=False: loading never runs code)
    <name>               optional extra files in open formats (e.g. an XGBoost UBJ
                         booster, a skops file), checksummed in metadata.json
    metadata/part-00000  class, uid and params on one line, where pyspark.ml's
                         Pipeline reader looks for a stage's class name

Writes are atomic on a local filesystem: the directory is assembled under a
temporary name beside the target and renamed into place, so a crash never
leaves a directory that looks complete.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
import time
from typing import Any, Dict, Mapping, Tuple

import numpy as np

from sparkml_aiaas import __version__
from sparkml_aiaas.errors import ModelFormatError, SparkmlAiaasError

#: Bump when the layout or the meaning of a field changes; readers refuse
#: versions they do not know rather than guess.
FORMAT_VERSION = 1
SUPPORTED_FORMAT_VERSIONS = (1,)

METADATA_FILE = "metadata.json"
ARRAYS_FILE = "arrays.npz"
SPARK_METADATA_DIR = "metadata"


def local_path(path: str) -> str:
    """Accept plain paths and ``file:`` URIs; refuse other schemes with a clear error."""
    if path.startswith("file://"):
        return path[len("file://"):]
    if path.startswith("file:"):
        return path[len("file:"):]
    if "://" in path:
        raise SparkmlAiaasError(
            f"model path {path!r}: only local paths (or file: URIs) are supported for model "
            "artifacts; on Databricks use the /dbfs/... FUSE path"
        )
    return path


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _to_json(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to model metadata")


def _check_file_name(name: str) -> str:
    if (not isinstance(name, str) or not name or name != os.path.basename(name)
            or name.startswith(".") or name in (METADATA_FILE, ARRAYS_FILE, SPARK_METADATA_DIR)):
        raise SparkmlAiaasError(
            f"artifact file name {name!r} is not allowed: a plain file name, not starting with "
            f"'.', other than {METADATA_FILE}, {ARRAYS_FILE} and {SPARK_METADATA_DIR}")
    return name


def write_artifact(path: str, metadata: Mapping[str, Any], arrays: Mapping[str, np.ndarray],
                   overwrite: bool = False, files: Mapping[str, bytes] = None,
                   compress: bool = False) -> Dict[str, Any]:
    """Write a model directory atomically; returns the metadata as written.

    ``metadata`` must hold at least ``class``; this function adds
    ``format_version``, ``sparkml_aiaas_version``, ``timestamp``, every
    file's sha256 and a ``model_id`` (digest of the files and the params).

    ``files`` are extra named files in open formats (an XGBoost UBJ booster,
    a skops file...), checksummed like the arrays and read back, verified,
    with :func:`read_artifact_file`.  ``compress`` writes ``arrays.npz``
    deflated (``np.savez_compressed``): worth it for sparse or int8 weights.
    """
    for name in files or {}:
        _check_file_name(name)
    target = os.path.abspath(local_path(path))
    if os.path.exists(target) and not overwrite:
        raise SparkmlAiaasError(
            f"model path {path!r} already exists; use model.write().overwrite().save(path) "
            "to replace it"
        )
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.tmp-", dir=parent)
    try:
        buffer = io.BytesIO()
        save = np.savez_compressed if compress else np.savez
        save(buffer, **{k: np.asarray(v) for k, v in arrays.items()})
        with open(os.path.join(staging, ARRAYS_FILE), "wb") as f:
            f.write(buffer.getvalue())
        arrays_sha = hashlib.sha256(buffer.getvalue()).hexdigest()
        full = dict(metadata)
        full["format_version"] = FORMAT_VERSION
        full["sparkml_aiaas_version"] = __version__
        full["timestamp"] = int(time.time() * 1000)
        full["files"] = {ARRAYS_FILE: {"sha256": arrays_sha}}
        extra_shas = ""
        for name in sorted(files or {}):
            data = bytes(files[name])
            with open(os.path.join(staging, name), "wb") as f:
                f.write(data)
            full["files"][name] = {"sha256": hashlib.sha256(data).hexdigest()}
            extra_shas += name + full["files"][name]["sha256"]
        params_json = json.dumps(full.get("paramMap", {}), sort_keys=True, default=_to_json)
        full["model_id"] = hashlib.sha256(
            (full["class"] + params_json + arrays_sha + extra_shas).encode()
        ).hexdigest()[:16]
        text = json.dumps(full, indent=2, sort_keys=True, default=_to_json)
        with open(os.path.join(staging, METADATA_FILE), "w") as f:
            f.write(text + "\n")
        os.makedirs(os.path.join(staging, SPARK_METADATA_DIR))
        # pyspark.ml's Pipeline reader only needs the class, uid and params from here (it
        # then calls our class's load, which reads metadata.json): the rest would only
        # double the metadata's bytes, which matters for compressed models of a few kB.
        spark_keys = ("class", "uid", "paramMap", "defaultParamMap", "timestamp",
                      "format_version", "model_id", "sparkml_aiaas_version")
        with open(os.path.join(staging, SPARK_METADATA_DIR, "part-00000"), "w") as f:
            f.write(json.dumps({k: full[k] for k in spark_keys if k in full}, sort_keys=True,
                               default=_to_json) + "\n")
        if os.path.exists(target):
            # Move the old one aside first so the rename below stays atomic.
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.old-", dir=parent)
            os.rename(target, os.path.join(old, "model"))
            os.rename(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return full


def read_artifact(path: str) -> Tuple[Dict[str, Any], Dict[str, np.ndarray]]:
    """Read and verify a model directory: ``(metadata, arrays)``."""
    root = local_path(path)
    meta_path = os.path.join(root, METADATA_FILE)
    if not os.path.isdir(root):
        raise ModelFormatError(f"no model at {path!r}: the directory does not exist")
    if not os.path.isfile(meta_path):
        raise ModelFormatError(f"no model at {path!r}: {METADATA_FILE} is missing")
    try:
        with open(meta_path) as f:
            metadata = json.load(f)
    except json.JSONDecodeError as exc:
        raise ModelFormatError(f"{meta_path} is not valid JSON: {exc}") from None
    version = metadata.get("format_version")
    if version not in SUPPORTED_FORMAT_VERSIONS:
        raise ModelFormatError(
            f"model at {path!r} has format_version {version!r}; this sparkml_aiaas "
            f"({__version__}) reads {list(SUPPORTED_FORMAT_VERSIONS)}: upgrade the package"
        )
    expected = metadata.get("files", {}).get(ARRAYS_FILE, {}).get("sha256")
    # Read once: the bytes that were checked are the bytes that are parsed.
    raw = _verified_bytes(path, root, ARRAYS_FILE, expected)
    with np.load(io.BytesIO(raw), allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    return metadata, arrays


def _verified_bytes(path: str, root: str, name: str, expected: Any) -> bytes:
    """The bytes of ``root/name`` if their sha256 is ``expected``; else an error naming it."""
    full = os.path.join(root, name)
    if not os.path.isfile(full):
        raise ModelFormatError(f"model at {path!r} is incomplete: {name} is missing")
    with open(full, "rb") as f:
        data = f.read()
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise ModelFormatError(
            f"model at {path!r}: checksum mismatch for {name} (expected {expected}, found "
            f"{actual}); the file was modified or corrupted")
    return data


def read_artifact_file(path: str, name: str, metadata: Mapping[str, Any] = None) -> bytes:
    """The bytes of an extra file of a model directory, after checking its sha256.

    ``metadata`` is what :func:`read_artifact` returned (read again when omitted).
    """
    root = local_path(path)
    _check_file_name(name)
    if metadata is None:
        metadata, _ = read_artifact(path)
    expected = metadata.get("files", {}).get(name, {}).get("sha256")
    if expected is None:
        raise ModelFormatError(f"model at {path!r} lists no file {name!r} in {METADATA_FILE}")
    return _verified_bytes(path, root, name, expected)
