"""Replace a local file so readers see the old content or the whole new one, never a mix.

Every local file the package writes for others to read (metrics JSON, run reports and
plots, checkpoints, registry control files, the tokens file, bundled data sets) goes
through :func:`atomic_file`: the content is written to a hidden temporary file in the
target's folder (so the final ``os.replace`` is a same-file-system rename), flushed to
disk, and renamed into place; on any error the temporary file is removed and the
target is untouched.  No pyspark here.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import IO, Iterator, Optional


@contextlib.contextmanager
def atomic_file(path: str, mode: str = "wb", *, permissions: Optional[int] = None,
                suffix: str = ".tmp", encoding: Optional[str] = None,
                newline: Optional[str] = None) -> Iterator[IO]:
    """An open file whose content replaces ``path`` when the block ends without error.

    ``mode`` is ``"wb"`` or ``"w"`` (text, with ``encoding``/``newline``);
    ``permissions`` (e.g. ``0o600``) is set on the file before any byte is written, so a
    secret is never readable by others, even briefly.  The folder is created if needed.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    path = os.path.abspath(path)
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=suffix,
                               dir=directory)
    try:
        if permissions is not None:
            os.fchmod(fd, permissions)
        with os.fdopen(fd, mode, encoding=encoding, newline=newline) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path: str, *, suffix: str = ".tmp") -> Iterator[str]:
    """A temporary path beside ``path`` for a writer that takes a file name (e.g.
    ``Figure.savefig``); renamed onto ``path`` when the block ends without error."""
    path = os.path.abspath(path)
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=suffix,
                               dir=directory)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_bytes_atomically(path: str, data: bytes, *,
                           permissions: Optional[int] = None) -> None:
    """Replace ``path`` with ``data`` (see :func:`atomic_file`)."""
    with atomic_file(path, "wb", permissions=permissions) as handle:
        handle.write(data)


@contextlib.contextmanager
def atomic_directory(path: str) -> Iterator[str]:
    """A path (not yet created) beside ``path`` for a writer that builds a whole directory;
    it replaces ``path`` when the block ends without error, else is removed.

    An existing ``path`` is first moved aside, so the one rename that publishes the new
    directory is atomic; the old one is deleted afterwards.
    """
    import shutil

    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.tmp-", dir=parent)
    try:
        built = os.path.join(staging, "dir")
        yield built
        if os.path.exists(path):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.old-", dir=parent)
            os.rename(path, os.path.join(old, "dir"))
            os.rename(built, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(built, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
