"""Provenance: the environment record, content hashes of the input, and the array
comparison that reproduce relies on.  Spark only where the files are listed."""

import os
import shutil

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sparkml_aiaas.registry import provenance
from sparkml_aiaas.registry.reproduce import compare_arrays


def test_environment_records_code_libraries_blas_and_cpu():
    env = provenance.environment()
    for key in ("sparkml_aiaas", "code_digest", "python", "numpy", "pyspark", "blas", "cpu",
                "machine"):
        assert env[key], key
    assert len(env["code_digest"]) == 64
    assert env["code_digest"] == provenance.code_digest()  # stable within a checkout
    assert env["numpy"] == np.__version__


def test_environment_differences_name_the_library_and_check_only_the_family():
    recorded = provenance.environment()
    here = dict(recorded, numpy="0.0.1", torch="9.9", cpu="another CPU")
    differences = provenance.environment_differences(recorded, here, "linear")
    assert differences == [f"numpy {recorded['numpy']} (recorded) != 0.0.1 (here)"]
    # torch decides a torch model's bits, not a logistic regression's
    assert any(d.startswith("torch ") for d in
               provenance.environment_differences(recorded, here, "torch"))
    assert provenance.hardware_differences(recorded, here) == [
        f"cpu {recorded['cpu']!r} (recorded) != 'another CPU' (here)"]
    code = provenance.environment_differences(recorded, dict(recorded, code_digest="f" * 64),
                                              "linear")
    assert len(code) == 1 and code[0].startswith("package code (sha256 of its .py files)")


def test_hash_files_streams_content(tmp_path):
    path = tmp_path / "a b.csv"
    data = os.urandom(9 << 20)  # more than one read chunk
    path.write_bytes(data)
    import hashlib

    expected = (len(data), hashlib.sha256(data).hexdigest())
    assert provenance.hash_files([str(path)]) == [expected]
    assert provenance.hash_files([path.as_uri()]) == [expected]  # file: URI, %20 decoded


@settings(max_examples=50, deadline=None)
@given(st.lists(st.from_regex(r"[a-z]{1,3}(/[a-z]{1,3}){0,2}\.csv", fullmatch=True),
                min_size=1, max_size=5, unique=True))
def test_relative_names_rebuild_the_paths(names):
    files = sorted(f"file:/data/in/{n}" for n in names)
    root, relative = provenance._relative(files)
    assert [f"{root}/{r}" for r in relative] == files


def test_check_input_names_changed_gone_and_new_files_and_accepts_a_copy(spark, tmp_path,
                                                                          monkeypatch):
    folder = tmp_path / "input"
    folder.mkdir()
    (folder / "a.csv").write_text("x,y\n1,2\n")
    (folder / "b.csv").write_text("x,y\n3,4\n")
    # A relative input path is recorded absolute: reproduce may run from another folder.
    with monkeypatch.context() as patch:
        patch.chdir(tmp_path)
        record = provenance.input_record(spark, {"path": "input", "format": "csv"},
                                         {"delta_version": None})
    assert record["path"] == str(folder)
    assert [f["path"] for f in record["manifest"]["files"]] == ["a.csv", "b.csv"]
    assert provenance.check_input(spark, record) == []
    # A copy with a new modification time and the same bytes is the same input.
    shutil.copy(folder / "a.csv", tmp_path / "a.tmp")
    os.replace(tmp_path / "a.tmp", folder / "a.csv")
    assert provenance.check_input(spark, record) == []
    (folder / "b.csv").write_text("x,y\n3,5\n")
    (folder / "c.csv").write_text("x,y\n")
    os.remove(folder / "a.csv")
    assert provenance.check_input(spark, record) == [
        "input file gone: a.csv",
        "new input file: c.csv (not among the 2 recorded)",
        "input file changed: b.csv (content differs; same size)"]
    shutil.rmtree(folder)
    problems = provenance.check_input(spark, record)
    assert len(problems) == 1 and problems[0].startswith(f"input {str(folder)!r}")


def test_compare_arrays_names_each_difference():
    a = {"coefficients": np.array([1.0, 2.0, np.nan]), "intercept": np.array([0.5]),
         "classes": np.array([0, 1])}
    assert compare_arrays("model", a, {k: v.copy() for k, v in a.items()}) == []
    b = dict(a, coefficients=np.array([1.0, 2.0 + 2e-15, np.nan]), classes=np.array([0, 1, 2]))
    del b["intercept"]
    found = {d.name: d for d in compare_arrays("model", a, b)}
    assert found["coefficients"].detail == "1 of 3 values differ, max |diff| 2.22e-15"
    assert found["intercept"].detail == "missing from the retrained model"
    assert "shape/dtype (2,)" in found["classes"].detail


@pytest.mark.parametrize("family, checked", [("linear", ()), ("torch", ("torch",)),
                                             ("xgboost", ("xgboost",))])
def test_checked_keys(family, checked):
    keys = provenance.checked_keys(family)
    assert {"code_digest", "numpy", "pyspark", "blas"} <= set(keys)
    assert set(checked) <= set(keys)


def test_blas_is_numpys_whatever_else_is_loaded():
    """scipy and torch load their own BLAS; the record names the one numpy calls."""
    import scipy.linalg  # noqa: F401 - another OpenBLAS in the process
    from threadpoolctl import threadpool_info

    numpy_home = os.path.dirname(np.__file__)
    (ours,) = [e for e in threadpool_info() if e["user_api"] == "blas"
               and e["filepath"].startswith((numpy_home + os.sep, numpy_home + ".libs"))]
    assert provenance.blas().startswith(f"{ours['internal_api']} {ours['version']}")
