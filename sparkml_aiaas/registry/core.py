"""A file-based model registry: numbered, checksummed, optionally signed model versions.

Layout under the registry root (see ``docs/registry.md``)::

    <root>/<name>/allocated/<n>               empty marker: version n was handed out (kept forever)
    <root>/<name>/versions/<n>/registry.json  metadata: params, metrics, sha256 of every file
    <root>/<name>/versions/<n>/registry.json.sig   HMAC-SHA-256 of the metadata (signed registries)
    <root>/<name>/versions/<n>/model/         the saved model artifact (models/artifact.py format)
    <root>/<name>/versions/<n>/preprocessor/  the fitted PreprocessorModel, when registered with one
    <root>/<name>/aliases/<alias>             {"version": n, ...}, replaced atomically
    <root>/<name>/reproductions/<n>/<time>.json   reports of ``reproduce`` runs of version n
                                              (beside the version: it stays as registered)
    <root>/<name>/.staging/, .trash/          in-flight registrations and deletions (leftovers
                                              of crashed ones are swept after 24 h)

This module imports no pyspark: :meth:`ModelRegistry.load_predictor` serves
Spark-free processes; :meth:`ModelRegistry.load` imports the Spark reader lazily.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

from sparkml_aiaas import __version__
from sparkml_aiaas.core.pii import MIN_KEY_BYTES, key_id, load_key
from sparkml_aiaas.errors import ConfigError, ModelFormatError, SparkmlAiaasError
from sparkml_aiaas.models.artifact import METADATA_FILE, local_path, read_artifact
from sparkml_aiaas.registry.storage import LocalStorage, Storage, storage_for

__all__ = [
    "DEFAULT_KEY_ENV",
    "ModelNotFoundError",
    "ModelRegistry",
    "ModelVersion",
    "parse_ref",
    "validate_alias",
    "validate_name",
]

#: Environment variable holding the registry signing key (when no key file is named).
DEFAULT_KEY_ENV = "SPARKML_AIAAS_REGISTRY_KEY"
#: Bumped when the layout or the meaning of a registry.json field changes.
REGISTRY_FORMAT = 1

META_FILE = "registry.json"
SIG_FILE = "registry.json.sig"
MODEL_DIR = "model"
PREPROCESSOR_DIR = "preprocessor"
#: The registry's own files in a version directory (not part of the model it stores).
CONTROL_FILES = (META_FILE, SIG_FILE)
#: Entries of ``.staging/`` and ``.trash/`` older than this are leftovers of crashed
#: processes, removed by the next registration of the same name.
STALE_AFTER_SECONDS = 24 * 3600

#: Model names and aliases: matched against the *whole* string (``fullmatch``: ``$``
#: would also match before a trailing newline), ASCII only (``[0-9]``, never ``\d``).
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
#: Version numbers in refs and arguments: ASCII digits (``int()`` and ``str.isdigit()``
#: also take ``²``, ``١``...), at most 18 of them (below 2**63, and far below the digit
#: count at which ``int()`` refuses a string).
_VERSION_RE = re.compile(r"[0-9]{1,18}")
#: Version directories the registry writes (``str(n)``): canonical, no leading zero.
_VERSION_DIR_RE = re.compile(r"[1-9][0-9]{0,17}")
_NAME_RULE = ("use 1-128 characters of letters, digits, '.', '_', '-' (ASCII), starting with "
              "a letter or digit, without '..' or path separators")


class ModelNotFoundError(SparkmlAiaasError, LookupError):
    """The named model, version or alias is not in the registry."""


# --------------------------------------------------------------------------- names and refs
def _show(value: Any) -> str:
    """``repr(value)`` for an error message, cut short when it is long (still one line)."""
    text = repr(value)
    if len(text) <= 80:
        return text
    size = f" ({len(value)} characters)" if isinstance(value, str) else ""
    return f"{text[:60]}...{size}"


def _is_valid_name(value: Any) -> bool:
    """True when ``value`` is a valid model name or alias (see :func:`validate_name`)."""
    return isinstance(value, str) and _NAME_RE.fullmatch(value) is not None and ".." not in value


def validate_name(value: Any, what: str = "model name") -> str:
    """Return ``value`` when it is a valid model name; else raise :class:`ConfigError`.

    Valid: 1-128 characters of ASCII ``[A-Za-z0-9._-]``, starting with a letter
    or digit, without ``..`` (so a name never escapes the registry root), matched
    against the whole string (no trailing newline).
    """
    if not _is_valid_name(value):
        raise ConfigError(f"invalid {what} {_show(value)}: {_NAME_RULE}")
    return value


def validate_alias(value: Any) -> str:
    """Like :func:`validate_name`, and not all digits (``name/3`` is a version, not an alias)."""
    validate_name(value, what="alias")
    if re.fullmatch(r"[0-9]+", value):
        raise ConfigError(f"invalid alias {_show(value)}: an alias must not be all digits "
                          "(it would read as a version number)")
    return value


def _version_number(text: str) -> Optional[int]:
    """The positive version number ``text`` spells in ASCII digits, else None."""
    if not _VERSION_RE.fullmatch(text):
        return None
    number = int(text)
    return number if number >= 1 else None


def _version_dirs(entries: List[str]) -> List[int]:
    """The version numbers among directory entry names (anything else is ignored)."""
    return [int(n) for n in entries if _VERSION_DIR_RE.fullmatch(n)]


def _validate_version(value: Any) -> int:
    if isinstance(value, str):
        number = _version_number(value)
        if number is None:
            raise ConfigError(f"invalid version {_show(value)}: expected a positive integer "
                              "(at most 18 ASCII digits)")
        return number
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"invalid version {_show(value)}: expected a positive integer")
    return value


def parse_ref(ref: str) -> Tuple[str, Optional[int], Optional[str]]:
    """Split a model reference into ``(name, version, alias)``.

    ``"name"`` (the latest version) gives ``(name, None, None)``;
    ``"name/3"`` gives ``(name, 3, None)``; ``"name@production"`` gives
    ``(name, None, "production")``.  Every part is validated.

    Raises
    ------
    ConfigError
        An invalid name, version or alias, naming the bad value.
    """
    if not isinstance(ref, str) or not ref:
        raise ConfigError(f"invalid model reference {_show(ref)}: expected name, name/VERSION "
                          "or name@ALIAS")
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return validate_name(name), None, validate_alias(alias)
    if "/" in ref:
        name, version = ref.split("/", 1)
        validate_name(name)
        number = _version_number(version)
        if number is None:
            raise ConfigError(f"invalid model reference {_show(ref)}: version {_show(version)} is "
                              "not a positive integer (at most 18 ASCII digits)")
        return name, number, None
    return validate_name(ref), None, None


# --------------------------------------------------------------------------- helpers
def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def _json_default(value: Any) -> Any:
    try:
        import numpy as np

        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
    except ImportError:  # pragma: no cover
        pass
    if hasattr(value, "model_dump"):  # pydantic config models
        return value.model_dump(mode="json")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _jsonable(value: Any, what: str) -> Any:
    """``value`` as plain JSON types (so it round-trips through registry.json unchanged)."""
    if value is None:
        return None
    try:
        return json.loads(json.dumps(value, default=_json_default))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what} cannot be stored in the registry: {exc}") from None


def canonical_json(metadata: Mapping[str, Any]) -> bytes:
    """The bytes that are signed: sorted keys, no whitespace, ASCII."""
    return json.dumps(metadata, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=True).encode("ascii")


def content_digest(files: Mapping[str, str]) -> str:
    """sha256 over the sorted ``relative path<TAB>sha256`` lines: the version's content id."""
    lines = "".join(f"{rel}\t{files[rel]}\n" for rel in sorted(files))
    return hashlib.sha256(lines.encode("utf-8")).hexdigest()


def _git_commit() -> Optional[str]:
    """The git commit of this package's checkout (``+dirty`` with uncommitted changes);
    None for an installed wheel (never raises)."""
    from sparkml_aiaas.registry.provenance import git_commit

    return git_commit()


def _resolve_key(key: Optional[bytes], key_env: Optional[str],
                 key_file: Optional[str]) -> Optional[bytes]:
    given = [s for s in (key is not None, key_env is not None, key_file is not None) if s]
    if len(given) > 1:
        raise ConfigError("give the registry signing key as key, key_env or key_file, not several")
    if key is not None:
        key = key.encode("utf-8") if isinstance(key, str) else bytes(key)
        if len(key) < MIN_KEY_BYTES:
            raise ConfigError(f"the registry signing key is {len(key)} bytes; at least "
                              f"{MIN_KEY_BYTES} are needed")
        return key
    if key_file is not None:
        return load_key(None, key_file)
    name = key_env or DEFAULT_KEY_ENV
    if os.environ.get(name):
        return load_key(name, None)
    if key_env is not None:
        raise ConfigError(f"registry signing was requested with key_env={key_env!r} but the "
                          "environment variable is unset or empty")
    return None


# --------------------------------------------------------------------------- ModelVersion
@dataclass
class ModelVersion:
    """One registered, verified model version.

    Attributes
    ----------
    name, version : the model's name and version number
    path : str
        Local path of the saved model artifact (``versions/<n>/model``): pass it
        to :func:`sparkml_aiaas.models.load_model` or ``load_predictor``.
    digest : str
        sha256 over every file of the version (content identity; a cache key).
    metadata : dict
        The version's ``registry.json``.
    aliases : list of str
        Aliases currently pointing at this version.
    """

    name: str
    version: int
    path: str
    digest: str
    metadata: Dict[str, Any]
    aliases: List[str] = field(default_factory=list)

    @property
    def ref(self) -> str:
        return f"{self.name}/{self.version}"

    @property
    def bundle_path(self) -> str:
        """Local path of the version directory (``model/`` [+ ``preprocessor/``])."""
        return os.path.dirname(self.path)

    @property
    def preprocessor_path(self) -> Optional[str]:
        """Local path of the registered fitted preprocessor, or None."""
        if not self.metadata.get("preprocessor"):
            return None
        return os.path.join(os.path.dirname(self.path), PREPROCESSOR_DIR)

    @property
    def predictor_path(self) -> str:
        """What a predictor loads: the bundle when a preprocessor was registered (raw columns
        in), else the model directory."""
        return self.bundle_path if self.preprocessor_path else self.path


def _split_pipeline(model: Any, preprocessor: Any) -> Tuple[Any, Any]:
    """``(model, preprocessor)`` of a ``PipelineModel`` [PreprocessorModel, model] (object or
    saved path); anything else is returned as given."""
    stages = None
    if type(model).__name__ == "PipelineModel" and hasattr(model, "stages"):
        stages = list(model.stages)
        names = [type(stage).__name__ for stage in stages]
    elif isinstance(model, (str, os.PathLike)):
        from sparkml_aiaas.models.pipeline_predictor import _stage_dirs, is_saved_pipeline

        path = local_path(os.fspath(model))
        if is_saved_pipeline(path):
            stages = _stage_dirs(path)
            names = []
            for stage in stages:
                try:
                    names.append(read_artifact(stage)[0].get("class", "").rsplit(".", 1)[-1])
                except ModelFormatError:
                    names.append(os.path.basename(stage).split("_", 1)[-1])
    if stages is None:
        return model, preprocessor
    if len(stages) == 1:
        return stages[0], preprocessor
    if len(stages) != 2 or names[0] != "PreprocessorModel" or preprocessor is not None:
        raise ConfigError(
            f"a PipelineModel can be registered when it is one PreprocessorModel followed by one "
            f"of our models (got stages {names}"
            + (", and preprocessor= too" if preprocessor is not None else "") + "); register "
            "other pipelines' final model with preprocessor= its fitted preprocessor")
    return stages[1], stages[0]


# --------------------------------------------------------------------------- registry
class ModelRegistry:
    """Numbered, checksummed (optionally HMAC-signed) model versions under one root folder.

    Parameters
    ----------
    root : str
        A local folder or ``file:`` URI (created on first registration).
    key : bytes, optional
        Signing key.  Default: read from ``key_file`` when given, else from the
        environment variable ``key_env`` (default ``SPARKML_AIAAS_REGISTRY_KEY``)
        when it is set.  With a key, registrations are signed and loading
        refuses unsigned or badly signed versions; without one, checksums are
        verified but signatures are not (see ``docs/registry.md``).
    key_env, key_file : str, optional
        Where the key is (see :func:`sparkml_aiaas.core.pii.load_key`).

    Examples
    --------
    >>> registry = ModelRegistry("/mnt/models")                          # doctest: +SKIP
    >>> v = registry.register(model, "breast_cancer", metrics={"auc": 0.99})  # doctest: +SKIP
    >>> registry.set_alias("breast_cancer", "production", v)            # doctest: +SKIP
    >>> registry.load_predictor("breast_cancer@production").predict(pdf)  # doctest: +SKIP
    """

    def __init__(self, root: str, *, key: Optional[bytes] = None, key_env: Optional[str] = None,
                 key_file: Optional[str] = None, storage: Optional[Storage] = None):
        if storage is None:
            storage, path = storage_for(root)
        else:
            # An explicit storage decides what its roots look like (HadoopStorage
            # keeps the URI; LocalStorage strips file: and makes the path absolute).
            path = storage.normalize_root(root)
        self.storage: Storage = storage
        self.root = path
        self._key = _resolve_key(key, key_env, key_file)

    def __repr__(self) -> str:
        return f"ModelRegistry({self.root!r}, signed={self.signed})"

    @property
    def signed(self) -> bool:
        """True when a signing key is configured."""
        return self._key is not None

    # ------------------------------------------------------------------ paths
    def _model_dir(self, name: str) -> str:
        return self.storage.join(self.root, validate_name(name))

    def _version_dir(self, name: str, version: int) -> str:
        return self.storage.join(self._model_dir(name), "versions", str(version))

    def _alias_file(self, name: str, alias: str) -> str:
        return self.storage.join(self._model_dir(name), "aliases", validate_alias(alias))

    # ------------------------------------------------------------------ register
    def register(self, model: Any, name: str, *, metrics: Optional[Mapping[str, Any]] = None,
                 params: Optional[Mapping[str, Any]] = None, config: Any = None,
                 data_source: Any = None, preprocessor: Any = None,
                 description: Optional[str] = None, trusted_factories=None,
                 provenance: Optional[Mapping[str, Any]] = None) -> int:
        """Store a fitted model (or a saved model directory) as the next version of ``name``.

        Parameters
        ----------
        model : fitted model with ``.write()``, ``PipelineModel`` or str
            One of our models (e.g. ``LogisticRegressionModel``) or the path of
            a saved model directory (verified before it is copied); or a fitted
            ``PipelineModel`` (object or saved path) of one ``PreprocessorModel``
            followed by one of our models, stored as preprocessor + model.
        name : str
            Model name (see :func:`validate_name`).
        metrics, params : mapping, optional
            Stored as given; ``params`` defaults to the model's saved param map.
        config : mapping or pydantic model, optional
            The training configuration (stored as JSON).  Default: the train job's
            config recorded in the model's metadata (``training_job``), if any.
        data_source : any JSON value, optional
            Where the training data came from (path, table, snapshot version...).
            Default: what the train job recorded in the model's metadata, if any.
        preprocessor : fitted ``PreprocessorModel`` or str, optional
            Copied in beside the model (``preprocessor/``); its digest is recorded.
            The model must read its output column.  :meth:`load` then returns
            the two as a ``PipelineModel``, :meth:`load_predictor` and batch
            scoring run both (raw columns in, predictions out).
        description : str, optional
        trusted_factories : list of str, optional
            Torch factories the model may name, for the check that a preprocessor and
            model chain (a fitted model object's own factory is trusted already).
        provenance : mapping, optional
            What :meth:`reproduce` needs (see :mod:`~sparkml_aiaas.registry.provenance`).
            Default: the one a train job recorded in the model's metadata, if any;
            without one the version is stored but cannot be reproduced.

        Returns
        -------
        int
            The new version number: increasing from 1, never reused, distinct
            across concurrent registering processes.
        """
        validate_name(name)
        model, preprocessor = _split_pipeline(model, preprocessor)
        fs = self.storage
        model_dir = self._model_dir(name)
        for sub in ("allocated", "versions", "aliases", ".staging"):
            fs.makedirs(fs.join(model_dir, sub))
        self._sweep_stale(name)
        staging = fs.staging_dir(fs.join(model_dir, ".staging"), "reg-")
        remote, remote_staging = fs, staging
        if not remote.is_local:
            # Our artifact writers and readers need local paths: build the version on
            # local disk (fs/staging below), then copy it up into remote_staging in one piece.
            fs, staging = LocalStorage(), tempfile.mkdtemp(prefix="sparkml_aiaas_registry-")
        try:
            self._stage_artifact(model, fs.join(staging, MODEL_DIR), "model")
            try:
                model_meta, _ = read_artifact(fs.local_path(fs.join(staging, MODEL_DIR)))
            except ModelFormatError as exc:
                raise ModelFormatError(
                    f"cannot register {type(model).__name__}: only sparkml_aiaas models "
                    f"(saved in its artifact format) can be registered ({exc})") from None
            if model_meta.get("class", "").endswith(".PreprocessorModel"):
                raise ConfigError("register() got a PreprocessorModel as the model; pass it as "
                                  "preprocessor= beside a fitted model")
            # What a train job recorded beside the model travels into the registry.
            if config is None:
                config = model_meta.get("training_job")
            if data_source is None:
                data_source = model_meta.get("data_source")
            if provenance is None:
                provenance = model_meta.get("provenance")
            if metrics is None:
                metrics = model_meta.get("training_metrics")
            pre_meta = pre_signature = None
            if preprocessor is not None:
                pre_dir = fs.join(staging, PREPROCESSOR_DIR)
                self._stage_artifact(preprocessor, pre_dir, "preprocessor")
                from sparkml_aiaas.preprocessing.loader import load_fitted

                load_fitted(fs.local_path(pre_dir))  # refuses anything but a PreprocessorModel
                # The pair must chain (the model reads the preprocessor's output column):
                # refused now rather than when a scoring job or the server loads it.
                from sparkml_aiaas.models.predictor import load_predictor as _load_bundle

                from sparkml_aiaas.models.trust import trusted

                allowlist = trusted(trusted_factories).union(
                    getattr(model, "trustedFactories", None))
                pre_signature = _load_bundle(fs.local_path(staging),
                                             allowlist).metadata["signature"]
                pre_files = {rel: fs.sha256(fs.join(pre_dir, rel))
                             for rel in fs.walk_files(pre_dir)}
                with open(fs.join(fs.local_path(pre_dir), METADATA_FILE)) as f:
                    pre_artifact = json.load(f)
                pre_meta = {
                    "path": PREPROCESSOR_DIR,
                    "digest": content_digest(pre_files),
                    "model_id": pre_artifact.get("model_id"),
                    "source": preprocessor if isinstance(preprocessor, str) else None,
                }
            files = {rel: fs.sha256(fs.join(staging, rel)) for rel in fs.walk_files(staging)}
            version = self._allocate(name)
            metadata = {
                "registry_format": REGISTRY_FORMAT,
                "name": name,
                "version": version,
                "description": description,
                "model": {
                    "path": MODEL_DIR,
                    "class": model_meta.get("class"),
                    "model_id": model_meta.get("model_id"),
                    "source": model if isinstance(model, str) else None,
                },
                # What the version reads from its input: the raw columns the preprocessor
                # takes when there is one (batch scoring checks input against this).
                "input_signature": _jsonable(pre_signature if pre_meta else
                                             model_meta.get("signature"), "the input signature"),
                "model_signature": _jsonable(model_meta.get("signature"), "the model signature"),
                "params": _jsonable(dict(params) if params is not None
                                    else model_meta.get("paramMap", {}), "params"),
                "metrics": _jsonable(dict(metrics or {}), "metrics"),
                "config": _jsonable(config, "config"),
                "data_source": _jsonable(data_source, "data_source"),
                "provenance": _jsonable(provenance, "provenance"),
                "preprocessor": pre_meta,
                "package_version": __version__,
                "git_commit": _git_commit(),
                "created_at": _utc_now(),
                "files": files,
                "digest": content_digest(files),
            }
            fs.write_bytes(fs.join(staging, META_FILE),
                           (json.dumps(metadata, indent=2, sort_keys=True) + "\n").encode())
            if self._key is not None:
                fs.write_bytes(fs.join(staging, SIG_FILE), self._signature_record(metadata))
            complete = staging
            if fs is not remote:
                complete = remote.join(remote_staging, "version")
                remote.copytree(staging, complete)
            # The one visible step: the complete directory appears under versions/<n>.
            remote.rename(complete, self._version_dir(name, version))
            if fs is not remote:
                remote.rmtree(remote_staging)
        except BaseException:
            remote.rmtree(remote_staging)
            raise
        finally:
            if fs is not remote:
                shutil.rmtree(staging, ignore_errors=True)
        return version

    def _sweep_stale(self, name: str) -> List[str]:
        """Remove what crashed registrations and deletions left in ``.staging/`` and
        ``.trash/``: entries older than :data:`STALE_AFTER_SECONDS` (a live one is younger;
        readers never look there).  Returns the removed paths."""
        import time

        fs = self.storage
        removed = []
        cutoff = time.time() - STALE_AFTER_SECONDS
        for sub in (".staging", ".trash"):
            folder = fs.join(self._model_dir(name), sub)
            for entry in fs.listdir(folder):
                path = fs.join(folder, entry)
                try:
                    stale = fs.mtime(path) < cutoff
                except FileNotFoundError:
                    continue  # finished meanwhile
                if stale:
                    fs.rmtree(path)
                    removed.append(path)
        return removed

    def _stage_artifact(self, source: Any, target: str, what: str) -> None:
        if hasattr(source, "write") and callable(source.write):
            source.write().save(target)
            return
        if isinstance(source, os.PathLike):
            source = os.fspath(source)
        if not isinstance(source, str):
            raise ConfigError(f"the {what} must be a fitted model of sparkml_aiaas (with "
                              f".write()) or the path of a saved model directory, not "
                              f"{type(source).__name__}")
        src = local_path(source)
        read_artifact(src)  # verify before copying: never register a corrupt artifact
        if self.storage.is_local:
            self.storage.copytree(src, target)
        else:
            shutil.copytree(src, target)  # register() stages on local disk for such storages

    def _allocate(self, name: str) -> int:
        """Claim the next free version number by exclusive creation of ``allocated/<n>``."""
        fs = self.storage
        allocated = fs.join(self._model_dir(name), "allocated")
        taken = _version_dirs(fs.listdir(allocated))
        taken += _version_dirs(fs.listdir(fs.join(self._model_dir(name), "versions")))
        n = max(taken, default=0) + 1
        while not fs.create_exclusive(fs.join(allocated, str(n))):
            n += 1
        return n

    def _signature_record(self, metadata: Mapping[str, Any]) -> bytes:
        signature = hmac.new(self._key, canonical_json(metadata), hashlib.sha256).hexdigest()
        record = {"algorithm": "HMAC-SHA-256", "key_id": key_id(self._key),
                  "signature": signature}
        return (json.dumps(record, sort_keys=True) + "\n").encode()

    # ------------------------------------------------------------------ reading
    def _open_version(self, name: str, version: int) -> Tuple[Storage, str]:
        """``(storage, version dir)`` to read and verify ``name/version`` through.

        For a non-local storage the version directory is copied to local disk once
        and metadata, signature and checksums are all read from that copy, which is
        what ``ModelVersion.path`` then points into: what is verified is what is
        loaded (no window for a swap between the check and the load).
        """
        fs = self.storage
        vdir = self._version_dir(name, version)
        if fs.is_local:
            return fs, vdir
        if not fs.isdir(vdir):
            raise ModelNotFoundError(f"{name}/{version} is not in the registry at {self.root}")
        try:
            return LocalStorage(), fs.local_path(vdir)
        except FileNotFoundError:  # deleted between the check and the copy
            raise ModelNotFoundError(
                f"{name}/{version} is not in the registry at {self.root}") from None

    def _release(self, mv: ModelVersion) -> None:
        """Remove the local copy behind a loaded version (non-local storages only).

        The readers hold every array in memory, so the copy is no longer needed; a
        long-running process that reloads models would otherwise collect copies.
        """
        if not self.storage.is_local:
            self.storage.release_local(os.path.dirname(mv.path))

    def _close_version(self, fs: Storage, vdir: str) -> None:
        """Remove the local copy :meth:`_open_version` made, if it made one."""
        if fs is not self.storage:
            self.storage.release_local(vdir)

    def _read_metadata(self, name: str, version: int, fs: Optional[Storage] = None,
                       vdir: Optional[str] = None) -> Dict[str, Any]:
        fs = fs or self.storage
        vdir = vdir or self._version_dir(name, version)
        if not fs.isdir(vdir):
            raise ModelNotFoundError(f"{name}/{version} is not in the registry at {self.root}")
        meta_path = fs.join(vdir, META_FILE)
        if not fs.exists(meta_path):
            raise ModelFormatError(f"{name}/{version}: {META_FILE} is missing")
        try:
            metadata = json.loads(fs.read_bytes(meta_path))
        except ValueError as exc:
            raise ModelFormatError(
                f"{name}/{version}: {META_FILE} is not valid JSON: {exc}") from None
        if metadata.get("registry_format") != REGISTRY_FORMAT:
            raise ModelFormatError(
                f"{name}/{version} has registry_format {metadata.get('registry_format')!r}; "
                f"this sparkml_aiaas ({__version__}) reads {REGISTRY_FORMAT}")
        if metadata.get("name") != name or metadata.get("version") != version:
            raise ModelFormatError(
                f"{name}/{version}: {META_FILE} describes {metadata.get('name')!r}/"
                f"{metadata.get('version')!r}; the version directory was moved or copied")
        return metadata

    def _verify(self, name: str, version: int, metadata: Mapping[str, Any],
                fs: Optional[Storage] = None, vdir: Optional[str] = None) -> None:
        """Check the signature (with a key), each sha256, missing/extra files, the digest."""
        fs = fs or self.storage
        vdir = vdir or self._version_dir(name, version)
        where = f"{name}/{version}"
        if self._key is not None:
            sig_path = fs.join(vdir, SIG_FILE)
            if not fs.exists(sig_path):
                raise ModelFormatError(
                    f"{where} is unsigned ({SIG_FILE} is missing) but a registry signing key is "
                    "configured: refusing to load it")
            try:
                record = json.loads(fs.read_bytes(sig_path))
                signature = str(record["signature"])
            except (ValueError, KeyError, TypeError):
                raise ModelFormatError(f"{where}: {SIG_FILE} is unreadable") from None
            if record.get("key_id") != key_id(self._key):
                raise ModelFormatError(
                    f"{where}: {META_FILE} was signed with another key (key_id "
                    f"{record.get('key_id')!r}, configured {key_id(self._key)!r})")
            expected = hmac.new(self._key, canonical_json(metadata), hashlib.sha256).hexdigest()
            if not hmac.compare_digest(expected, signature):
                raise ModelFormatError(
                    f"{where}: the signature in {SIG_FILE} does not match {META_FILE}; the "
                    "metadata was modified after registration")
        files = metadata.get("files")
        if not isinstance(files, dict) or not files:
            raise ModelFormatError(f"{where}: {META_FILE} lists no files")
        present = {rel for rel in fs.walk_files(vdir) if rel not in CONTROL_FILES}
        missing = sorted(set(files) - present)
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise ModelFormatError(f"{where} is incomplete: file {missing[0]} is missing{more}")
        extra = sorted(present - set(files))
        if extra:
            raise ModelFormatError(f"{where}: unexpected file {extra[0]} (not in {META_FILE}); "
                                   "the version directory was modified after registration")
        for rel in sorted(files):
            actual = fs.sha256(fs.join(vdir, rel))
            if actual != files[rel]:
                raise ModelFormatError(
                    f"{where}: checksum mismatch for file {rel} (expected {files[rel]}, found "
                    f"{actual}); the file was modified or corrupted")
        if content_digest(files) != metadata.get("digest"):
            raise ModelFormatError(f"{where}: the digest in {META_FILE} does not match its files")

    def _model_version(self, name: str, version: int, metadata: Dict[str, Any],
                       aliases: Optional[Dict[str, int]] = None,
                       local_vdir: Optional[str] = None) -> ModelVersion:
        if aliases is None:
            aliases = self.aliases(name)
        if local_vdir is not None:  # the verified local copy of a non-local version
            path = os.path.join(local_vdir, MODEL_DIR)
        else:
            path = self.storage.join(self._version_dir(name, version), MODEL_DIR)
            # list() reads metadata only: a non-local version is not copied, its path
            # stays the storage's (resolve() gives the verified local copy).
            path = self.storage.local_path(path) if self.storage.is_local else path
        return ModelVersion(
            name=name, version=version,
            path=path,
            digest=metadata.get("digest", ""), metadata=metadata,
            aliases=sorted(a for a, v in aliases.items() if v == version))

    def versions(self, name: str) -> List[int]:
        """Visible version numbers of ``name``, ascending."""
        return sorted(_version_dirs(self.storage.listdir(
            self.storage.join(self._model_dir(name), "versions"))))

    def names(self) -> List[str]:
        """Registered model names, sorted."""
        fs = self.storage
        return [n for n in fs.listdir(self.root) if _is_valid_name(n)
                and fs.isdir(fs.join(self.root, n, "versions"))]

    def aliases(self, name: str) -> Dict[str, int]:
        """``{alias: version}`` for ``name``."""
        fs = self.storage
        out = {}
        directory = fs.join(self._model_dir(name), "aliases")
        for alias in fs.listdir(directory):
            if not _is_valid_name(alias) or re.fullmatch(r"[0-9]+", alias):
                continue  # temp files of an alias being written (".name.tmp"), strays
            try:
                out[alias] = self._read_alias(name, alias)
            except ModelNotFoundError:
                continue  # removed while listing
        return out

    def _read_alias(self, name: str, alias: str) -> int:
        path = self._alias_file(name, alias)
        try:
            record = json.loads(self.storage.read_bytes(path))
        except FileNotFoundError:
            raise ModelNotFoundError(f"{name} has no alias {alias!r} in the registry at "
                                     f"{self.root}") from None
        except ValueError:
            raise ModelFormatError(f"alias file {path} is not valid JSON") from None
        return _validate_version(record.get("version") if isinstance(record, dict) else None)

    def resolve(self, ref: str) -> ModelVersion:
        """The verified :class:`ModelVersion` of ``ref`` (``name``, ``name/3``, ``name@alias``).

        Raises
        ------
        ModelNotFoundError
            No such model, version or alias.
        ModelFormatError
            A checksum mismatch, a missing or extra file (named), or with a
            signing key an unsigned or badly signed version.
        """
        name, version, alias = parse_ref(ref)
        aliases = self.aliases(name)
        if alias is not None:
            if alias not in aliases:
                raise ModelNotFoundError(f"{name} has no alias {alias!r} in the registry at "
                                         f"{self.root}")
            version = aliases[alias]
        elif version is None:
            available = self.versions(name)
            if not available:
                raise ModelNotFoundError(f"no model named {name!r} in the registry at {self.root}")
            version = available[-1]
        fs, vdir = self._open_version(name, version)
        try:
            metadata = self._read_metadata(name, version, fs, vdir)
            self._verify(name, version, metadata, fs, vdir)
        except BaseException:
            self._close_version(fs, vdir)
            raise
        return self._model_version(name, version, metadata, aliases,
                                   None if fs is self.storage else vdir)

    def load(self, ref: str, trusted_factories=None):
        """The fitted pyspark.ml model of ``ref``, after verifying every checksum.

        A version registered with a preprocessor loads as a ``PipelineModel``
        ``[PreprocessorModel, model]``, so ``transform`` takes the raw columns.
        ``trusted_factories``: torch network factories the model may name (see
        :mod:`sparkml_aiaas.models.trust`); nothing else the version names is imported.
        """
        from sparkml_aiaas.models.persistence import load_model

        mv = self.resolve(ref)
        try:
            model = load_model(mv.path, trusted_factories)
            if mv.preprocessor_path is None:
                return model
            from pyspark.ml import PipelineModel

            return PipelineModel(stages=[load_model(mv.preprocessor_path), model])
        finally:
            self._release(mv)

    def load_predictor(self, ref: str, trusted_factories=None):
        """The Spark-free predictor of ``ref`` (imports no pyspark), after verification.

        With a registered preprocessor it runs both: raw columns in, predictions out.
        ``trusted_factories``: torch network factories the model may name (see
        :mod:`sparkml_aiaas.models.trust`).
        """
        from sparkml_aiaas.models.predictor import load_predictor

        mv = self.resolve(ref)
        try:
            return load_predictor(mv.predictor_path, trusted_factories)
        finally:
            self._release(mv)

    def load_preprocessor(self, ref: str):
        """The Spark-free fitted preprocessor registered with ``ref``, or None."""
        mv = self.resolve(ref)
        try:
            if mv.preprocessor_path is None:
                return None
            from sparkml_aiaas.preprocessing.loader import load_fitted

            return load_fitted(mv.preprocessor_path)
        finally:
            self._release(mv)

    def list(self, name: Optional[str] = None) -> List[ModelVersion]:
        """Every version (of ``name``, or of all models), sorted by name then version.

        Reads each ``registry.json`` without hashing the files (cheap); use
        :meth:`resolve` or :meth:`describe` to verify a version.
        """
        out = []
        for model_name in ([validate_name(name)] if name is not None else self.names()):
            aliases = self.aliases(model_name)
            for version in self.versions(model_name):
                try:
                    metadata = self._read_metadata(model_name, version)
                except ModelNotFoundError:
                    continue  # deleted while listing
                out.append(self._model_version(model_name, version, metadata, aliases))
        if name is not None and not out and not self.storage.isdir(self._model_dir(name)):
            raise ModelNotFoundError(f"no model named {name!r} in the registry at {self.root}")
        return out

    def describe(self, ref: str) -> Dict[str, Any]:
        """The verified metadata of ``ref`` plus ``path``, ``aliases``, ``ref`` and ``signed``."""
        mv = self.resolve(ref)
        out = dict(mv.metadata)
        out.update({
            "ref": mv.ref, "path": mv.path, "aliases": mv.aliases,
            "preprocessor_path": mv.preprocessor_path,
            "signed": self.storage.exists(self.storage.join(self._version_dir(mv.name, mv.version),
                                                            SIG_FILE)),
            "signature_verified": self.signed,
            "last_reproduction": self.last_reproduction(mv.name, mv.version),
        })
        return out

    # ------------------------------------------------------------------ aliases
    def set_alias(self, name: str, alias: str, version: int) -> Optional[int]:
        """Point ``alias`` at ``version`` (verified first); returns the previous version or None.

        The alias file is replaced atomically: a concurrent reader sees the old
        or the new version, never a partial file.
        """
        validate_alias(alias)
        version = _validate_version(version)
        fs, vdir = self._open_version(name, version)
        try:
            metadata = self._read_metadata(name, version, fs, vdir)
            self._verify(name, version, metadata, fs, vdir)
        finally:
            self._close_version(fs, vdir)  # only verified here, never loaded
        try:
            previous = self._read_alias(name, alias)
        except (ModelNotFoundError, ModelFormatError, ConfigError):
            previous = None
        fs = self.storage
        fs.makedirs(fs.join(self._model_dir(name), "aliases"))
        record = {"alias": alias, "version": version, "digest": metadata.get("digest"),
                  "set_at": _utc_now()}
        fs.write_atomic(self._alias_file(name, alias),
                        (json.dumps(record, sort_keys=True) + "\n").encode())
        return previous

    def delete_alias(self, name: str, alias: str) -> None:
        """Remove ``alias`` (the version stays)."""
        path = self._alias_file(name, alias)
        if not self.storage.exists(path):
            raise ModelNotFoundError(f"{name} has no alias {alias!r}")
        self.storage.remove(path)

    # ------------------------------------------------------------------ delete
    def delete(self, name: str, version: int, *, force: bool = False) -> None:
        """Remove ``name/version``; its number is never handed out again.

        Refused (``ConfigError``) while an alias points at the version, unless
        ``force=True``, which also removes those aliases.
        """
        version = _validate_version(version)
        fs = self.storage
        vdir = self._version_dir(name, version)
        if not fs.isdir(vdir):
            raise ModelNotFoundError(f"{name}/{version} is not in the registry at {self.root}")
        pointing = sorted(a for a, v in self.aliases(name).items() if v == version)
        if pointing and not force:
            raise ConfigError(f"{name}/{version} is the target of alias(es) {pointing}; move "
                              "them first or delete with force=True (--force)")
        for alias in pointing:
            self.delete_alias(name, alias)
        # Make sure the number stays allocated even for versions copied in by hand.
        fs.create_exclusive(fs.join(self._model_dir(name), "allocated", str(version)))
        trash = fs.staging_dir(fs.join(self._model_dir(name), ".trash"), f"{version}-")
        fs.rename(vdir, fs.join(trash, "version"))  # disappears atomically, then is removed
        fs.rmtree(trash)
        fs.rmtree(self._reproductions_dir(name, version))

    # ------------------------------------------------------------------ reproduction
    def reproduce(self, ref: str, *, spark=None, workdir: Optional[str] = None,
                  allow_environment_change: bool = False):
        """Retrain ``ref`` from its recorded provenance and compare it with the registered
        arrays: a :class:`~sparkml_aiaas.registry.reproduce.Reproduction` (``exit_code``
        0 identical, 1 different, 2 could not try, with the reason).  The report is kept
        beside the version (:meth:`last_reproduction`)."""
        from sparkml_aiaas.registry.reproduce import reproduce

        return reproduce(self, ref, spark=spark, workdir=workdir,
                         allow_environment_change=allow_environment_change)

    def _reproductions_dir(self, name: str, version: int) -> str:
        return self.storage.join(self._model_dir(name), "reproductions", str(version))

    def record_reproduction(self, name: str, version: int, report: Mapping[str, Any]) -> str:
        """Store a reproduction report of ``name/version`` (JSON, written atomically under
        a UTC timestamp); returns its path."""
        fs = self.storage
        directory = self._reproductions_dir(name, _validate_version(version))
        fs.makedirs(directory)
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        path = fs.join(directory, f"{stamp}.json")
        fs.write_atomic(path, (json.dumps(_jsonable(dict(report), "the report"), indent=2,
                                          sort_keys=True) + "\n").encode("utf-8"))
        return path

    def last_reproduction(self, name: str, version: int) -> Optional[Dict[str, Any]]:
        """The newest reproduction report of ``name/version`` (plus its ``report_path``), or
        None when it was never reproduced."""
        fs = self.storage
        directory = self._reproductions_dir(name, _validate_version(version))
        names = sorted(n for n in fs.listdir(directory) if n.endswith(".json")
                       and not n.startswith("."))
        if not names:
            return None
        path = fs.join(directory, names[-1])
        try:
            report = json.loads(fs.read_bytes(path))
        except (OSError, ValueError):
            return {"status": "unreadable", "report_path": path}
        report = report if isinstance(report, dict) else {"status": "unreadable"}
        report["report_path"] = path
        return report

    # ------------------------------------------------------------------ MLflow
    def export_mlflow(self, ref: str, path: str, trusted_factories=None) -> str:
        """Write ``ref`` as an MLflow pyfunc model at ``path`` (see :mod:`.mlflow_support`)."""
        from sparkml_aiaas.registry.mlflow_support import export_mlflow

        return export_mlflow(self, ref, path, trusted_factories=trusted_factories)

    def log_to_mlflow(self, ref: str, tracking_uri: Optional[str] = None, *,
                      experiment_name: Optional[str] = None) -> str:
        """Log ``ref``'s params, metrics and tags as an MLflow run; returns the run id."""
        from sparkml_aiaas.registry.mlflow_support import log_to_mlflow

        return log_to_mlflow(self, ref, tracking_uri, experiment_name=experiment_name)
