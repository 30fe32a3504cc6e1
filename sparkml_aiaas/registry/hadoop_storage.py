""":class:`~sparkml_aiaas.registry.storage.Storage` over Hadoop's ``FileSystem`` API (HDFS & co.).

The registry's three primitives map onto Hadoop calls as follows:

* exclusive create -> ``FileSystem.create(path, overwrite=false)``; the
  NameNode refuses a second create of the same path, so on HDFS exactly one
  caller wins;
* rename onto a free name -> ``FileContext.rename(src, dst)`` (no options),
  which fails atomically when ``dst`` exists (``FileSystem.rename`` would move
  a directory *into* an existing one instead);
* atomic replace -> ``FileContext.rename(tmp, path, Options.Rename.OVERWRITE)``,
  one NameNode operation on HDFS.

Those guarantees are HDFS's (and viewfs over HDFS).  Hadoop's ``file:``
filesystem (used by the tests) and the object-store connectors (s3a, gs, abfs
without hierarchical namespace) emulate create-if-absent and rename with
check-then-act sequences: correct for a single writer, not atomic.  See
``docs/registry.md``.

The Java classes are reached through py4j from a classic SparkSession; pyspark
is imported only when a :class:`HadoopStorage` is created, so importing the
registry stays Spark-free.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
import threading
import uuid
from typing import Any, Iterator, List

from sparkml_aiaas.errors import ConfigError
from sparkml_aiaas.registry.storage import Storage

__all__ = ["HadoopStorage"]

logger = logging.getLogger(__name__)

#: Prefix of the local directories :meth:`HadoopStorage.local_path` materializes into.
LOCAL_COPY_PREFIX = "sparkml_aiaas_registry-"

# Local copies not yet released, process-wide: removed at exit, so a copy handed to a
# caller is never left behind (one atexit hook, not one per storage instance).
_COPIES: set = set()
_COPIES_LOCK = threading.Lock()


@atexit.register
def _remove_all_copies() -> None:
    with _COPIES_LOCK:
        copies = list(_COPIES)
        _COPIES.clear()
    for tmp in copies:
        shutil.rmtree(tmp, ignore_errors=True)

# Java exceptions that mean "this filesystem's FileContext cannot do that":
# the caller falls back to the FileSystem API.
_UNSUPPORTED = (
    "java.lang.UnsupportedOperationException",
    "org.apache.hadoop.fs.UnsupportedFileSystemException",
)


def _java_exception(exc: BaseException):
    """The Java exception behind a py4j error, or None when ``exc`` is not one.

    pyspark re-raises some Java exceptions (IllegalArgumentException, ...) as its
    own ``CapturedException`` subclasses, which keep the Java object as ``_origin``.
    """
    try:
        from py4j.protocol import Py4JJavaError
    except ImportError:  # pragma: no cover - py4j comes with pyspark
        return None
    if isinstance(exc, Py4JJavaError):
        return exc.java_exception
    try:
        from pyspark.errors.exceptions.captured import CapturedException
    except ImportError:  # pragma: no cover - older pyspark
        return None
    return getattr(exc, "_origin", None) if isinstance(exc, CapturedException) else None


def _java_classes(exc: BaseException) -> List[str]:
    """Class names of the Java exception behind ``exc`` and of its causes."""
    names = []
    java = _java_exception(exc)
    while java is not None and len(names) < 10:
        names.append(str(java.getClass().getName()))
        cause = java.getCause()
        java = None if cause is None or cause.equals(java) else cause
    return names


def _java_message(exc: BaseException) -> str:
    java = _java_exception(exc)
    if java is None:
        return str(exc)
    return f"{java.getClass().getName()}: {java.getMessage()}"


def _is(exc: BaseException, *class_names: str) -> bool:
    return any(name in class_names for name in _java_classes(exc))


def _already_exists(exc: BaseException) -> bool:
    if _is(exc, "org.apache.hadoop.fs.FileAlreadyExistsException"):
        return True
    # Some filesystems report it as a plain IOException ("... already exists").
    return (_is(exc, "java.io.IOException") and "already exists" in _java_message(exc).lower())


def _not_found(exc: BaseException) -> bool:
    return _is(exc, "java.io.FileNotFoundException")


class HadoopStorage(Storage):
    """The registry's storage on any Hadoop filesystem (``hdfs://``, ``viewfs://``, ...).

    Parameters
    ----------
    spark : pyspark.sql.SparkSession, optional
        A classic (JVM-backed) session whose Hadoop configuration names the
        filesystems.  Default: the active session.

    Raises
    ------
    ConfigError
        No SparkSession is active (and none was given), or the session is a
        Spark Connect session (no JVM to reach from Python).

    Notes
    -----
    Paths are Hadoop URIs; :meth:`join` joins with ``/``.  Readers that need
    local files get a copy: :meth:`local_path` materializes a remote file or
    directory into a fresh local temporary directory (removed by
    :meth:`release_local`, or at interpreter exit).
    """

    #: Paths are not local: the registry stages registrations on local disk and
    #: verifies a local copy of a version before handing it to readers.
    is_local = False

    def __init__(self, spark: Any = None):
        if spark is None:
            spark = _active_session()
        from sparkml_aiaas.spark_env import require_classic

        # Hadoop's FileSystem API is reached through the driver's JVM, which a Connect
        # client does not have; a FUSE/NFS path of the same folder works everywhere.
        require_classic(spark, "a registry root on a Hadoop filesystem (hdfs://, viewfs://, "
                        "...)", "use a FUSE or NFS mount of the registry folder (e.g. "
                        "/Volumes/..., /dbfs/...) as the root instead (see docs/registry.md)")
        jvm = getattr(spark, "_jvm", None)
        jsc = getattr(spark, "_jsc", None)
        if jvm is None or jsc is None:
            raise ConfigError(
                "HadoopStorage needs a classic SparkSession (with a JVM driver); a Spark Connect "
                "session cannot reach Hadoop's FileSystem API from Python. Use a FUSE mount of "
                "the registry folder instead (see docs/registry.md)")
        self._spark = spark
        self._jvm = jvm
        self._gateway = spark.sparkContext._gateway
        self._conf = jsc.hadoopConfiguration()
        self._file_contexts = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return "HadoopStorage()"

    # ------------------------------------------------------------------ Java helpers
    def _path(self, path: str):
        return self._jvm.org.apache.hadoop.fs.Path(path)

    def _fs(self, jpath):
        return jpath.getFileSystem(self._conf)

    def _file_context(self, jpath):
        """A FileContext for ``jpath``'s filesystem, cached per scheme and authority."""
        uri = self._fs(jpath).makeQualified(jpath).toUri()
        key = (uri.getScheme(), uri.getAuthority())
        with self._lock:
            fc = self._file_contexts.get(key)
            if fc is None:
                fc = self._jvm.org.apache.hadoop.fs.FileContext.getFileContext(uri, self._conf)
                self._file_contexts[key] = fc
        return fc

    def _rename_options(self, overwrite: bool):
        rename_enum = getattr(self._jvm.org.apache.hadoop.fs, "Options$Rename")
        options = self._gateway.new_array(rename_enum, 1)
        options[0] = rename_enum.OVERWRITE if overwrite else rename_enum.NONE
        return options

    def _error(self, what: str, path: str, exc: BaseException) -> OSError:
        """A Python OSError naming the operation, the path and the Java exception."""
        message = f"{what} {path}: {_java_message(exc)}"
        if _not_found(exc):
            return FileNotFoundError(message)
        if _already_exists(exc):
            return FileExistsError(message)
        return OSError(message)

    def _call(self, what: str, path: str, fn, *args):
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 - only Java errors are translated
            if _java_exception(exc) is None:
                raise
            raise self._error(what, path, exc) from None

    # ------------------------------------------------------------------ Storage
    def normalize_root(self, root: str) -> str:
        root = os.fspath(root)
        if not root:
            raise ConfigError("the registry root is empty")
        jpath = self._path(root)
        uri = jpath.toUri()
        if uri.getScheme() is not None and (uri.getAuthority() is not None
                                            or uri.getScheme() == "file"):
            return str(jpath.toString())  # already qualified: no filesystem call needed
        # Qualified (scheme and authority filled in from fs.defaultFS): the root stays
        # the same whatever the working directory or default filesystem later are.
        return str(self._call("cannot open registry root", root,
                              lambda: self._fs(jpath).makeQualified(jpath).toString()))

    def join(self, *parts: str) -> str:
        head, *rest = parts
        pieces = [head.rstrip("/") or head]
        pieces += [p.strip("/") for p in rest if p.strip("/")]
        return "/".join(pieces)

    def exists(self, path: str) -> bool:
        jpath = self._path(path)
        return bool(self._call("cannot check", path, lambda: self._fs(jpath).exists(jpath)))

    def isdir(self, path: str) -> bool:
        jpath = self._path(path)
        try:
            return bool(self._fs(jpath).getFileStatus(jpath).isDirectory())
        except Exception as exc:  # noqa: BLE001
            if _not_found(exc):
                return False
            if _java_exception(exc) is None:
                raise
            raise self._error("cannot stat", path, exc) from None

    def mtime(self, path: str) -> float:
        jpath = self._path(path)
        try:
            return self._fs(jpath).getFileStatus(jpath).getModificationTime() / 1000.0
        except Exception as exc:  # noqa: BLE001
            if _not_found(exc):
                raise FileNotFoundError(path) from None
            if _java_exception(exc) is None:
                raise
            raise self._error("cannot stat", path, exc) from None

    def listdir(self, path: str) -> List[str]:
        jpath = self._path(path)
        try:
            statuses = self._fs(jpath).listStatus(jpath)
        except Exception as exc:  # noqa: BLE001
            if _not_found(exc):
                return []
            if _java_exception(exc) is None:
                raise
            raise self._error("cannot list", path, exc) from None
        return sorted(str(status.getPath().getName()) for status in statuses)

    def makedirs(self, path: str) -> None:
        jpath = self._path(path)
        if not self._call("cannot create directory", path, lambda: self._fs(jpath).mkdirs(jpath)):
            raise OSError(f"cannot create directory {path}: FileSystem.mkdirs returned false")

    def create_exclusive(self, path: str) -> bool:
        jpath = self._path(path)
        try:
            stream = self._fs(jpath).create(jpath, False)
        except Exception as exc:  # noqa: BLE001
            if _already_exists(exc):
                return False
            if _java_exception(exc) is None:
                raise
            raise self._error("cannot create", path, exc) from None
        self._call("cannot close", path, stream.close)
        return True

    def read_bytes(self, path: str) -> bytes:
        jpath = self._path(path)

        def read():
            stream = self._fs(jpath).open(jpath)
            try:
                # One byte[] crosses py4j (the registry reads small JSON files here).
                return bytes(self._jvm.org.apache.hadoop.io.IOUtils.readFullyToByteArray(stream))
            finally:
                stream.close()

        return self._call("cannot read", path, read)

    def _write(self, path: str, data: bytes, overwrite: bool) -> None:
        jpath = self._path(path)

        def write():
            stream = self._fs(jpath).create(jpath, overwrite)
            try:
                stream.write(bytearray(data))
                # Durable before it is renamed into view, where the stream can sync
                # (HDFS can; the object-store connectors cannot and say so).
                if stream.hasCapability("hsync"):
                    stream.hsync()
            finally:
                stream.close()

        self._call("cannot write", path, write)

    def write_bytes(self, path: str, data: bytes) -> None:
        self._write(path, data, overwrite=True)

    def write_atomic(self, path: str, data: bytes) -> None:
        head, _, name = path.rstrip("/").rpartition("/")
        tmp = f"{head}/.{name}.tmp-{uuid.uuid4().hex}"
        self._write(tmp, data, overwrite=False)
        jtmp, jpath = self._path(tmp), self._path(path)
        try:
            try:
                # HDFS: one NameNode operation, readers see the old or the new file.
                self._file_context(jpath).rename(jtmp, jpath, self._rename_options(True))
                return
            except Exception as exc:  # noqa: BLE001
                if _java_exception(exc) is None:
                    raise
                if not _is(exc, *_UNSUPPORTED):
                    raise self._error(f"cannot replace {path} with", tmp, exc) from None
            # No FileContext for this filesystem: delete then rename.  Between the two
            # calls ``path`` does not exist (a reader gets "not found", never a partial file).
            fs = self._fs(jpath)
            self._call("cannot remove", path, fs.delete, jpath, False)
            if not self._call(f"cannot rename {tmp} to", path, fs.rename, jtmp, jpath):
                raise OSError(f"cannot rename {tmp} to {path}: FileSystem.rename returned false")
        except BaseException:
            self._delete_quietly(tmp, recursive=False)
            raise

    def rename(self, src: str, dst: str) -> None:
        # Checked first for a clear error on every filesystem; the FileContext rename
        # below also refuses an existing dst, atomically on HDFS.
        if self.exists(dst):
            raise FileExistsError(f"cannot rename {src} to {dst}: the destination exists")
        jsrc, jdst = self._path(src), self._path(dst)
        try:
            self._file_context(jsrc).rename(jsrc, jdst, self._rename_options(False))
            return
        except Exception as exc:  # noqa: BLE001
            if _java_exception(exc) is None:
                raise
            if _already_exists(exc):
                raise FileExistsError(
                    f"cannot rename {src} to {dst}: the destination exists") from None
            if not _is(exc, *_UNSUPPORTED):
                raise self._error(f"cannot rename {src} to", dst, exc) from None
        # FileSystem.rename moves a directory *into* an existing one: only safe
        # because dst was checked above (a check-then-act race on such filesystems).
        if not self._call(f"cannot rename {src} to", dst, self._fs(jsrc).rename, jsrc, jdst):
            raise OSError(f"cannot rename {src} to {dst}: FileSystem.rename returned false "
                          "(the source is missing, the destination's parent does not exist, "
                          "or the destination appeared meanwhile)")

    def remove(self, path: str) -> None:
        jpath = self._path(path)
        if not self._call("cannot remove", path, self._fs(jpath).delete, jpath, False):
            raise FileNotFoundError(f"cannot remove {path}: it does not exist")

    def _delete_quietly(self, path: str, recursive: bool) -> None:
        jpath = self._path(path)
        try:
            self._fs(jpath).delete(jpath, recursive)
        except Exception as exc:  # noqa: BLE001 - cleanup must not hide the original error
            logger.warning("could not remove %s: %s", path, _java_message(exc))

    def rmtree(self, path: str) -> None:
        # Like LocalStorage (shutil.rmtree(ignore_errors=True)): cleanup never raises.
        self._delete_quietly(path, recursive=True)

    def copytree(self, src: str, dst: str) -> None:
        if self.exists(dst):
            raise FileExistsError(f"cannot copy {src} to {dst}: the destination exists")
        if not os.path.isdir(src):
            raise FileNotFoundError(f"cannot copy {src} to {dst}: not a local directory")
        jdst = self._path(dst)
        jsrc = self._path(os.path.abspath(src))
        # Into a free name, copyFromLocalFile copies the directory *as* dst.
        self._call(f"cannot copy {src} to", dst, self._fs(jdst).copyFromLocalFile,
                   False, False, jsrc, jdst)

    def walk_files(self, path: str) -> Iterator[str]:
        jpath = self._path(path)

        def walk():
            fs = self._fs(jpath)
            base = str(fs.makeQualified(jpath).toUri().getPath()).rstrip("/") + "/"
            found = []
            files = fs.listFiles(jpath, True)
            while files.hasNext():
                full = str(files.next().getPath().toUri().getPath())
                if not full.startswith(base):
                    raise OSError(f"listing {path} returned {full}, which is outside it")
                found.append(full[len(base):])
            return found

        try:
            found = self._call("cannot list", path, walk)
        except FileNotFoundError:
            found = []
        return iter(sorted(found))

    def sha256(self, path: str) -> str:
        jpath = self._path(path)
        jvm = self._jvm

        def digest():
            # Hashed inside the JVM, streaming: the file's bytes never cross py4j.
            md = jvm.java.security.MessageDigest.getInstance("SHA-256")
            stream = jvm.java.security.DigestInputStream(self._fs(jpath).open(jpath), md)
            try:
                jvm.org.apache.hadoop.io.IOUtils.copyBytes(
                    stream, jvm.java.io.OutputStream.nullOutputStream(), 1 << 20, False)
            finally:
                stream.close()
            return bytes(md.digest()).hex()

        return self._call("cannot hash", path, digest)

    def local_path(self, path: str) -> str:
        jpath = self._path(path)
        name = path.rstrip("/").rpartition("/")[2] or "root"
        tmp = tempfile.mkdtemp(prefix=LOCAL_COPY_PREFIX)
        with _COPIES_LOCK:
            _COPIES.add(tmp)
        target = os.path.join(tmp, name)
        try:
            # useRawLocalFileSystem=true: no .crc side files in the copy (they would
            # read as unexpected files when the copy is verified).
            self._call(f"cannot copy {path} to", target, self._fs(jpath).copyToLocalFile,
                       False, jpath, self._path(target), True)
        except BaseException:
            self.release_local(target)
            raise
        return target

    def release_local(self, path: str) -> None:
        tmp = os.path.dirname(os.path.abspath(path))
        with _COPIES_LOCK:
            if tmp not in _COPIES:
                return  # not one of ours: never delete what we did not create
            _COPIES.discard(tmp)
        shutil.rmtree(tmp, ignore_errors=True)

    def staging_dir(self, parent: str, prefix: str) -> str:
        self.makedirs(parent)
        path = self.join(parent, f"{prefix}{uuid.uuid4().hex}")
        self.makedirs(path)
        return path


def _active_session():
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise ConfigError("a Hadoop filesystem registry root needs pyspark and an active "
                          "SparkSession; without Spark, use a FUSE mount of the registry folder "
                          "(e.g. /dbfs/... or an HDFS NFS/FUSE gateway)") from None
    session = SparkSession.getActiveSession()
    if session is None:
        # getActiveSession() is per thread on the JVM side; a session started on
        # another thread of this process is just as good for filesystem calls.
        from pyspark import SparkContext

        if getattr(SparkContext, "_active_spark_context", None) is not None:
            session = SparkSession.builder.getOrCreate()
    if session is None:
        raise ConfigError("a Hadoop filesystem registry root (hdfs://, viewfs://, ...) needs an "
                          "active SparkSession to reach the filesystem: start one first (e.g. "
                          "sparkml_aiaas.session.get_spark()) or pass "
                          "storage=HadoopStorage(spark); without Spark, use a FUSE mount of the "
                          "registry folder (e.g. /dbfs/... or an HDFS NFS/FUSE gateway)")
    return session
