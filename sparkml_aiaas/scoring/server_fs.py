"""The sink's filesystem calls where a Spark Connect server sees the files.

On a classic session the sink and the score job call Hadoop's FileSystem through the
driver's JVM.  A Connect client has no JVM and its disk is not the cluster's, so there
the same steps run as one :func:`~sparkml_aiaas.server_tasks.run_on_server` task each:
these functions are that task's code (package-level, so they pickle by reference and
the server's workers import them).  :class:`ServerFS` has the few Hadoop ``FileSystem``
methods the sink uses (``exists``, ``rename``, ``delete``, ``mkdirs``), over ``os`` for
local and FUSE paths (``/Volumes``, ``/dbfs``) and ``pyarrow.fs`` for URIs, so the
classic swap logic (:func:`sparkml_aiaas.scoring.sink._replace_with`) runs unchanged.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any, Dict, List, Optional

from sparkml_aiaas.errors import ConfigError


def is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file:")


def plain_path(path: str) -> str:
    """A ``file:`` URI as a plain path; anything else unchanged."""
    if path.startswith("file://"):
        return path[len("file://"):]
    return path[len("file:"):] if path.startswith("file:") else path


def checked_path(path: str) -> str:
    """``path`` for the server: a URI or an absolute local path, no trailing ``/``.

    A relative path would resolve against the server's working directory (and its
    Python workers' may differ from its JVM's), so it is refused."""
    path = path.rstrip("/") or "/"
    if is_local(path) and not os.path.isabs(plain_path(path)):
        raise ConfigError(f"output {path!r}: on Spark Connect paths name the server's "
                          "filesystem, so give an absolute path or a URI")
    return path


class ServerFS:
    """Hadoop-``FileSystem``-like calls on plain path strings (runs on the server)."""

    def _arrow(self, path: str):
        from pyarrow import fs as pafs

        return pafs.FileSystem.from_uri(path)

    def exists(self, path: str) -> bool:
        if is_local(path):
            return os.path.exists(plain_path(path))
        from pyarrow import fs as pafs

        fs, inner = self._arrow(path)
        return fs.get_file_info(inner).type != pafs.FileType.NotFound

    def rename(self, src: str, dst: str) -> bool:
        """Move ``src`` to the free name ``dst``; False when it could not (as Hadoop's)."""
        if self.exists(dst):  # Hadoop's rename refuses a taken name; os/pyarrow would not
            return False
        try:
            if is_local(src):
                os.rename(plain_path(src), plain_path(dst))
            else:
                fs, inner = self._arrow(src)
                fs.move(inner, self._arrow(dst)[1])
        except OSError:
            return False
        return True

    def delete(self, path: str, recursive: bool = True) -> bool:
        if not self.exists(path):
            return False
        if is_local(path):
            local = plain_path(path)
            if os.path.isdir(local):
                shutil.rmtree(local) if recursive else os.rmdir(local)
            else:
                os.remove(local)
            return True
        from pyarrow import fs as pafs

        fs, inner = self._arrow(path)
        if fs.get_file_info(inner).type == pafs.FileType.Directory:
            fs.delete_dir(inner)
        else:
            fs.delete_file(inner)
        return True

    def mkdirs(self, path: str) -> None:
        if is_local(path):
            os.makedirs(plain_path(path), exist_ok=True)
        else:
            fs, inner = self._arrow(path)
            fs.create_dir(inner, recursive=True)

    def names(self, path: str) -> List[str]:
        """Entry names of a directory (``[]`` when it does not exist)."""
        if is_local(path):
            try:
                return sorted(os.listdir(plain_path(path)))
            except FileNotFoundError:
                return []
        from pyarrow import fs as pafs

        fs, inner = self._arrow(path)
        infos = fs.get_file_info(pafs.FileSelector(inner, allow_not_found=True))
        return sorted(info.base_name for info in infos)


# ------------------------------------------------------------ tasks run on the server


def exists(path: str) -> bool:
    return ServerFS().exists(path)


def delete(path: str) -> bool:
    return ServerFS().delete(path, True)


def commit(staging: str, target: str, aside: str, aside_error: str, into_error: str,
           sweep_prefixes: Optional[List[str]] = None) -> None:
    """Swap the committed ``staging`` folder onto ``target`` (the classic sink's steps, in
    one task): ``_SUCCESS`` dropped when sweeping (a run partition), the previous target
    moved aside and deleted, staging removed whatever happens, and leftovers of killed
    attempts (names starting with ``sweep_prefixes`` beside ``target``) swept."""
    from sparkml_aiaas.scoring.sink import _replace_with

    fs = ServerFS()
    parent = target.rsplit("/", 1)[0] or "/"
    try:
        if sweep_prefixes:
            fs.delete(f"{staging}/_SUCCESS", False)
        fs.mkdirs(parent)
        _replace_with(fs, staging, target, aside, aside_error, into_error)
    finally:
        fs.delete(staging, True)
    for name in fs.names(parent) if sweep_prefixes else ():
        if name.startswith(tuple(sweep_prefixes)):
            fs.delete(f"{parent}/{name}", True)


def read_json(path: str) -> Dict[str, Any]:
    """The JSON object at ``path`` (a local or FUSE path), ``{}`` when there is none."""
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def write_json(path: str, payload: Dict[str, Any]) -> None:
    from sparkml_aiaas.pipeline import write_json_atomically

    write_json_atomically(path, payload)
