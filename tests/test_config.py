"""Config parsing: the shipped conf/ files, overrides, and clear errors (no Spark)."""

import os

import pytest

from sparkml_aiaas.config import (PARAM_ALIASES, QuickstartConfig, ScoreJobConfig, TrainJobConfig,
                                  apply_overrides, load_config)
from sparkml_aiaas.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def conf(name):
    return os.path.join(ROOT, "conf", name)


def test_shipped_configs_parse():
    train = load_config(TrainJobConfig, conf("train.yaml"))
    assert train.model.type == "logistic_regression"
    assert len(train.model.features) == 30
    assert train.input.schema_[0] == {"name": "id", "type": "int", "nullable": False}
    assert train.model.spark_params()["regParam"] == 0.01
    assert train.model.spark_params()["featuresCols"][0] == "mean_radius"
    score = load_config(ScoreJobConfig, conf("score.yaml"))
    assert score.output.mode == "overwrite"
    quick = load_config(QuickstartConfig, conf("quickstart.yaml"))
    assert quick == QuickstartConfig(spark={"app_name": "sparkml_aiaas-quickstart"})
    xgb = load_config(TrainJobConfig, conf("xgboost.yaml"))
    assert xgb.model.type == "xgboost_classifier"
    assert xgb.model.params["objective"] == "binary:logistic"
    assert (xgb.model.params["max_depth"], xgb.model.params["eta"],
            xgb.model.params["num_round"]) == (3, 0.3, 10)


def test_overrides_win_over_file_and_parse_yaml_scalars():
    config = load_config(TrainJobConfig, conf("train.yaml"),
                         ["model.params.reg_param=0.5", "output.model_path=/tmp/m",
                          "spark.master=local[1]", "model.params.optimizer=gd"])
    assert config.model.params["reg_param"] == 0.5
    assert config.model.spark_params()["optimizer"] == "gd"
    assert config.output.model_path == "/tmp/m"
    assert config.spark.master == "local[1]"


def test_apply_overrides_creates_sections_and_rejects_malformed_items():
    assert apply_overrides({}, ["a.b.c=3"]) == {"a": {"b": {"c": 3}}}
    with pytest.raises(ConfigError, match="key.subkey=value"):
        apply_overrides({}, ["no_equals_sign"])
    with pytest.raises(ConfigError, match="'a' is not a section"):
        apply_overrides({"a": 1}, ["a.b=2"])


def test_unknown_field_is_named():
    with pytest.raises(ConfigError, match=r"unknown key 'modle_path' in output \(from --set\); "
                                          r"did you mean 'model_path'\?$"):
        load_config(TrainJobConfig, conf("train.yaml"), ["output.modle_path=x"])


def test_unknown_model_param_is_named():
    with pytest.raises(ConfigError, match=r"model\.params: unknown model param\(s\) \['regparam'\]"):
        load_config(TrainJobConfig, conf("train.yaml"), ["model.params.regparam=1"])


def test_invalid_value_is_named():
    with pytest.raises(ConfigError, match=r"split\.test_fraction: Input should be less than 1"):
        load_config(TrainJobConfig, conf("train.yaml"), ["split.test_fraction=1.5"])
    with pytest.raises(ConfigError, match=r"model\.type: Input should be"):
        load_config(TrainJobConfig, conf("train.yaml"), ["model.type=svm"])


def test_features_and_features_col_are_exclusive():
    with pytest.raises(ConfigError, match="exactly one of 'features'"):
        load_config(TrainJobConfig, conf("train.yaml"), ["model.features_col=vec"])


def test_text_input_needs_a_schema(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model_path: m\ninput: {path: x.csv, format: csv}\noutput: {path: o}\n")
    with pytest.raises(ConfigError, match="input: a schema must be declared for format 'csv'"):
        load_config(ScoreJobConfig, str(path))


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(TrainJobConfig, str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(TrainJobConfig, str(bad))
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config(TrainJobConfig, str(listy))


def test_every_alias_is_an_estimator_param():
    from sparkml_aiaas.config import ESTIMATOR_CLASSES, estimator_class, model_param_aliases
    from sparkml_aiaas.models import LinearRegression, LinearSVC, LogisticRegression

    # Derived from the estimators' Params: every Param but the columns the config sets itself.
    for model_type in ESTIMATOR_CLASSES:
        estimator = estimator_class(model_type)()
        aliases = model_param_aliases(model_type)
        assert sorted(aliases.values()) == sorted(
            p.name for p in estimator.params
            if p.name not in ("featuresCol", "featuresCols", "labelCol")), model_type
    # The names configs have used stay valid, for the types they were meant for.
    only = {"threshold": (LogisticRegression, LinearSVC), "family": (LogisticRegression,),
            "loss": (LinearRegression,), "epsilon": (LinearRegression,)}
    names = ["max_iter", "tol", "step_size", "reg_param", "elastic_net_param", "fit_intercept",
             "standardization", "threshold", "optimizer", "seed", "aggregation_depth",
             "num_partitions", "block_format", "block_dtype", "weight_col",
             "mini_batch_fraction", "local_steps", "momentum", "beta1", "beta2",
             "checkpoint_dir", "checkpoint_interval", "step_rule", "step_schedule", "step_decay",
             "validation_indicator_col", "patience", "family", "loss", "epsilon"]
    assert set(names) <= set(PARAM_ALIASES)
    for name in names:
        for estimator in only.get(name, (LogisticRegression, LinearRegression, LinearSVC)):
            assert estimator().hasParam(PARAM_ALIASES[name]), (name, estimator)