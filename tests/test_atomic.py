"""Local files are replaced whole or not at all (sparkml_aiaas.atomic)."""

import os
import stat

import pytest

from sparkml_aiaas.atomic import atomic_file, atomic_path, write_bytes_atomically


def test_replaces_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "out.json"
    write_bytes_atomically(str(target), b"old")
    with atomic_file(str(target), "w", encoding="utf-8") as f:
        f.write("new")
        assert target.read_bytes() == b"old"  # readers see the old file until the end
    assert target.read_text() == "new"
    assert os.listdir(target.parent) == ["out.json"]


def test_a_failed_write_keeps_the_old_content(tmp_path):
    target = tmp_path / "out.bin"
    write_bytes_atomically(str(target), b"old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_file(str(target)) as f:
            f.write(b"half")
            raise RuntimeError("boom")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(str(target)) as tmp:
            open(tmp, "wb").write(b"half")
            raise KeyboardInterrupt
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_permissions_are_set_before_the_content(tmp_path):
    target = tmp_path / "tokens.json"
    with atomic_file(str(target), "w", permissions=0o600) as f:
        assert stat.S_IMODE(os.fstat(f.fileno()).st_mode) == 0o600
        f.write("[]")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_atomic_path_for_writers_that_take_a_name(tmp_path):
    target = tmp_path / "plot.png"
    with atomic_path(str(target), suffix=".png") as tmp:
        assert tmp.endswith(".png") and os.path.basename(tmp).startswith(".plot.png.")
        open(tmp, "wb").write(b"png")
    assert target.read_bytes() == b"png"


def test_bad_mode_is_refused(tmp_path):
    with pytest.raises(ValueError, match="mode must be 'w' or 'wb', got 'a'"):
        with atomic_file(str(tmp_path / "x"), "a"):
            pass
