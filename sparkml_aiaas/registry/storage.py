"""The few filesystem calls the registry makes, behind one small interface.

The registry's guarantees rest on three primitives:

* **exclusive create** (:meth:`Storage.create_exclusive`): exactly one caller
  succeeds in creating a given path; used to allocate version numbers.
* **rename of a directory onto a free name** (:meth:`Storage.rename`): the
  version directory appears complete or not at all.
* **atomic replace of a small file** (:meth:`Storage.write_atomic`): aliases
  move from one version to another without a reader ever seeing a partial file.

:class:`LocalStorage` implements them with POSIX calls (``os.open`` with
``O_CREAT|O_EXCL``, ``os.rename``, ``os.replace``).
:class:`~sparkml_aiaas.registry.hadoop_storage.HadoopStorage` implements them
with Hadoop's FileSystem/FileContext API through an active SparkSession
(``create(path, overwrite=false)``, ``rename``, ``rename(..., OVERWRITE)``),
which HDFS makes atomic; :func:`storage_for` picks it for ``hdfs://``,
``viewfs://``, ``webhdfs://`` and other Hadoop roots.  Object stores (S3, GCS,
ABFS, WASB) do not give atomic rename or exclusive create and are refused
unless a storage is passed explicitly; see ``docs/registry.md``.
"""

from __future__ import annotations

import os
import shutil
import uuid
from typing import Iterator, List

from sparkml_aiaas.atomic import write_bytes_atomically
from sparkml_aiaas.errors import ConfigError
from sparkml_aiaas.models.artifact import sha256_file

__all__ = ["Storage", "LocalStorage", "storage_for"]


class Storage:
    """Minimal filesystem interface used by :class:`~sparkml_aiaas.registry.ModelRegistry`.

    Paths are strings in the storage's own syntax; ``join`` builds them.
    """

    #: True when paths are local paths that readers (numpy, the artifact reader) can
    #: open directly.  When False the registry writes a new version on local disk and
    #: copies it up with :meth:`copytree`, and reads a version through one local copy
    #: (:meth:`local_path`) that it verifies before handing it out.
    is_local = True

    def normalize_root(self, root: str) -> str:
        """The registry root in the form :meth:`join` expects."""
        return os.fspath(root)

    def join(self, *parts: str) -> str:
        raise NotImplementedError

    def exists(self, path: str) -> bool:
        raise NotImplementedError

    def isdir(self, path: str) -> bool:
        raise NotImplementedError

    def listdir(self, path: str) -> List[str]:
        """Entry names of a directory; ``[]`` when it does not exist."""
        raise NotImplementedError

    def makedirs(self, path: str) -> None:
        """Create a directory and its parents; no error when it exists."""
        raise NotImplementedError

    def create_exclusive(self, path: str) -> bool:
        """Create an empty file; False when it already exists (exactly one caller wins)."""
        raise NotImplementedError

    def mtime(self, path: str) -> float:
        """Last modification time (seconds since the epoch); FileNotFoundError if missing."""
        raise NotImplementedError

    def read_bytes(self, path: str) -> bytes:
        raise NotImplementedError

    def write_bytes(self, path: str, data: bytes) -> None:
        """Write a new file (inside a staging directory: no atomicity needed)."""
        raise NotImplementedError

    def write_atomic(self, path: str, data: bytes) -> None:
        """Replace ``path`` with ``data`` so readers see the old or the new content, never a mix."""
        raise NotImplementedError

    def rename(self, src: str, dst: str) -> None:
        """Move ``src`` to the free name ``dst`` atomically; fails when ``dst`` exists."""
        raise NotImplementedError

    def remove(self, path: str) -> None:
        raise NotImplementedError

    def rmtree(self, path: str) -> None:
        raise NotImplementedError

    def copytree(self, src: str, dst: str) -> None:
        """Copy a local directory ``src`` to ``dst`` (which must not exist)."""
        raise NotImplementedError

    def walk_files(self, path: str) -> Iterator[str]:
        """Relative ``/``-separated paths of every file under ``path``, sorted."""
        raise NotImplementedError

    def sha256(self, path: str) -> str:
        raise NotImplementedError

    def local_path(self, path: str) -> str:
        """A local path for readers that need one (numpy, the artifact reader).

        For a non-local storage this is a fresh local copy of ``path``, owned by
        the caller until :meth:`release_local`.
        """
        raise NotImplementedError

    def release_local(self, path: str) -> None:
        """Forget a path returned by :meth:`local_path` (removes it when it is a copy)."""

    def staging_dir(self, parent: str, prefix: str) -> str:
        """A fresh, uniquely named directory under ``parent``."""
        raise NotImplementedError


class LocalStorage(Storage):
    """:class:`Storage` over a local (or FUSE-mounted, or NFS) POSIX filesystem."""

    def normalize_root(self, root: str) -> str:
        """An absolute local path, from a plain path or a ``file:`` URI."""
        path = os.fspath(root)
        if path.startswith("file://"):
            path = path[len("file://"):]
        elif path.startswith("file:"):
            path = path[len("file:"):]
        if not path:
            raise ConfigError("the registry root is empty")
        return os.path.abspath(path)

    def join(self, *parts: str) -> str:
        return os.path.join(*parts)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def isdir(self, path: str) -> bool:
        return os.path.isdir(path)

    def listdir(self, path: str) -> List[str]:
        try:
            return sorted(os.listdir(path))
        except FileNotFoundError:
            return []

    def makedirs(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def create_exclusive(self, path: str) -> bool:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        os.close(fd)
        return True

    def mtime(self, path: str) -> float:
        return os.stat(path).st_mtime

    def read_bytes(self, path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    def write_bytes(self, path: str, data: bytes) -> None:
        with open(path, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    def write_atomic(self, path: str, data: bytes) -> None:
        write_bytes_atomically(path, data)

    def rename(self, src: str, dst: str) -> None:
        if os.path.exists(dst):
            raise FileExistsError(dst)
        os.rename(src, dst)

    def remove(self, path: str) -> None:
        os.remove(path)

    def rmtree(self, path: str) -> None:
        shutil.rmtree(path, ignore_errors=True)

    def copytree(self, src: str, dst: str) -> None:
        shutil.copytree(src, dst)

    def walk_files(self, path: str) -> Iterator[str]:
        found = []
        for dirpath, dirnames, filenames in os.walk(path):
            for filename in filenames:
                rel = os.path.relpath(os.path.join(dirpath, filename), path)
                found.append(rel.replace(os.sep, "/"))
        return iter(sorted(found))

    def sha256(self, path: str) -> str:
        return sha256_file(path)

    def local_path(self, path: str) -> str:
        return path

    def staging_dir(self, parent: str, prefix: str) -> str:
        os.makedirs(parent, exist_ok=True)
        path = os.path.join(parent, f"{prefix}{uuid.uuid4().hex}")
        os.mkdir(path)
        return path


#: Object stores: "rename" is copy-then-delete and there is no exclusive create, so
#: concurrent writers could share a version number and readers see half-copied versions.
OBJECT_STORE_SCHEMES = frozenset({"s3", "s3a", "s3n", "gs", "abfs", "abfss", "wasb", "wasbs",
                                  "oss"})
#: Hadoop filesystems recognised even without ``//`` after the scheme.
HADOOP_SCHEMES = frozenset({"hdfs", "viewfs", "webhdfs", "swebhdfs", "har", "ofs", "o3fs"})


def _scheme(root: str) -> str:
    """The URI scheme of ``root`` (lower case), or "" for a local path.

    A name counts as a scheme when ``://`` follows it or when it is a scheme the
    registry knows, so a relative local folder like ``models:v1`` stays local.
    """
    head, sep, rest = root.partition(":")
    if not sep or len(head) < 2 or not (head[0].isalpha() and
                                        all(c.isalnum() or c in "+.-" for c in head)):
        return ""
    scheme = head.lower()
    known = OBJECT_STORE_SCHEMES | HADOOP_SCHEMES | {"file", "dbfs"}
    return scheme if rest.startswith("//") or scheme in known else ""


def storage_for(root: str):
    """``(storage, root path)`` for a registry root URI.

    Local paths and ``file:`` URIs get :class:`LocalStorage`; ``hdfs://``,
    ``viewfs://``, ``webhdfs://`` and other Hadoop filesystems get
    :class:`~sparkml_aiaas.registry.hadoop_storage.HadoopStorage` (which needs an
    active SparkSession).  Object stores and ``dbfs:`` are refused with a
    :class:`ConfigError` saying what to use instead.
    """
    root = os.fspath(root)
    scheme = _scheme(root)
    if scheme in ("", "file"):
        storage = LocalStorage()
        return storage, storage.normalize_root(root)
    if scheme == "dbfs":
        raise ConfigError(
            f"registry root {root!r}: dbfs: URIs are not supported; on Databricks use the "
            "/dbfs/... FUSE path (see docs/registry.md)")
    if scheme in OBJECT_STORE_SCHEMES:
        raise ConfigError(
            f"registry root {root!r}: only local paths, file: URIs and Hadoop filesystems "
            f"with atomic rename (hdfs://, viewfs://, ...) are registry roots; {scheme}: is an "
            "object store without exclusive create or atomic rename, so concurrent "
            "registrations could collide (see docs/registry.md). Use a local, NFS, HDFS or "
            "FUSE-mounted folder (on Databricks /dbfs/...), or, with a single writer, opt in "
            "with ModelRegistry(root, storage=HadoopStorage(spark))")
    # Any other scheme is handed to Hadoop, which knows the filesystems configured.
    from sparkml_aiaas.registry.hadoop_storage import HadoopStorage

    storage = HadoopStorage()
    return storage, storage.normalize_root(root)
