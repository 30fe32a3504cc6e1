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

The sha256 entries detect corruption (a truncated copy, a flipped bit), not
tampering: metadata.json itself is covered by nothing, and whoever can edit it
can rewrite the hashes.  So every reader treats the directory as untrusted
input: damage of any kind is a :class:`ModelFormatError`, and nothing it names
is imported unless the loading side allowlisted it
(:mod:`sparkml_aiaas.models.trust`).  Registry signing (HMAC over a version's
files) is what detects tampering.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
import zipfile
import zlib
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from sparkml_aiaas import __version__
from sparkml_aiaas.atomic import atomic_directory
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
    # Built beside the target and renamed onto it (an old model moved aside first), or
    # removed on any error: readers see the old model or the new one, never half of one.
    with atomic_directory(target) as staging:
        os.makedirs(staging, mode=0o700)  # the mode mkdtemp gave it before
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
    return full


def read_metadata_json(meta_path: str) -> Dict[str, Any]:
    """A JSON object from a metadata file; :class:`ModelFormatError` for anything else
    (bytes that are not UTF-8, invalid JSON, an array or a number)."""
    with open(meta_path, "rb") as f:
        data = f.read()
    try:
        metadata = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ModelFormatError(f"{meta_path} is not UTF-8 text: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ModelFormatError(f"{meta_path} is not valid JSON: {exc}") from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer of 5000 digits
        raise ModelFormatError(f"{meta_path} cannot be read as JSON: {exc}") from None
    if not isinstance(metadata, dict):
        raise ModelFormatError(f"{meta_path} holds a JSON {type(metadata).__name__}, not an "
                               "object")
    return metadata


def read_artifact(path: str) -> Tuple[Dict[str, Any], Dict[str, np.ndarray]]:
    """Read and verify a model directory: ``(metadata, arrays)``.

    Raises :class:`ModelFormatError` for every kind of damage: a missing or extra-short
    file, bytes that do not parse, a checksum mismatch, an unknown format version.
    """
    root = local_path(path)
    meta_path = os.path.join(root, METADATA_FILE)
    if not os.path.isdir(root):
        raise ModelFormatError(f"no model at {path!r}: the directory does not exist")
    if not os.path.isfile(meta_path):
        raise ModelFormatError(f"no model at {path!r}: {METADATA_FILE} is missing")
    metadata = read_metadata_json(meta_path)
    version = metadata.get("format_version")
    if isinstance(version, bool) or version not in SUPPORTED_FORMAT_VERSIONS:
        raise ModelFormatError(
            f"model at {path!r} has format_version {_shown(version)}; this sparkml_aiaas "
            f"({__version__}) reads {list(SUPPORTED_FORMAT_VERSIONS)}: upgrade the package"
        )
    files = metadata.get("files")
    if not isinstance(files, dict) or not all(
            isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
            for entry in files.values()):
        raise ModelFormatError(f"model at {path!r}: {METADATA_FILE} has no valid 'files' "
                               "table of sha256 checksums")
    expected = files.get(ARRAYS_FILE, {}).get("sha256")
    # Read once: the bytes that were checked are the bytes that are parsed.
    raw = _verified_bytes(path, root, ARRAYS_FILE, expected)
    return metadata, read_arrays(raw, f"model at {path!r}: {ARRAYS_FILE}")


#: What numpy and zipfile raise for bytes that are not a well-formed npz of plain arrays.
_NPZ_ERRORS = (zipfile.BadZipFile, zlib.error, ValueError, EOFError, OSError, KeyError,
               TypeError, OverflowError, NotImplementedError, SyntaxError, IndexError,
               RuntimeError)  # zipfile: "is encrypted, password required"


def read_arrays(raw: bytes, where: str) -> Dict[str, np.ndarray]:
    """The arrays of npz bytes, never unpickling: object arrays, headers declaring more data
    than the member holds, and unreadable zips are :class:`ModelFormatError`."""
    arrays = {}
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            for info in archive.infolist():
                name = info.filename
                if not name.endswith(".npy") or info.is_dir():
                    raise ModelFormatError(f"{where} holds {name!r}, which is not a .npy member")
                data = archive.read(info)  # checks the member's CRC
                member = io.BytesIO(data)
                version = np.lib.format.read_magic(member)
                if version not in ((1, 0), (2, 0)):
                    raise ModelFormatError(f"{where}: {name} has .npy version {version}")
                header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                          else np.lib.format.read_array_header_2_0)
                shape, _, dtype = header(member)
                if dtype.hasobject:
                    raise ModelFormatError(f"{where}: {name} holds Python objects (pickle), "
                                           "which are never loaded")
                count = int(np.prod(shape, dtype=object)) if shape else 1
                if count * dtype.itemsize != len(data) - member.tell():
                    raise ModelFormatError(
                        f"{where}: {name} declares shape {shape} of {dtype} but holds "
                        f"{len(data) - member.tell()} bytes of data")
                member.seek(0)
                arrays[name[:-len(".npy")]] = np.lib.format.read_array(member, allow_pickle=False)
    except ModelFormatError:
        raise
    except _NPZ_ERRORS as exc:
        raise ModelFormatError(f"{where} is not a readable npz file of arrays "
                               f"({type(exc).__name__}: {exc})") from None
    return arrays


def _shown(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


# ------------------------------------------------------------------ reading spec fields
# A metadata.json may have been edited: every field a reader uses is checked for its JSON
# type here, so that a wrong one is a ModelFormatError naming it, not a KeyError or
# TypeError deep inside a predictor.

def predictor_section(metadata: Mapping[str, Any], family: str = None) -> Dict[str, Any]:
    """``metadata["predictor"]`` as a dict (of ``family`` when given)."""
    spec = metadata.get("predictor") if isinstance(metadata, Mapping) else None
    if not isinstance(spec, dict) or not spec:
        raise ModelFormatError("model metadata has no 'predictor' section")
    if family is not None and spec.get("family") != family:
        raise ModelFormatError(f"model metadata has no {family} 'predictor' section (family "
                               f"{_shown(spec.get('family'))})")
    return spec


def as_int(value: Any, what: str, minimum: int = None) -> int:
    """An integer field (JSON ``2`` or ``2.0``; not a bool, a string or a fraction)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ModelFormatError(f"model metadata field {what} must be an integer, got "
                               f"{_shown(value)}")
    if minimum is not None and value < minimum:
        raise ModelFormatError(f"model metadata field {what} must be >= {minimum}, got {value}")
    return int(value)


def as_float(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ModelFormatError(f"model metadata field {what} must be a number, got "
                               f"{_shown(value)}")
    return float(value)


def int_list(value: Any, what: str, minimum: int = None) -> List[int]:
    if not isinstance(value, (list, tuple)):
        raise ModelFormatError(f"model metadata field {what} must be a list of integers, got "
                               f"{_shown(value)}")
    return [as_int(v, f"{what}[{i}]", minimum) for i, v in enumerate(value)]


def str_list(value: Any, what: str) -> Optional[List[str]]:
    """A list of non-empty strings, or None for a missing/empty one."""
    if value is None or value == []:
        return None
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise ModelFormatError(f"model metadata field {what} must be a list of column names, "
                               f"got {_shown(value)}")
    return list(value)


def name_map(value: Any, what: str) -> Dict[str, str]:
    """A ``{str: str}`` renaming (None: no renames)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) and v for k, v in value.items()):
        raise ModelFormatError(f"model metadata field {what} must map names to names, got "
                               f"{_shown(value)}")
    return dict(value)


def checked_signature(value: Any, what: str = "signature") -> Dict[str, Any]:
    """A saved input signature ``{"inputs": [{"name": str, "type": str}, ...], ...}``
    (None: empty)."""
    signature = value or {}
    inputs = signature.get("inputs", []) if isinstance(signature, dict) else None
    if not isinstance(inputs, list) or not all(
            isinstance(c, dict) and isinstance(c.get("name"), str)
            and isinstance(c.get("type", ""), str) for c in inputs):
        raise ModelFormatError(f"model metadata has a malformed {what}: {_shown(signature)}")
    return dict(signature)


def feature_inputs(feature_cols: Any, vector_col: Any, what: str,
                   exactly_one: bool = True) -> Tuple[Optional[List[str]], Optional[str]]:
    """``(feature_cols, vector_col)`` checked: columns are names; with ``exactly_one`` one of
    the two is given, otherwise at least one (the columns win)."""
    cols = str_list(feature_cols, "feature_cols")
    if vector_col is not None and (not isinstance(vector_col, str) or not vector_col):
        raise ModelFormatError(f"model metadata field vector_col must be a column name, got "
                               f"{_shown(vector_col)}")
    vector = vector_col or None
    if exactly_one and bool(cols) == bool(vector):
        raise ModelFormatError(f"{what} needs exactly one of feature_cols or vector_col")
    if not cols and not vector:
        raise ModelFormatError(f"{what} needs feature_cols or vector_col")
    return cols, vector


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
    try:
        _check_file_name(name)
    except SparkmlAiaasError as exc:  # a file name read from (maybe edited) metadata
        raise ModelFormatError(f"model at {path!r}: {exc}") from None
    if metadata is None:
        metadata, _ = read_artifact(path)
    files = metadata.get("files")
    entry = files.get(name) if isinstance(files, dict) else None
    expected = entry.get("sha256") if isinstance(entry, dict) else None
    if not isinstance(expected, str):
        raise ModelFormatError(f"model at {path!r} lists no file {name!r} in {METADATA_FILE}")
    return _verified_bytes(path, root, name, expected)
