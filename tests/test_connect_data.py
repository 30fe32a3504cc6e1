"""Data on Spark Connect: ingest (quarantine, PII), the data fingerprint, Delta reads,
preprocessing and the CLI train job give the classic path's results, and files are read
where the server sees them (the client's readers are disabled in the Connect tests: the
server is another process, so only its own copies of the functions run there)."""

import importlib
import json
import os

import numpy as np
import pandas as pd
import pytest

from sparkml_aiaas.data import ingest, read_table, write_table
from sparkml_aiaas.data.ingest_job import fingerprint_files, source_files
from sparkml_aiaas.errors import ConfigError, InputNotFoundError

# The module, not the function sparkml_aiaas.data re-exports under its name.
ingest_module = importlib.import_module("sparkml_aiaas.data.ingest")

PII_KEY = "connect-test-key-0123456789"
SCHEMA = "id INT NOT NULL, email STRING, ssn STRING, x DOUBLE"
PII = {"columns": {"email": "hash", "ssn": "drop"}, "key_env": "CONNECT_PII_KEY"}
# Two files, columns in another order in the second (headers map them per file), a BOM,
# and rows rejected for each reason the reader finds before typing and after it.
FILES = {
    "a.csv": (
        "id,email,ssn,x\n"
        "1,ann@example.com,111-22-3333,1.5\n"
        "2,bob@example.com,444-55-6666,oops\n"
        '3,"carl@example.com",777-88-9999,3.5,extra\n'
        '4,"dora@example.com,777-00-1234,4.5\n'
        "5,,123-45-6789,5.5\n"
    ),
    "b c.csv": (
        "\ufeffx,id,ssn,email\n"
        "6.5,6,222-33-4444,eve@example.com\n"
        "7.5,,000-00-0000,fay@example.com\n"
        "\n"
        "8.5,8\n"
    ),
}


@pytest.fixture(autouse=True)
def pii_key(monkeypatch):
    monkeypatch.setenv("CONNECT_PII_KEY", PII_KEY)


@pytest.fixture(scope="module")
def csv_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("connect-csv")
    for name, text in FILES.items():
        (folder / name).write_bytes(text.encode("utf-8"))
    return str(folder)


def _outcome(result):
    accepted = sorted(tuple(r) for r in result.accepted.collect())
    rejected = sorted((tuple(r) for r in result.rejected.collect()), key=repr)
    out = (result.accepted.columns, accepted, rejected, dict(result.counts), dict(result.reasons))
    result.unpersist()
    return out


@pytest.fixture(scope="module")
def classic_ingest(spark, csv_dir):
    os.environ["CONNECT_PII_KEY"] = PII_KEY
    try:
        return {multi: _outcome(ingest(spark, csv_dir, SCHEMA, pii=PII,
                                       options={"multiLine": multi}))
                for multi in (False, True)}
    finally:
        del os.environ["CONNECT_PII_KEY"]


def _not_on_the_client(real):
    """``real``, failing when called in this (the client's) process: a function shipped to
    the server (by value, as a monkeypatched one is) still runs there."""
    client = os.getpid()

    def guarded(*args):
        if os.getpid() == client:
            raise AssertionError(f"{real.__name__} ran on the client: {args}")
        return real(*args)

    return guarded


@pytest.fixture
def server_reads_only(monkeypatch):
    """Fail if the client reads a file start or checks a path on its own disk."""
    for name in ("_local_file_start", "_check_local_paths_exist"):
        monkeypatch.setattr(ingest_module, name, _not_on_the_client(getattr(ingest_module, name)))


@pytest.mark.parametrize("multi", [False, True], ids=["lines", "whole-files"])
def test_connect_ingest_matches_classic(connect, csv_dir, classic_ingest, server_reads_only,
                                        tmp_path, multi):
    quarantine = str(tmp_path / "quarantine")
    result = ingest(connect, csv_dir, SCHEMA, pii=PII, options={"multiLine": multi},
                    quarantine_path=quarantine)
    columns, accepted, rejected, counts, reasons = _outcome(result)
    assert (columns, accepted, rejected, counts, reasons) == classic_ingest[multi]
    # In whole-file mode too, 'b c.csv' is split by its own header (its name as a URI).
    assert columns == ["id", "email", "x"] and counts["rejected"] == 5
    # The quarantine was written by the server, PII masked before anything was written.
    written = b"".join(open(os.path.join(root, f), "rb").read()
                       for root, _, files in os.walk(quarantine) for f in files)
    assert written and not any(s in written for s in (b"example.com", b"777-88", b"000-00"))


def test_connect_ingest_errors_come_from_the_server(connect, csv_dir, server_reads_only):
    with pytest.raises(InputNotFoundError, match="does not exist"):
        ingest(connect, os.path.join(csv_dir, "missing.csv"), SCHEMA)
    with pytest.raises(InputNotFoundError, match="matches no files"):
        ingest(connect, os.path.join(csv_dir, "*.tsv"), SCHEMA)


@pytest.fixture(scope="module")
def classic_fingerprint(spark, csv_dir):
    files = source_files(spark, csv_dir)
    return files, fingerprint_files(spark, files)


def test_connect_fingerprint_equals_classic(connect, csv_dir, classic_fingerprint):
    files, fingerprint = classic_fingerprint
    assert source_files(connect, csv_dir) == files
    assert any("%20" in f for f in files)  # URIs: the file with a space is encoded
    assert fingerprint_files(connect, files) == fingerprint
    with pytest.raises(InputNotFoundError, match="does not exist"):
        fingerprint_files(connect, files + [files[0] + ".gone"])


# ------------------------------------------------------------------------------ Delta


@pytest.fixture(scope="module")
def delta_table(spark, tmp_path_factory):
    """A two-version Delta table (delta-rs writer), and what classic reads of it."""
    table = str(tmp_path_factory.mktemp("connect-delta") / "people")
    write_table(spark.createDataFrame([(1, "1.5"), (2, "bad")], "id int, x string"), table)
    write_table(spark.createDataFrame([(3, "3.5")], "id int, x string"), table)
    classic = {version: sorted(read_table(spark, table, version=version).collect())
               for version in (None, 0)}
    return table, classic


def test_connect_reads_delta(connect, delta_table):
    from sparkml_aiaas.data.delta import is_delta_table, table_version

    table, classic = delta_table
    assert table_version(connect, table) == 1 and is_delta_table(connect, table)
    assert not is_delta_table(connect, table + "-none")
    for version, rows in classic.items():
        assert sorted(read_table(connect, table, version=version).collect()) == rows
    with pytest.raises(InputNotFoundError, match="has no version 7"):
        read_table(connect, table, version=7)
    result = ingest(connect, table, "id INT NOT NULL, x DOUBLE", format="delta")
    _, accepted, rejected, counts, _ = _outcome(result)
    assert accepted == [(1, 1.5), (3, 3.5)] and counts["rejected"] == 1
    assert rejected[0][:2] == ('{"id":2,"x":"bad"}', "unparsable:x: 'bad' is not a valid DOUBLE")


def test_connect_delta_rs_writes_need_classic(connect, delta_table):
    table, _ = delta_table
    frame = connect.createDataFrame([(9, "9.5")], "id int, x string")
    for fmt in ("delta", "parquet"):
        with pytest.raises(ConfigError, match="needs a classic Spark session.*delta-spark"):
            write_table(frame, table, format=fmt)
    assert sorted(read_table(connect, table).collect()) == delta_table[1][None]


# ---------------------------------------------------------------------- preprocessing


def _pre_pdf():
    rng = np.random.default_rng(5)
    n = 400
    a = rng.normal(3.0, 2.0, n)
    a[[1, 9, 30]] = np.nan
    return pd.DataFrame({
        "a": a, "b": rng.exponential(2.0, n), "n": rng.integers(0, 9, n).astype(float),
        "city": rng.choice(["x", "y", "z", None], n), "tag": rng.choice(list("pqrstu"), n),
        "id": np.arange(n),
    })


def _preprocessor():
    from sparkml_aiaas.preprocessing import Preprocessor

    return Preprocessor(numericCols=["a", "b", "n"], categoricalCols=["city"], hashedCols=["tag"],
                        numHashFeatures=16, imputeStrategy="median", scaling="robust",
                        logCols=["b"], clipBounds={"n": [1, 7]}, handleUnseen="keep")


def _vectors(frame):
    rows = frame.orderBy("id").select("features").collect()
    return np.stack([r["features"].toArray() for r in rows])


@pytest.fixture(scope="module")
def classic_preprocessed(spark):
    model = _preprocessor().fit(spark.createDataFrame(_pre_pdf()))
    return model.fitted.to_dict(), _vectors(model.transform(spark.createDataFrame(_pre_pdf())))


def test_connect_preprocessing_fit_transform_save_load(connect, classic_preprocessed, tmp_path):
    from sparkml_aiaas.preprocessing import PreprocessorModel

    fitted, vectors = classic_preprocessed
    frame = connect.createDataFrame(_pre_pdf())
    model = _preprocessor().fit(frame)
    assert model.fitted.to_dict() == fitted
    np.testing.assert_array_equal(_vectors(model.transform(frame)), vectors)
    path = str(tmp_path / "pre")
    model.write().save(path)
    loaded = PreprocessorModel.load(path)
    np.testing.assert_array_equal(_vectors(loaded.transform(frame)), vectors)


# ----------------------------------------------------------------------------- CLI


def _train_config(tmp_path, csv_path, name):
    config = tmp_path / f"{name}.yaml"
    config.write_text(f"""
input: {{path: "{csv_path}", schema: "id INT, a DOUBLE, b DOUBLE, label INT",
        quarantine_path: "{tmp_path / (name + '-quarantine')}"}}
split: {{key: id, test_fraction: 0.25}}
model: {{label_col: label, features: [a, b], params: {{reg_param: 0.01}}}}
output: {{model_path: "{tmp_path / (name + '-model')}",
         metrics_path: "{tmp_path / (name + '-metrics.json')}"}}
""")
    return str(config)


@pytest.fixture(scope="module")
def train_csv(tmp_path_factory):
    rng = np.random.default_rng(8)
    X = rng.normal(size=(300, 2))
    label = (X @ [1.5, -1.0] + rng.normal(scale=0.5, size=300) > 0).astype(int)
    lines = "".join(f"{i},{a:.17g},{b:.17g},{y}\n" for i, ((a, b), y) in enumerate(zip(X, label)))
    path = tmp_path_factory.mktemp("connect-train") / "train.csv"
    path.write_text("id,a,b,label\n" + lines + "300,not-a-number,1.0,1\n")
    return str(path)


@pytest.fixture(scope="module")
def classic_train(spark, train_csv, tmp_path_factory):
    from sparkml_aiaas.cli import main

    tmp_path = tmp_path_factory.mktemp("connect-train-classic")
    assert main(["train", "--config", _train_config(tmp_path, train_csv, "classic")]) == 0
    return json.loads((tmp_path / "classic-metrics.json").read_text())


def test_connect_cli_train_matches_classic(connect, connect_server, train_csv, classic_train,
                                           server_reads_only, tmp_path, capsys):
    from sparkml_aiaas.cli import main

    config = _train_config(tmp_path, train_csv, "remote")
    assert main(["train", "--config", config, "--remote", connect_server.url]) == 0, \
        capsys.readouterr()
    got = json.loads((tmp_path / "remote-metrics.json").read_text())
    assert got["ingest"] == classic_train["ingest"] == {"read": 301, "accepted": 300,
                                                        "rejected": 1, "blank": 0}
    assert got["data_source"] == classic_train["data_source"]
    for key in ("metrics", "objective_history", "train_rows", "test_rows", "model_id"):
        assert got[key] == classic_train[key], key
