"""The ingest job (``sparkml-aiaas ingest``): sinks, quarantine, reject threshold, PII, reports,
and training that records the data source it read (Delta version, file fingerprint)."""

import json
import os
import sys

import pytest

from sparkml_aiaas.cli import EXIT_USER_ERROR, main
from sparkml_aiaas.config import IngestJobConfig, TrainJobConfig, load_config, validate_config
from sparkml_aiaas.data.ingest_job import fingerprint_files, run_ingest, source_files
from sparkml_aiaas.errors import ConfigError, DataValidationError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INGEST_YAML = os.path.join(ROOT, "conf", "ingest.yaml")
TRAIN_YAML = os.path.join(ROOT, "conf", "train.yaml")

SCHEMA = "id INT NOT NULL, x DOUBLE, label INT NOT NULL"
QUARANTINE_COLUMNS = ["_raw", "_reason", "_source_file", "_line", "_byte_offset", "_byte_length",
                      "_ingested_at", "_run_id"]


def _write_csv(path, rows=10, bad=()):
    """``rows`` records; those in ``bad`` get an unparsable x (line = index + 2)."""
    lines = ["id,x,label"]
    for i in range(rows):
        x = "oops" if i in bad else f"{i * 0.5}"
        lines.append(f"{i},{x},{i % 2}")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _config(tmp_path, data, output, quarantine=None, **extra):
    raw = {"spark": {"app_name": "t"}, "input": {"path": data, "schema": SCHEMA},
           "output": output}
    if quarantine is not None:
        raw["quarantine"] = quarantine
    for key, value in extra.items():
        if key in ("max_reject_fraction", "on_schema_drift", "options"):
            raw["input"][key] = value
        else:
            raw[key] = value
    return validate_config(IngestJobConfig, raw)


def _delta_rows(path):
    import deltalake

    table = deltalake.DeltaTable(str(path))
    return table.version(), table.to_pyarrow_table()


def test_parquet_sink_and_parquet_quarantine_with_exact_counts(spark, tmp_path):
    data = _write_csv(tmp_path / "in.csv", rows=10, bad=(3, 7))
    config = _config(tmp_path, data,
                     {"path": str(tmp_path / "out"), "format": "parquet"},
                     {"path": str(tmp_path / "q"), "format": "parquet"},
                     report_path=str(tmp_path / "report.json"))
    report = run_ingest(spark, config)

    assert report.counts == {"read": 10, "accepted": 8, "rejected": 2, "blank": 0}
    assert report.reasons == {"unparsable:x": 2}
    assert report.status == "succeeded"
    out = spark.read.parquet(str(tmp_path / "out"))
    assert out.count() == 8 and out.columns == ["id", "x", "label"]
    assert sorted(r.id for r in out.collect()) == [0, 1, 2, 4, 5, 6, 8, 9]
    q = spark.read.parquet(str(tmp_path / "q"))
    assert q.columns == QUARANTINE_COLUMNS
    rows = sorted(q.collect(), key=lambda r: r._line)
    assert [r._line for r in rows] == [5, 9]
    assert rows[0]._raw == "3,oops,1" and rows[0]._reason.startswith("unparsable:x")
    assert {r._run_id for r in rows} == {report.run_id}
    assert rows[0]._ingested_at is not None
    assert dict(q.dtypes)["_ingested_at"] == "timestamp"

    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["counts"] == report.counts and saved["status"] == "succeeded"
    assert saved["source"]["files"][0].endswith("in.csv") and len(saved["source"]["fingerprint"]) == 64
    assert saved["schema"] == "id INT NOT NULL, x DOUBLE, label INT NOT NULL"
    assert saved["output"]["format"] == "parquet" and saved["delta_versions"] == {}
    assert saved["run_id"] == report.run_id and saved["started_at"] <= saved["finished_at"]
    # Atomic writes leave no staging folders or temporary files behind.
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]


def test_delta_sink_and_quarantine_through_the_cli(spark, tmp_path, capsys):
    data = _write_csv(tmp_path / "in.csv", rows=10, bad=(4,))
    config = tmp_path / "ingest.yaml"
    config.write_text(f"""
input: {{path: {data}, schema: "{SCHEMA}", max_reject_fraction: 0.2}}
output: {{path: {tmp_path / 'table'}, format: delta, mode: append}}
quarantine: {{path: {tmp_path / 'q'}, format: delta}}
report_path: {tmp_path / 'report.json'}
""")
    assert main(["ingest", "--config", str(config)]) == 0
    first = capsys.readouterr().out.splitlines()
    summary = [line for line in first if line.startswith("ingested ")]
    assert len(summary) == 1, first
    assert "read=10 accepted=9 rejected=1 blank=0 top_reasons=unparsable:x:1" in summary[0]
    assert f"output={tmp_path / 'table'}@v0" in summary[0]
    assert f"quarantine={tmp_path / 'q'}@v0" in summary[0]
    assert "rows_per_s=" in summary[0] and "seconds=" in summary[0]

    version, table = _delta_rows(tmp_path / "table")
    assert version == 0 and table.num_rows == 9 and table.column_names == ["id", "x", "label"]
    version, quarantine = _delta_rows(tmp_path / "q")
    assert version == 0 and quarantine.column_names == QUARANTINE_COLUMNS
    assert quarantine.column("_line").to_pylist() == [6]

    # Appending again: one more commit on each table, the rows add up.
    assert main(["ingest", "--config", str(config)]) == 0
    capsys.readouterr()
    version, table = _delta_rows(tmp_path / "table")
    assert version == 1 and table.num_rows == 18
    version, quarantine = _delta_rows(tmp_path / "q")
    assert version == 1 and quarantine.num_rows == 2
    assert len(set(quarantine.column("_run_id").to_pylist())) == 2
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["delta_versions"] == {"output": 1, "quarantine": 1}
    assert report["output"]["version"] == 1 and report["output"]["rows"] == 9


def test_too_many_rejects_fail_writing_the_quarantine_but_no_accepted_rows(spark, tmp_path,
                                                                           capsys):
    data = _write_csv(tmp_path / "in.csv", rows=10, bad=(1, 2, 3))
    config = tmp_path / "ingest.yaml"
    config.write_text(f"""
input: {{path: {data}, schema: "{SCHEMA}", max_reject_fraction: 0.1}}
output: {{path: {tmp_path / 'out'}, format: delta}}
quarantine: {{path: {tmp_path / 'q'}, format: parquet}}
report_path: {tmp_path / 'report.json'}
""")
    status = main(["ingest", "--config", str(config)])
    captured = capsys.readouterr()
    assert status == EXIT_USER_ERROR
    assert captured.err.startswith("error: ") and "Traceback" not in captured.err
    assert "rejected 3 of 10 records (30.00%), more than max_reject_fraction=0.1" in captured.err
    assert "accepted 7; top reasons: unparsable:x (3)" in captured.err
    assert f"rejected rows written to {tmp_path / 'q'}" in captured.err
    assert not (tmp_path / "out").exists()
    assert spark.read.parquet(str(tmp_path / "q")).count() == 3
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["status"] == "failed" and report["output"] is None
    assert "max_reject_fraction" in report["error"]


def test_without_a_quarantine_rejects_are_counted_and_the_summary_warns(spark, tmp_path):
    data = _write_csv(tmp_path / "in.csv", rows=6, bad=(0,))
    config = _config(tmp_path, data, {"path": str(tmp_path / "out")})
    report = run_ingest(spark, config)
    assert report.counts == {"read": 6, "accepted": 5, "rejected": 1, "blank": 0}
    assert "quarantine=none(rejected_rows_only_counted)" in report.summary_line()
    assert report.warnings and "not kept" in report.warnings[0]
    with pytest.raises(DataValidationError, match="no quarantine configured"):
        run_ingest(spark, _config(tmp_path, data, {"path": str(tmp_path / "out2")},
                                  max_reject_fraction=0.0))
    assert not (tmp_path / "out2").exists()


def test_pii_key_in_yaml_is_refused(tmp_path, capsys):
    config = tmp_path / "ingest.yaml"
    config.write_text(f"""
input: {{path: {tmp_path / 'in.csv'}, schema: "{SCHEMA}"}}
pii: {{columns: {{x: hash}}, key: not-a-secret-anymore}}
output: {{path: {tmp_path / 'out'}}}
""")
    assert main(["ingest", "--config", str(config)]) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert "pii.key is not allowed" in err and "key_env" in err
    assert "not-a-secret-anymore" not in err
    with pytest.raises(ConfigError, match="pii has unknown keys"):
        _config(tmp_path, "x.csv", {"path": "o"}, pii={"columns": {"x": "hash"}, "salt": 1})


def test_sink_settings_are_checked():
    base = {"input": {"path": "in.csv", "schema": SCHEMA}}
    with pytest.raises(ConfigError, match="output: mode 'merge' needs format 'delta'"):
        validate_config(IngestJobConfig, {**base, "output": {"path": "o", "mode": "merge",
                                                             "keys": ["id"]}})
    with pytest.raises(ConfigError, match="mode 'merge' needs keys"):
        validate_config(IngestJobConfig, {**base, "output": {"path": "o", "format": "delta",
                                                             "mode": "merge"}})
    with pytest.raises(ConfigError, match="partition_by"):
        validate_config(IngestJobConfig, {**base, "output": {"path": "o", "format": "delta",
                                                             "partition_by": ["label"]}})
    with pytest.raises(ConfigError, match="input.on_schema_drift"):
        validate_config(IngestJobConfig, {"input": {**base["input"], "on_schema_drift": "x"},
                                          "output": {"path": "o"}})


def test_pii_columns_are_hashed_and_dropped(spark, tmp_path, monkeypatch):
    from sparkml_aiaas.core.pii import keyed_hash

    key = "k" * 32
    monkeypatch.setenv("INGEST_JOB_TEST_KEY", key)
    data = tmp_path / "people.csv"
    data.write_text("id,email,ssn,label\n1,a@x.org,111,0\n2,b@x.org,222,1\n3,c@x.org,bad,1\n")
    config = validate_config(IngestJobConfig, {
        "input": {"path": str(data), "schema": "id INT, email STRING, ssn INT, label INT"},
        "pii": {"columns": {"email": "hash", "ssn": "drop"}, "key_env": "INGEST_JOB_TEST_KEY"},
        "output": {"path": str(tmp_path / "out")},
        "quarantine": {"path": str(tmp_path / "q")},
    })
    report = run_ingest(spark, config)
    assert report.counts == {"read": 3, "accepted": 2, "rejected": 1, "blank": 0}
    out = spark.read.parquet(str(tmp_path / "out")).orderBy("id").collect()
    assert "ssn" not in out[0].asDict()
    assert [r.email for r in out] == [keyed_hash("a@x.org", key.encode()),
                                      keyed_hash("b@x.org", key.encode())]
    raw = spark.read.parquet(str(tmp_path / "q")).first()._raw
    assert "c@x.org" not in raw
    assert report.pii == {"email": "hash", "ssn": "drop"}


def test_schema_drift_setting_is_passed_to_ingest(spark, tmp_path):
    data = tmp_path / "drift.csv"
    data.write_text("id,x,label,extra\n1,0.5,0,z\n2,1.5,1,z\n")
    out = {"path": str(tmp_path / "out")}
    with pytest.raises(DataValidationError):
        run_ingest(spark, _config(tmp_path, str(data), out))
    report = run_ingest(spark, _config(tmp_path, str(data), out, on_schema_drift="ignore_extra"))
    assert report.counts["accepted"] == 2
    assert spark.read.parquet(out["path"]).columns == ["id", "x", "label"]
    # allow: a declared nullable column the source lacks reads as null.
    lacking = tmp_path / "lacking.csv"
    lacking.write_text("id,label\n1,0\n")
    report = run_ingest(spark, _config(tmp_path, str(lacking), out, on_schema_drift="allow"))
    assert report.counts["accepted"] == 1
    assert spark.read.parquet(out["path"]).first().asDict() == {"id": 1, "x": None, "label": 0}


def test_fingerprint_names_the_files_not_where_they_are(spark, tmp_path):
    first = tmp_path / "a"
    first.mkdir()
    _write_csv(first / "part-1.csv", rows=3)
    _write_csv(first / "part-2.csv", rows=4)
    files = source_files(spark, str(first))
    assert [os.path.basename(f) for f in files] == ["part-1.csv", "part-2.csv"]
    fingerprint = fingerprint_files(spark, files)
    assert fingerprint == fingerprint_files(spark, list(reversed(files)))
    # A copy elsewhere with the same sizes and times has the same fingerprint...
    second = tmp_path / "b"
    second.mkdir()
    for name in ("part-1.csv", "part-2.csv"):
        (second / name).write_bytes((first / name).read_bytes())
        stat = os.stat(first / name)
        os.utime(second / name, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert fingerprint_files(spark, source_files(spark, str(second))) == fingerprint
    # ...and any change to a file changes it.
    _write_csv(second / "part-2.csv", rows=5)
    assert fingerprint_files(spark, source_files(spark, str(second))) != fingerprint


def _train_yaml(tmp_path, input_block, name):
    config = tmp_path / f"{name}.yaml"
    config.write_text(f"""
input: {input_block}
model: {{features: [x], params: {{reg_param: 0.01, max_iter: 5}}}}
output: {{model_path: {tmp_path / name}, metrics_path: {tmp_path / name}.json}}
""")
    return str(config)


def test_training_records_the_delta_version_and_time_travels(spark, tmp_path, capsys):
    from sparkml_aiaas.data.delta import write_table

    table = str(tmp_path / "table")
    old = spark.createDataFrame([(i, float(i % 7), i % 2) for i in range(40)], SCHEMA)
    new = spark.createDataFrame([(i, float(i % 5), (i + 1) % 2) for i in range(40, 100)], SCHEMA)
    assert write_table(old, table)["version"] == 0
    assert write_table(new, table)["version"] == 1

    # Latest: the version is resolved before reading and recorded; declared types are applied.
    from sparkml_aiaas.config import InputSettings
    from sparkml_aiaas.pipeline import read_input_with_source

    result, source = read_input_with_source(spark, InputSettings(
        path=table, format="delta", schema="id BIGINT, label INT NOT NULL"))
    assert source["format"] == "delta" and source["path"] == table
    assert source["delta_version"] == 1 and len(source["fingerprint"]) == 64
    assert result.counts == {"read": 100, "accepted": 100, "rejected": 0}
    assert result.accepted.dtypes == [("id", "bigint"), ("label", "int")]

    # Pinned: training reads version 0's rows only, and records it beside the model.
    pinned = _train_yaml(tmp_path, f"{{path: {table}, format: delta, version: 0}}", "pinned")
    assert main(["train", "--config", pinned]) == 0, capsys.readouterr()
    metrics = json.loads((tmp_path / "pinned.json").read_text())
    recorded = metrics["data_source"]
    assert recorded["delta_version"] == 0 and recorded["format"] == "delta"
    assert recorded["fingerprint"] != source["fingerprint"]
    assert metrics["ingest"]["read"] == 40 and metrics["train_rows"] == 40
    assert json.loads((tmp_path / "pinned" / "metadata.json").read_text())["data_source"] == recorded
    from sparkml_aiaas.models import load_model

    assert load_model(str(tmp_path / "pinned")).artifact_metadata["data_source"] == recorded

    # A declared column the table lacks, or one that cannot be converted, is named.
    err_status = main(["train", "--config", _train_yaml(
        tmp_path, f'{{path: {table}, format: delta, schema: "id INT, x DOUBLE, label INT, w INT"}}',
        "bad")])
    assert err_status == EXIT_USER_ERROR
    (line,) = [e for e in capsys.readouterr().err.splitlines() if e.startswith("error:")]
    assert line.startswith("error: missing columns ['w'] in Delta table ") and line.endswith(
        "(expected 4 columns: id, x, label, w; it has 3: id, x, label)")
    with pytest.raises(ConfigError, match=r"version \(time travel\) applies to format 'delta'"):
        load_config(TrainJobConfig, pinned, ["input.format=parquet"])


def test_file_inputs_record_their_fingerprint(spark, tmp_path):
    from sparkml_aiaas.config import InputSettings
    from sparkml_aiaas.pipeline import read_input_with_source

    data = _write_csv(tmp_path / "train.csv", rows=12)
    result, source = read_input_with_source(spark, InputSettings(path=data, schema=SCHEMA))
    result.unpersist()
    assert result.counts["accepted"] == 12
    assert source == {"path": data, "format": "csv", "delta_version": None,
                      "fingerprint": fingerprint_files(spark, source_files(spark, data))}


def test_shipped_ingest_config_end_to_end_then_train_on_its_delta_table(spark, tmp_path, capsys):
    from sparkml_aiaas.data import write_breast_cancer_csv

    config = load_config(IngestJobConfig, INGEST_YAML)
    assert config.output.format == "delta" and config.quarantine.format == "delta"
    assert config.input.on_schema_drift == "error" and config.pii is None
    with open(INGEST_YAML) as f:
        assert "# pii:" in f.read()  # the commented example block

    data = write_breast_cancer_csv(str(tmp_path / "bc.csv"))
    table = tmp_path / "bc_table"
    status = main(["ingest", "--config", INGEST_YAML, "--input", data.path,
                   "--output", str(table), "--set", f"quarantine.path={tmp_path / 'q'}",
                   "--set", f"report_path={tmp_path / 'report.json'}"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "ingested read=569 accepted=569 rejected=0 blank=0 top_reasons=-" in out
    assert f"output={table}@v0" in out
    assert _delta_rows(table)[1].num_rows == 569

    status = main(["train", "--config", TRAIN_YAML, "--input", str(table),
                   "--model-path", str(tmp_path / "model"),
                   "--set", "input.format=delta", "--set", "input.options={}",
                   "--set", "input.quarantine_path=null", "--set", "input.max_reject_fraction=null",
                   "--set", "input.version=0", "--set", "model.params.max_iter=10",
                   "--set", f"output.metrics_path={tmp_path / 'metrics.json'}"])
    assert status == 0, capsys.readouterr()
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["metrics"]["auc"] > 0.9
    assert metrics["data_source"]["delta_version"] == 0


def test_spark_submit_entry_point(spark, tmp_path, monkeypatch, capsys):
    # jobs/ingest.py run as spark-submit runs it (as __main__), in this process: a real
    # spark-submit costs a JVM start; tests/test_jobs_submit.py covers that path for train/score.
    import runpy

    data = _write_csv(tmp_path / "in.csv", rows=10, bad=(2,))
    monkeypatch.setattr(sys, "argv", [
        "jobs/ingest.py", "--config", INGEST_YAML, "--input", data, "--output", str(tmp_path / "out"),
        "--set", f"input.schema={SCHEMA}", "--set", "input.max_reject_fraction=0.5",
        "--set", f"quarantine.path={tmp_path / 'q'}",
        "--set", f"report_path={tmp_path / 'report.json'}"])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(os.path.join(ROOT, "jobs", "ingest.py"), run_name="__main__")
    assert exit_.value.code == 0, capsys.readouterr()
    assert "ingested read=10 accepted=9 rejected=1" in capsys.readouterr().out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["delta_versions"] == {"output": 0, "quarantine": 0}


def test_delta_source_is_pinned_and_recorded(spark, tmp_path):
    from sparkml_aiaas.data import write_table

    table = str(tmp_path / "raw_table")
    write_table(spark.createDataFrame([(1, "0.5", 1), (2, "x", 0)], "id int, x string, label int"),
                table)
    write_table(spark.createDataFrame([(3, "1.5", 1)], "id int, x string, label int"), table)
    raw = {"input": {"path": table, "format": "delta", "schema": SCHEMA},
           "output": {"path": str(tmp_path / "out"), "format": "parquet"},
           "quarantine": {"path": str(tmp_path / "q"), "format": "parquet"}}
    report = run_ingest(spark, validate_config(IngestJobConfig, raw))
    assert report.counts == {"read": 3, "accepted": 2, "rejected": 1, "blank": 0}
    assert report.source["delta_version"] == 1
    latest_files = set(report.source["files"])  # the active files of version 1

    raw["input"]["options"] = {"version": 0}
    report = run_ingest(spark, validate_config(IngestJobConfig, raw))
    assert report.counts == {"read": 2, "accepted": 1, "rejected": 1, "blank": 0}
    assert report.source["delta_version"] == 0
    assert set(report.source["files"]) < latest_files
