"""The train job as a reproducible recipe: torch model types, the ``preprocess:`` and
``registry:`` blocks, ``fit_from_config`` with a forced number of training blocks, and
what a saved model records about the run that made it."""

import json
import os

import numpy as np
import pandas as pd
import pytest
from pyspark.ml import PipelineModel

from sparkml_aiaas.config import TrainJobConfig, validate_config
from sparkml_aiaas.errors import ConfigError
from sparkml_aiaas.models import load_model
from sparkml_aiaas.pipeline import fit_from_config, run_training, training_blocks

SCHEMA = "id INT, a DOUBLE, b DOUBLE, city STRING, y DOUBLE, label INT"
PREPROCESS = {"numeric_cols": ["a", "b"], "categorical_cols": ["city"], "scaling": "standard",
              "impute_strategy": "median", "handle_unseen": "zero"}


@pytest.fixture(autouse=True)
def _no_ambient_key(monkeypatch):
    # The registry signs versions with this key when set: the tests register unsigned.
    monkeypatch.delenv("SPARKML_AIAAS_REGISTRY_KEY", raising=False)


@pytest.fixture(scope="module")
def pdf():
    rng = np.random.default_rng(7)
    n = 240
    a, b = rng.normal(size=n), rng.normal(size=n)
    city = np.array(["paris", "lyon", "nice"])[rng.integers(0, 3, n)]
    margin = 1.5 * a - b + (city == "nice") + 0.4 * rng.normal(size=n)
    return pd.DataFrame({"id": np.arange(n), "a": a, "b": b, "city": city,
                         "y": 2.0 * a - b + 0.1 * rng.normal(size=n),
                         "label": (margin > 0.3).astype(int)})


@pytest.fixture(scope="module")
def csv_path(pdf, tmp_path_factory):
    path = tmp_path_factory.mktemp("recipe") / "rows.csv"
    pdf.to_csv(path, index=False, float_format="%.17g")
    return str(path)


def _config(csv_path, tmp_path, model, **blocks):
    data = {"input": {"path": csv_path, "schema": SCHEMA, "options": {"header": True}},
            "split": {"key": "id", "test_fraction": 0.25, "seed": 3},
            "model": model,
            "output": {"model_path": str(tmp_path / "model"), "report": False}}
    data.update(blocks)
    return validate_config(TrainJobConfig, data)


def _by_id(frame, column):
    rows = frame.select("id", column).orderBy("id").toPandas()
    return rows["id"].to_numpy(), np.stack([np.asarray(v.toArray() if hasattr(v, "toArray")
                                                       else v, dtype=float)
                                            for v in rows[column]])


def test_torch_classifier_job_end_to_end(spark, csv_path, tmp_path):
    from sparkml_aiaas.pipeline import score_with_model

    config = _config(csv_path, tmp_path,
                     {"type": "torch_classifier", "features": ["a", "b"],
                      "params": {"hidden_layers": [8], "max_epochs": 8, "seed": 1}},
                     output={"model_path": str(tmp_path / "model"),
                             "metrics_path": str(tmp_path / "metrics.json")})
    report = run_training(spark, config)
    summary = report.model.summary
    assert (report.iterations, report.passes) == (summary.epochs, summary.numJobs) == (8, 8)
    assert report.final_objective == summary.lossHistory[-1]
    assert set(report.metrics) >= {"auc", "accuracy"} and report.metrics["auc"] > 0.8
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["objective_history"] == summary.lossHistory
    assert os.path.isfile(report.report_path)  # the run report handles a torch summary

    loaded = load_model(report.model_path)
    assert training_blocks(loaded) == summary.numPartitions > 0
    _, trained = _by_id(report.model.transform(report.test_frame), "probability")
    _, reloaded = _by_id(loaded.transform(report.test_frame), "probability")
    np.testing.assert_array_equal(trained, reloaded)
    scored = score_with_model(spark, report.model_path, report.test_frame,
                              str(tmp_path / "scored"), model_name="torch")
    assert scored.rows_out == report.test_rows


def test_torch_regressor_is_evaluated_as_regression(spark, csv_path, tmp_path):
    config = _config(csv_path, tmp_path,
                     {"type": "torch_regressor", "label_col": "y", "features": ["a", "b"],
                      "params": {"hidden_layers": [4], "max_epochs": 5}})
    report = run_training(spark, config)
    assert set(report.metrics) >= {"rmse", "r2"} and report.iterations <= 5


def test_preprocess_pipeline_scores_identically_after_load_and_registers_as_bundle(
        spark, csv_path, tmp_path):
    from sparkml_aiaas.registry import ModelRegistry
    from sparkml_aiaas.scoring import score

    root = str(tmp_path / "registry")
    config = _config(csv_path, tmp_path, {"type": "logistic_regression",
                                          "params": {"max_iter": 50}},
                     preprocess=PREPROCESS,
                     registry={"root": root, "name": "churn", "alias": "production",
                               "description": "recipe test"})
    assert config.model.features_col == "features"  # filled in: the preprocess output
    report = run_training(spark, config)
    assert report.registered_ref == "churn/1"
    assert report.metrics["auc"] > 0.8

    loaded = load_model(report.model_path)
    assert isinstance(loaded, PipelineModel)
    assert [type(s).__name__ for s in loaded.stages] == ["PreprocessorModel",
                                                         "LogisticRegressionModel"]
    raw_test = report.test_frame.drop("features")  # the held-out rows as read
    ids, trained = _by_id(report.model.transform(report.test_frame), "probability")
    loaded_ids, reloaded = _by_id(loaded.transform(raw_test), "probability")
    np.testing.assert_array_equal(ids, loaded_ids)
    np.testing.assert_array_equal(trained, reloaded)

    # The model stage's metadata.json records the run; the preprocessor's does not.
    stages = sorted(os.listdir(os.path.join(report.model_path, "stages")))
    with open(os.path.join(report.model_path, "stages", stages[1], "metadata.json")) as f:
        meta = json.load(f)
    assert meta["model_id"] == report.model_id
    assert meta["data_source"] == report.data_source
    assert meta["training_job"]["preprocess"] == PREPROCESS
    assert meta["training"]["numPartitions"] == training_blocks(loaded)
    with open(os.path.join(report.model_path, "stages", stages[0], "metadata.json")) as f:
        assert "training_job" not in json.load(f)

    info = ModelRegistry(root).describe("churn@production")
    assert info["ref"] == "churn/1" and info["preprocessor_path"]
    assert info["description"] == "recipe test"
    assert info["config"]["preprocess"] == PREPROCESS and info["metrics"] == report.metrics
    assert info["data_source"] == report.data_source
    scored = score(spark, report.model_path, raw_test, str(tmp_path / "scored"))
    assert scored.rows_out == report.test_rows


def test_preprocess_job_reads_a_delta_table(spark, pdf, tmp_path):
    deltalake = pytest.importorskip("deltalake")

    table = str(tmp_path / "table")
    deltalake.write_deltalake(table, pdf.astype({"id": "int32", "label": "int32"}))
    config = validate_config(TrainJobConfig, {
        "input": {"path": table, "format": "delta", "version": 0},
        "split": {"key": "id", "test_fraction": 0.25},
        "preprocess": PREPROCESS,
        "model": {"type": "logistic_regression", "params": {"max_iter": 30}},
        "output": {"model_path": str(tmp_path / "model"), "report": False},
    })
    report = run_training(spark, config)
    assert report.data_source["format"] == "delta" and report.data_source["delta_version"] == 0
    assert report.train_rows + report.test_rows == len(pdf)
    assert report.metrics["auc"] > 0.8


def test_forced_blocks_are_recorded_and_fits_are_bit_identical(spark, csv_path, tmp_path):
    config = _config(csv_path, tmp_path, {"type": "logistic_regression",
                                          "params": {"max_iter": 50}}, preprocess=PREPROCESS)
    first = fit_from_config(spark, config, num_partitions=3)
    second = fit_from_config(spark, config, num_partitions=3)
    assert training_blocks(first.model) == training_blocks(second.model) == 3
    assert first.model.summary.numPartitions == 3
    assert first.preprocessor is not None and first.test is not None
    assert first.train_rows + first.test_rows == first.counts["accepted"]
    np.testing.assert_array_equal(np.asarray(first.model.coefficients),
                                  np.asarray(second.model.coefficients))
    assert first.model.intercept == second.model.intercept

    path = str(tmp_path / "saved")
    first.model.write().save(path)
    assert load_model(path).summary.numPartitions == 3


def test_torch_fit_from_config_forces_num_partitions(spark, csv_path, tmp_path):
    config = _config(csv_path, tmp_path, {"type": "torch_regressor", "label_col": "y",
                                          "features": ["a", "b"],
                                          "params": {"hidden_layers": [4], "max_epochs": 2}})
    run = fit_from_config(spark, config, num_partitions=3)
    assert run.estimator.getNumPartitions() == 3 and training_blocks(run.model) == 3


def test_forest_fit_from_config_forces_num_workers(spark, csv_path, tmp_path):
    pytest.importorskip("xgboost")
    config = _config(csv_path, tmp_path, {"type": "random_forest_classifier",
                                          "features": ["a", "b"],
                                          "params": {"num_trees": 5, "max_depth": 3}})
    run = fit_from_config(spark, config, num_partitions=2)  # 2 cores: at most 2 barrier tasks
    assert run.estimator.getOrDefault("numWorkers") == 2 and training_blocks(run.model) == 2


def _problem(data):
    """The one problem of the ConfigError ``data`` raises (its one line, after the source)."""
    with pytest.raises(ConfigError) as info:
        validate_config(TrainJobConfig, data)
    (line,) = str(info.value).splitlines()
    header = "invalid configuration in <arguments>: "
    assert line.startswith(header)
    return line[len(header):]


BASE = {"input": {"path": "rows.csv", "schema": SCHEMA}, "output": {"model_path": "m"}}


def test_features_with_preprocess_is_one_line_error():
    assert _problem({**BASE, "preprocess": PREPROCESS, "model": {"features": ["a", "b"]}}) == (
        "(top level): model.features must be unset with preprocess: the model reads the "
        "preprocess output column 'features' (model.features_col)")
    assert _problem({**BASE, "preprocess": {**PREPROCESS, "output_col": "vec"},
                     "model": {"features_col": "features"}}) == (
        "(top level): model.features_col must equal the preprocess output column 'vec' (or "
        "be left unset), not 'features'")


def test_bad_preprocess_key_is_one_line_error_listing_the_known_keys():
    assert _problem({**BASE, "preprocess": {"numeric_cols": ["a"], "scalling": "standard"},
                     "model": {}}) == (
        "preprocess: unknown preprocess key(s) ['scalling']; did you mean 'scaling'?")
    line = _problem({**BASE, "preprocess": {"numeric_cols": ["a"], "zzz": "standard"},
                     "model": {}})
    assert line.startswith("preprocess: unknown preprocess key(s) ['zzz']; known: [")
    for key in ("numeric_cols", "categorical_cols", "hashed_cols", "num_hash_features",
                "impute_strategy", "impute_fill_value", "scaling", "with_mean", "with_std",
                "log_cols", "clip_bounds", "handle_unseen", "max_categories", "output_col"):
        assert f"'{key}'" in line
    assert _problem({**BASE, "preprocess": {"numeric_cols": ["a"], "scaling": "zscore"},
                     "model": {}}).startswith(
        "preprocess: invalid preprocess settings: scaling is 'zscore'")


def test_bad_registry_name_or_alias_is_one_line_error():
    model = {"features": ["a", "b"]}
    assert _problem({**BASE, "model": model,
                     "registry": {"root": "reg", "name": "../escape"}}).startswith(
        "registry.name: invalid model name '../escape'")
    assert _problem({**BASE, "model": model,
                     "registry": {"root": "reg", "name": "churn", "alias": "7"}}) == (
        "registry.alias: invalid alias '7': an alias must not be all digits (it would read "
        "as a version number)")


def test_cli_prints_a_bad_config_as_one_problem_line(tmp_path, capsys):
    from sparkml_aiaas.cli import main

    path = tmp_path / "train.yaml"
    path.write_text(json.dumps({**BASE, "preprocess": {"numeric_cols": ["a"], "bogus": 1},
                                "model": {}}))
    assert main(["train", "--config", str(path)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        f"error: invalid configuration in {path}: preprocess: unknown preprocess key(s) "
        "['bogus']; known: [")
