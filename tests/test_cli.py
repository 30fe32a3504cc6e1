"""The CLI end to end: quickstart, train and score, and its handling of bad input."""

import json
import os

import numpy as np
import pytest

from sparkml_aiaas.cli import EXIT_USER_ERROR, main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_YAML = os.path.join(ROOT, "conf", "train.yaml")
SCORE_YAML = os.path.join(ROOT, "conf", "score.yaml")


@pytest.fixture(scope="module")
def quickstart_run(spark, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("quickstart")
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(["quickstart", "--workdir", str(workdir)])
    return status, out.getvalue(), workdir


def test_quickstart_runs_the_whole_pipeline(spark, quickstart_run):
    status, output, workdir = quickstart_run
    assert status == 0, output
    # The loss of every iteration is printed, then the summary.
    iterations = [line for line in output.splitlines() if "LogisticRegression iter" in line]
    assert len(iterations) >= 5
    objectives = [float(line.split()[-1]) for line in iterations]
    assert objectives[-1] < objectives[0]
    assert "identical predictions" in output
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert metrics["ingest"] == {"read": 569, "accepted": 569, "rejected": 0, "blank": 0}
    assert metrics["train_rows"] + metrics["test_rows"] == 569
    assert metrics["metrics"]["auc"] > 0.97
    assert metrics["metrics"]["accuracy"] > 0.9
    assert f"AUC {metrics['metrics']['auc']:.4f}" in output

    scored = spark.read.parquet(str(workdir / "scored"))
    assert scored.count() == metrics["test_rows"]
    for column in ("id", "label", "mean_radius", "rawPrediction", "probability", "prediction",
                   "model_name", "model_version", "scored_at", "run_id"):
        assert column in scored.columns
    lineage = scored.select("model_name", "model_version", "run_id").distinct().collect()
    assert len(lineage) == 1
    assert lineage[0]["model_name"] == "quickstart_breast_cancer"
    model_meta = json.loads((workdir / "model" / "metadata.json").read_text())
    assert lineage[0]["model_version"] == model_meta["model_id"]
    # No staging or temporary folders are left beside the outputs.
    assert not [p for p in os.listdir(workdir) if p.startswith(".")]


def test_quickstart_scores_match_the_spark_free_predictor(spark, quickstart_run):
    from sparkml_aiaas.models import load_predictor

    _, _, workdir = quickstart_run
    scored = spark.read.parquet(str(workdir / "scored")).orderBy("id").toPandas()
    predictor = load_predictor(str(workdir / "model"))
    expected = predictor.predict(scored)
    np.testing.assert_array_equal(np.stack(scored["probability"]), np.stack(expected["probability"]))
    np.testing.assert_array_equal(scored["prediction"], expected["prediction"])


def test_train_then_score_with_shipped_configs(spark, quickstart_run, tmp_path, capsys):
    _, _, workdir = quickstart_run
    data = str(workdir / "data" / "breast_cancer.csv")
    model_path = str(tmp_path / "model")
    status = main(["train", "--config", TRAIN_YAML, "--input", data, "--model-path", model_path,
                   "--set", f"input.quarantine_path={tmp_path / 'q'}",
                   "--set", f"output.metrics_path={tmp_path / 'metrics.json'}",
                   "--set", "model.params.reg_param=0.1"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert f"model_path={model_path}" in out
    assert json.loads((tmp_path / "metrics.json").read_text())["metrics"]["auc"] > 0.95

    output = str(tmp_path / "scored")
    status = main(["score", "--config", SCORE_YAML, "--model-path", model_path, "--input", data,
                   "--output", output, "--set", f"input.quarantine_path={tmp_path / 'sq'}"])
    out = capsys.readouterr().out
    assert status == 0, out
    summary = [line for line in out.splitlines() if line.startswith("scored ")]
    assert len(summary) == 1 and "rows_in=569 rows_out=569" in summary[0]
    assert spark.read.parquet(output).select("model_name").distinct().first()[0] == \
        "breast_cancer_logreg"


def _run_expecting_user_error(args, capsys):
    status = main(args)
    captured = capsys.readouterr()
    assert status == EXIT_USER_ERROR
    assert "Traceback" not in captured.err
    assert captured.err.startswith("error: ")
    return captured.err


def test_missing_config_file(capsys):
    err = _run_expecting_user_error(["train", "--config", "/nonexistent/train.yaml"], capsys)
    assert "config file '/nonexistent/train.yaml' does not exist" in err


def test_invalid_config_value_names_the_field(capsys):
    err = _run_expecting_user_error(
        ["train", "--config", TRAIN_YAML, "--set", "model.params.max_iter=lots"], capsys)
    assert "model.params" in err and "maxIter" in err
    err = _run_expecting_user_error(
        ["train", "--config", TRAIN_YAML, "--set", "split.test_fraction=0"], capsys)
    assert "split.test_fraction" in err


def test_missing_input_file(spark, tmp_path, capsys):
    err = _run_expecting_user_error(
        ["train", "--config", TRAIN_YAML, "--input", str(tmp_path / "missing.csv"),
         "--model-path", str(tmp_path / "model")], capsys)
    assert "missing.csv" in err
    assert not (tmp_path / "model").exists()


def test_labels_outside_0_1_stop_a_binomial_model_and_write_nothing(spark, tmp_path, capsys):
    csv = tmp_path / "three_classes.csv"
    csv.write_text("id,a,b,label\n" + "".join(f"{i},{i * 0.5},{i % 3},{i % 3}\n" for i in range(60)))
    config = tmp_path / "train.yaml"
    config.write_text(f"""
input:
  path: {csv}
  schema: "id INT, a DOUBLE, b DOUBLE, label INT"
model:
  features: [a, b]
  params: {{family: binomial}}
output:
  model_path: {tmp_path / 'model'}
""")
    err = _run_expecting_user_error(["train", "--config", str(config)], capsys)
    assert "label column 'label' must hold 0 or 1" in err and "found 2" in err
    assert not (tmp_path / "model").exists()


def test_nan_features_stop_training(spark, tmp_path, capsys):
    # Ingest rejects literal NaN by default (non_finite: reject), so the rows never reach
    # training; with max_reject_fraction 0 the run stops there, naming the column.
    csv = tmp_path / "nan.csv"
    csv.write_text("id,a,label\n" + "".join(
        f"{i},{'NaN' if i in (3, 7) else i},{i % 2}\n" for i in range(40)))
    config = tmp_path / "train.yaml"
    config.write_text(f"""
input: {{path: {csv}, schema: "id INT, a DOUBLE, label INT", max_reject_fraction: 0}}
model: {{features: [a]}}
output: {{model_path: {tmp_path / 'model'}}}
""")
    err = _run_expecting_user_error(["train", "--config", str(config)], capsys)
    assert "top reasons: non_finite:a (2)" in err
    assert not (tmp_path / "model").exists()


def test_score_refuses_input_without_the_model_columns(spark, quickstart_run, tmp_path, capsys):
    _, _, workdir = quickstart_run
    csv = tmp_path / "other.csv"
    csv.write_text("id,x\n1,2.0\n")
    output = tmp_path / "scored"
    err = _run_expecting_user_error(
        ["score", "--config", SCORE_YAML, "--model-path", str(workdir / "model"),
         "--input", str(csv), "--output", str(output),
         "--set", 'input.schema=id INT, x DOUBLE'], capsys)
    assert "error: missing column 'mean_radius' (double); missing column 'mean_texture'" in err
    assert err.rstrip().endswith(" in the input (the model's signature: expected 30 columns: "
                                 "mean_radius, mean_texture, mean_perimeter, mean_area, "
                                 "mean_smoothness, mean_compactness, mean_concavity, "
                                 "mean_concave_points, mean_symmetry, mean_fractal_dimension, "
                                 "… (+20 more))")
    assert not output.exists()


def test_unknown_model_format_version_is_refused(spark, quickstart_run, tmp_path, capsys):
    import shutil

    _, _, workdir = quickstart_run
    model = tmp_path / "model"
    shutil.copytree(workdir / "model", model)
    meta = json.loads((model / "metadata.json").read_text())
    meta["format_version"] = 99
    (model / "metadata.json").write_text(json.dumps(meta))
    err = _run_expecting_user_error(
        ["score", "--config", SCORE_YAML, "--model-path", str(model),
         "--input", str(workdir / "data" / "breast_cancer.csv"),
         "--output", str(tmp_path / "out")], capsys)
    assert "format_version 99" in err


def test_train_multiclass_and_svm_from_config(spark, tmp_path, capsys):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(240, 2))
    cls = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5).astype(int)
    lines = "".join(f"{i},{a:.6f},{b:.6f},{c},{int(c > 0)}\n" for i, ((a, b), c)
                    in enumerate(zip(X, cls)))
    csv = tmp_path / "multi.csv"
    csv.write_text("id,a,b,cls,positive\n" + lines)
    base = f"""
input: {{path: {csv}, schema: "id INT, a DOUBLE, b DOUBLE, cls INT, positive INT"}}
split: {{key: id, test_fraction: 0.25}}
output: {{model_path: {tmp_path / 'MODEL'}, metrics_path: {tmp_path / 'METRICS.json'}}}
"""
    multi = tmp_path / "multi.yaml"
    multi.write_text(base.replace("MODEL", "m").replace("METRICS", "m") +
                     "model: {label_col: cls, features: [a, b], params: {reg_param: 0.001}}\n")
    assert main(["train", "--config", str(multi)]) == 0, capsys.readouterr()
    metrics = json.loads((tmp_path / "m.json").read_text())["metrics"]
    assert set(metrics) >= {"accuracy", "f1"} and metrics["accuracy"] > 0.6  # chance: ~0.4

    svm = tmp_path / "svm.yaml"
    svm.write_text(base.replace("MODEL", "s").replace("METRICS", "s") +
                   "model: {type: linear_svc, label_col: positive, features: [a, b]}\n")
    assert main(["train", "--config", str(svm)]) == 0, capsys.readouterr()
    metrics = json.loads((tmp_path / "s.json").read_text())["metrics"]
    assert metrics["auc"] > 0.9
