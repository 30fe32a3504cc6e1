"""The model registry through HadoopStorage (Hadoop's FileSystem API via py4j), on file:// URIs.

Hadoop's LocalFileSystem keeps ``.crc`` side files, so these tests change files
through the storage (as an HDFS user would), never with plain ``open()``.
"""

import glob
import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import pandas as pd
import pytest

from sparkml_aiaas.errors import ConfigError, ModelFormatError
from sparkml_aiaas.registry import (
    DEFAULT_KEY_ENV,
    ModelNotFoundError,
    ModelRegistry,
    content_digest,
)

COLS = ["x0", "x1", "x2"]
OUTPUTS = ["rawPrediction", "probability", "prediction"]
KEY = "k" * 32


@pytest.fixture(autouse=True)
def _no_ambient_key(monkeypatch):
    monkeypatch.delenv(DEFAULT_KEY_ENV, raising=False)


@pytest.fixture(scope="module")
def pdf():
    rng = np.random.default_rng(11)
    X = rng.normal(size=(60, 3))
    frame = pd.DataFrame(X, columns=COLS)
    frame["label"] = (X @ [1.0, -2.0, 0.5] + rng.normal(size=60) > 0).astype(float)
    frame["id"] = np.arange(60)
    return frame


@pytest.fixture(scope="module")
def fitted(df):
    from sparkml_aiaas.models import LogisticRegression

    return LogisticRegression(featuresCols=COLS, maxIter=10, regParam=0.01).fit(df)


@pytest.fixture(scope="module")
def model_dir(fitted, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("saved") / "lr")
    fitted.write().save(path)
    return path


@pytest.fixture(scope="module")
def expected(fitted, df):
    rows = fitted.transform(df).select("id", *OUTPUTS).orderBy("id").collect()
    # transform's binary rawPrediction is [-m, m]; the predictor gives m.
    return _outputs([r["rawPrediction"][1] for r in rows], [list(r["probability"]) for r in rows],
                    [r["prediction"] for r in rows])


def _outputs(raw, probability, prediction):
    return {"rawPrediction": np.asarray(raw, dtype=float),
            "probability": np.array([list(p) for p in probability], dtype=float),
            "prediction": np.asarray(prediction, dtype=float)}


def _predict(registry, ref, pdf):
    frame = registry.load_predictor(ref).predict(pdf.sort_values("id"))
    return _outputs(frame["rawPrediction"], frame["probability"], frame["prediction"])


def _assert_same(a, b):
    for name in OUTPUTS:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.fixture
def storage(spark):
    from sparkml_aiaas.registry.hadoop_storage import HadoopStorage

    return HadoopStorage(spark)


@pytest.fixture
def registry(tmp_path, storage):
    return ModelRegistry(f"file://{tmp_path}/reg", storage=storage)


def _local_copies():
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "sparkml_aiaas_registry-*")))


# --------------------------------------------------------------------------- registry
def test_register_alias_load_round_trip(tmp_path, registry, fitted, model_dir, df, pdf,
                                        expected):
    from sparkml_aiaas.registry.hadoop_storage import HadoopStorage

    assert isinstance(registry.storage, HadoopStorage)
    assert registry.root == f"file:{tmp_path}/reg"  # kept as a (qualified) Hadoop URI
    before = _local_copies()
    assert registry.register(fitted, "bc", metrics={"auc": 0.9}) == 1
    assert registry.register(model_dir, "bc") == 2
    assert registry.versions("bc") == [1, 2]
    # Staged on local disk, copied up, renamed into place: nothing left behind anywhere.
    assert os.listdir(tmp_path / "reg" / "bc" / ".staging") == []
    assert _local_copies() == before
    assert sorted(n for n in os.listdir(tmp_path / "reg" / "bc" / "versions" / "1")
                  if not n.endswith(".crc")) == ["model", "registry.json"]

    assert registry.set_alias("bc", "production", 1) is None
    assert registry.set_alias("bc", "production", 2) == 1  # the alias moves
    assert registry.aliases("bc") == {"production": 2}
    assert _local_copies() == before  # set_alias verifies a copy and removes it

    mv = registry.resolve("bc@production")
    assert (mv.version, mv.aliases) == (2, ["production"])
    # A verified local copy: what was checked is what loaders read.
    assert os.path.isfile(os.path.join(mv.path, "arrays.npz"))
    assert os.path.basename(os.path.dirname(os.path.dirname(mv.path))).startswith(
        "sparkml_aiaas_registry-")
    mv1 = registry.resolve("bc/1")
    assert mv.metadata["files"]["model/arrays.npz"] == mv1.metadata["files"]["model/arrays.npz"]
    # resolve()'s copies belong to the caller until released.
    for resolved in (mv, mv1):
        registry.storage.release_local(resolved.bundle_path)
        assert not os.path.exists(resolved.path)
    assert _local_copies() == before

    _assert_same(_predict(registry, "bc@production", pdf), expected)
    _assert_same(_predict(registry, "bc/1", pdf), expected)
    loaded = registry.load("bc/1")
    assert loaded.uid == fitted.uid
    assert registry.load_preprocessor("bc/1") is None
    # Loaders read everything into memory; their copies are removed right after.
    assert _local_copies() == before
    # list() reads metadata only and copies nothing: its paths stay remote.
    listed = registry.list("bc")
    assert [(v.version, v.aliases) for v in listed] == [(1, []), (2, ["production"])]
    assert listed[0].path == f"file:{tmp_path}/reg/bc/versions/1/model"
    with pytest.raises(ModelNotFoundError):
        registry.resolve("bc/9")
    with pytest.raises(ModelNotFoundError):
        registry.resolve("bc@canary")


def test_tampered_files_refused_naming_the_file(registry, model_dir):
    fs = registry.storage
    registry.register(model_dir, "bc")
    vdir = f"{registry.root}/bc/versions/1"
    arrays = f"{vdir}/model/arrays.npz"
    original = fs.read_bytes(arrays)
    before = _local_copies()

    tampered = bytearray(original)
    tampered[-20] ^= 0xFF
    fs.write_bytes(arrays, bytes(tampered))
    for call in (registry.resolve, registry.load_predictor):
        with pytest.raises(ModelFormatError, match="checksum mismatch for file model/arrays.npz"):
            call("bc/1")
    with pytest.raises(ModelFormatError, match="model/arrays.npz"):
        registry.set_alias("bc", "production", 1)  # a corrupt version is never promoted
    assert registry.aliases("bc") == {}
    assert _local_copies() == before  # refused copies are removed at once
    fs.write_bytes(arrays, original)
    registry.resolve("bc/1")

    fs.write_bytes(f"{vdir}/model/metadata/evil.py", b"print('hi')\n")
    with pytest.raises(ModelFormatError, match="unexpected file model/metadata/evil.py"):
        registry.resolve("bc/1")
    fs.remove(f"{vdir}/model/metadata/evil.py")
    fs.remove(f"{vdir}/model/metadata/part-00000")
    with pytest.raises(ModelFormatError, match="file model/metadata/part-00000 is missing"):
        registry.resolve("bc")


def _rewrite_artifact_and_checksums(fs, vdir):
    """An attacker's edit through HDFS: new coefficients, every checksum updated to match."""
    def sha(path):
        return hashlib.sha256(fs.read_bytes(path)).hexdigest()

    arrays_path = f"{vdir}/model/arrays.npz"
    with np.load(io.BytesIO(fs.read_bytes(arrays_path))) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["coefficients"] = -arrays["coefficients"]
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    fs.write_bytes(arrays_path, buffer.getvalue())
    model_meta_path = f"{vdir}/model/metadata.json"
    model_meta = json.loads(fs.read_bytes(model_meta_path))
    model_meta["files"]["arrays.npz"]["sha256"] = sha(arrays_path)
    fs.write_bytes(model_meta_path, json.dumps(model_meta).encode())
    meta = json.loads(fs.read_bytes(f"{vdir}/registry.json"))
    for rel in ("model/arrays.npz", "model/metadata.json"):
        meta["files"][rel] = sha(f"{vdir}/{rel}")
    meta["digest"] = content_digest(meta["files"])
    fs.write_bytes(f"{vdir}/registry.json", json.dumps(meta).encode())


def test_signed_registry_catches_a_consistent_rewrite(tmp_path, storage, model_dir, pdf):
    root = f"file://{tmp_path}/reg"
    signed = ModelRegistry(root, storage=storage, key=KEY.encode())
    signed.register(model_dir, "bc")
    assert storage.exists(f"{signed.root}/bc/versions/1/registry.json.sig")
    assert signed.describe("bc")["signed"] is True
    before = _predict(signed, "bc", pdf)

    _rewrite_artifact_and_checksums(storage, f"{signed.root}/bc/versions/1")
    with pytest.raises(ModelFormatError, match="signature .* does not match"):
        signed.load_predictor("bc")
    # Without a key only checksums are checked: the consistent rewrite goes unnoticed.
    unsigned = ModelRegistry(root, storage=storage)
    after = _predict(unsigned, "bc", pdf)
    assert not np.array_equal(before["rawPrediction"], after["rawPrediction"])


def test_delete_never_reuses_numbers(tmp_path, registry, model_dir):
    assert [registry.register(model_dir, "bc") for _ in range(3)] == [1, 2, 3]
    registry.delete("bc", 3)
    assert registry.versions("bc") == [1, 2]
    assert registry.register(model_dir, "bc") == 4
    registry.set_alias("bc", "production", 4)
    with pytest.raises(ConfigError, match="production"):
        registry.delete("bc", 4)
    registry.delete("bc", 4, force=True)
    assert registry.aliases("bc") == {}
    assert registry.versions("bc") == [1, 2]
    with pytest.raises(ModelNotFoundError):
        registry.delete("bc", 3)
    assert registry.register(model_dir, "bc") == 5
    assert os.listdir(tmp_path / "reg" / "bc" / ".trash") == []


# --------------------------------------------------------------------------- primitives
def test_storage_primitives(tmp_path, storage):
    base = storage.normalize_root(f"file://{tmp_path}")
    assert base == f"file:{tmp_path}"
    assert storage.join(base + "/", "a", "b/") == f"{base}/a/b"

    marker = storage.join(base, "allocated", "1")
    storage.makedirs(storage.join(base, "allocated"))
    assert storage.create_exclusive(marker) is True
    assert storage.create_exclusive(marker) is False  # exactly one caller wins
    assert storage.exists(marker) and not storage.isdir(marker)

    storage.makedirs(storage.join(base, "src", "sub"))
    storage.write_bytes(storage.join(base, "src", "sub", "f.bin"), b"abc")
    storage.makedirs(storage.join(base, "taken"))
    with pytest.raises(FileExistsError) as info:
        storage.rename(storage.join(base, "src"), storage.join(base, "taken"))
    assert f"{base}/src" in str(info.value) and f"{base}/taken" in str(info.value)
    assert storage.listdir(storage.join(base, "taken")) == []  # not moved *into* it
    storage.rename(storage.join(base, "src"), storage.join(base, "dst"))
    assert not storage.exists(storage.join(base, "src"))
    assert list(storage.walk_files(storage.join(base, "dst"))) == ["sub/f.bin"]
    assert storage.sha256(storage.join(base, "dst", "sub", "f.bin")) == \
        hashlib.sha256(b"abc").hexdigest()

    alias = storage.join(base, "aliases", "production")
    storage.makedirs(storage.join(base, "aliases"))
    storage.write_atomic(alias, b'{"version": 1}\n')
    storage.write_atomic(alias, b'{"version": 2}\n')
    assert storage.read_bytes(alias) == b'{"version": 2}\n'
    assert storage.listdir(storage.join(base, "aliases")) == ["production"]  # no temp left

    with pytest.raises(FileNotFoundError, match="missing"):
        storage.read_bytes(storage.join(base, "missing"))
    assert storage.listdir(storage.join(base, "missing")) == []
    assert list(storage.walk_files(storage.join(base, "missing"))) == []
    assert not storage.isdir(storage.join(base, "missing"))

    local = storage.local_path(storage.join(base, "dst"))
    assert open(os.path.join(local, "sub", "f.bin"), "rb").read() == b"abc"
    assert os.listdir(os.path.join(local, "sub")) == ["f.bin"]  # no .crc side files
    storage.release_local(local)
    assert not os.path.exists(local)

    copied = storage.join(base, "copied")
    storage.copytree(str(tmp_path / "dst"), copied)
    assert list(storage.walk_files(copied)) == ["sub/f.bin"]
    with pytest.raises(FileExistsError, match="copied"):
        storage.copytree(str(tmp_path / "dst"), copied)
    storage.rmtree(copied)
    assert not storage.exists(copied)
    storage.remove(marker)
    with pytest.raises(FileNotFoundError):
        storage.remove(marker)


# --------------------------------------------------------------------------- roots
def test_hadoop_root_needs_an_active_session(tmp_path):
    code = (
        "from sparkml_aiaas.errors import ConfigError\n"
        "from sparkml_aiaas.registry import ModelRegistry\n"
        "try:\n"
        "    ModelRegistry('hdfs://namenode:8020/models')\n"
        "except ConfigError as exc:\n"
        "    print(exc)\n"
        "else:\n"
        "    raise SystemExit('no ConfigError')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "active SparkSession" in result.stdout and "FUSE" in result.stdout


def test_hdfs_root_with_a_session_uses_hadoop_storage(spark):
    from sparkml_aiaas.registry.hadoop_storage import HadoopStorage

    registry = ModelRegistry("hdfs://namenode.invalid:8020/models")
    assert isinstance(registry.storage, HadoopStorage)
    assert registry.root == "hdfs://namenode.invalid:8020/models"


@pytest.mark.parametrize("root", ["s3://bucket/models", "s3a://bucket/m", "gs://b/m",
                                  "abfs://c@acct.dfs.core.windows.net/m", "wasb://c@a/m"])
def test_object_stores_refused_without_explicit_storage(root):
    with pytest.raises(ConfigError, match="only local paths") as info:
        ModelRegistry(root)
    assert "object store" in str(info.value) and "HadoopStorage" in str(info.value)


def test_dbfs_refused_with_fuse_hint():
    with pytest.raises(ConfigError, match="/dbfs/"):
        ModelRegistry("dbfs:/models")
