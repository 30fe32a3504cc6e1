"""Every estimator's keywords, signatures and Parameters docs are derived from its declared
Params (models/param_signature.py), with pyspark's ``keyword_only`` semantics and persistence;
classifiers refuse single-class labels before training."""

import inspect
import re

import numpy as np
import pandas as pd
import pytest
from pyspark.ml.param import Param, Params, TypeConverters

from sparkml_aiaas.core.stats import single_class_message
from sparkml_aiaas.errors import DataValidationError
from sparkml_aiaas.models import (LinearRegression, LinearSVC, LogisticRegression,
                                  RandomForestClassifier, RandomForestRegressor,
                                  SklearnClassifier, SklearnRegressor, TorchClassifier,
                                  TorchRegressor, XGBoostClassifier, XGBoostRegressor)
from sparkml_aiaas.models.param_signature import parameters_section

ESTIMATORS = [LogisticRegression, LinearRegression, LinearSVC, TorchClassifier, TorchRegressor,
              XGBoostClassifier, XGBoostRegressor, RandomForestClassifier,
              RandomForestRegressor, SklearnClassifier, SklearnRegressor]
ids = [cls.__name__ for cls in ESTIMATORS]


def _other_value(param: Param, default):
    """A value of ``param``'s type different from its default (set-time checks only convert)."""
    converter = param.typeConverter
    if param.name == "estimator":
        from sklearn.linear_model import Ridge
        return Ridge(alpha=2.0)
    if converter == TypeConverters.toString or isinstance(default, str):
        return f"{param.name}_x"
    if converter == TypeConverters.toBoolean:
        return not default
    if converter == TypeConverters.toInt:
        return (default or 0) + 3
    if converter == TypeConverters.toFloat:
        return (default or 0.0) + 0.25
    if converter == TypeConverters.toListString:
        return ["a", "b"]
    if converter == TypeConverters.toListInt:
        return [3, 4]
    if isinstance(default, dict):
        return {"max_delta_step": 1}
    raise AssertionError(f"no test value for {param.name}")


def _values(cls):
    """``{name: value}``: a non-default value for every Param of ``cls``."""
    template = cls()
    return {p.name: _other_value(p, template.getOrDefault(p) if template.hasDefault(p) else None)
            for p in template.params}


def _by_name(param_map):
    return {param.name: value for param, value in param_map.items()}


# ------------------------------------------------------------------------------ signatures
@pytest.mark.parametrize("cls", ESTIMATORS, ids=ids)
def test_signature_lists_exactly_the_params_with_their_defaults(cls):
    template = cls()
    defaults = _by_name(template._defaultParamMap)
    expected = {p.name: defaults.get(p.name) for p in template.params}
    for signature, leading in ((inspect.signature(cls), []),
                               (inspect.signature(cls.__init__), ["self"]),
                               (inspect.signature(cls.setParams), ["self"])):
        names = list(signature.parameters)
        assert names[:len(leading)] == leading
        keywords = [signature.parameters[n] for n in names[len(leading):]]
        assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in keywords)
        assert {p.name: p.default for p in keywords} == expected
        assert len(keywords) == len(expected)
    # The hand-written signatures are gone: the methods are the derived ones.
    assert "__init__" in vars(cls) and "Every Param" in cls.__init__.__doc__


@pytest.mark.parametrize("cls", ESTIMATORS, ids=ids)
def test_docstring_documents_every_param_exactly_once(cls):
    doc = cls.__doc__
    assert doc.count("\nParameters\n----------\n") == 1
    section = doc.split("\nParameters\n----------\n")[1].split("\n\n")[0]
    entries = re.findall(r"^(\w+) : ", section, flags=re.MULTILINE)
    names = sorted(p.name for p in cls().params)
    assert sorted(entries) == names
    narrative = doc.split("\nParameters\n----------\n")[0]
    # Nothing before the generated section lists a param (or repeats a default) by hand.
    assert not re.search(r"^\s*\w+ : ", narrative, flags=re.MULTILINE)
    for name in names:
        assert not re.search(rf"``{name}`` \(default", narrative), name
    # The narrative is kept ahead of it, sections such as Examples after it.
    assert doc.split("\n")[0].strip()


def test_generated_section_shows_type_default_and_doc():
    section = parameters_section([LogisticRegression.maxIter, LogisticRegression.weightCol],
                                 {"maxIter": 100})
    assert section.splitlines()[:4] == ["Parameters", "----------", "maxIter : int, default 100",
                                        "    max number of iterations (>= 0)."]
    assert "weightCol : str, optional" in section


def test_a_hand_written_parameters_section_is_refused():
    from sparkml_aiaas.models.linear import _LinearEstimator
    from sparkml_aiaas.models.params import LinearRegressionParams

    with pytest.raises(TypeError, match="lists its parameters by hand"):
        class Documented(_LinearEstimator, LinearRegressionParams):  # noqa: F841
            """Doc.

            Parameters
            ----------
            regParam : float
            """


def test_a_new_param_appears_in_signature_docs_and_keywords():
    class WithAlpha(LinearRegression):
        """Linear regression with one more knob."""

        alpha = Param(Params._dummy(), "alpha", "a knob (>= 0)",
                      typeConverter=TypeConverters.toFloat)

    assert inspect.signature(WithAlpha).parameters["alpha"].default is None
    assert "alpha : float, optional\n    a knob (>= 0)" in WithAlpha.__doc__
    assert WithAlpha(alpha=0.5, regParam=0.1).getOrDefault("alpha") == 0.5
    assert "alpha" not in inspect.signature(LinearRegression).parameters


# --------------------------------------------------------------------- keyword_only semantics
@pytest.mark.parametrize("cls", ESTIMATORS, ids=ids)
def test_every_param_is_settable_by_constructor_and_set_params(cls):
    values = _values(cls)
    built = cls(**values)
    assert built._input_kwargs == values
    assert set(_by_name(built._paramMap)) == set(values)
    fresh = cls()
    assert fresh.setParams(**values) is fresh and fresh._input_kwargs == values
    for name, value in values.items():
        expected = fresh.getParam(name).typeConverter(value)
        assert built.getOrDefault(name) == expected == fresh.getOrDefault(name), name
    # One keyword at a time: only that one is set.
    for name, value in values.items():
        single = cls(**{name: value})
        assert list(_by_name(single._paramMap)) == [name]


@pytest.mark.parametrize("cls", ESTIMATORS, ids=ids)
def test_copy_keeps_and_overrides_params(cls):
    values = _values(cls)
    estimator = cls(**values)
    copied = estimator.copy()
    assert copied.uid == estimator.uid and copied is not estimator
    assert _by_name(copied.extractParamMap()) == _by_name(estimator.extractParamMap())
    name = next(name for name in sorted(values) if cls().hasDefault(name))
    default = cls().getOrDefault(name)
    extra = copied.copy({copied.getParam(name): default})
    assert extra.getOrDefault(name) == default and copied.getOrDefault(name) != default


@pytest.mark.parametrize("cls", ESTIMATORS, ids=ids)
def test_every_param_round_trips_through_estimator_save_and_load(spark, cls, tmp_path):
    estimator = cls(**_values(cls))
    estimator.save(str(tmp_path / "estimator"))
    loaded = cls.load(str(tmp_path / "estimator"))
    assert type(loaded) is cls and loaded.uid == estimator.uid
    assert _by_name(loaded._paramMap) == _by_name(estimator._paramMap)
    assert _by_name(loaded.extractParamMap()) == _by_name(estimator.extractParamMap())


def test_unknown_keyword_is_a_type_error_naming_it():
    with pytest.raises(TypeError, match=r"^LogisticRegression\.__init__\(\) got an unexpected "
                                        r"keyword argument 'regparam'; did you mean 'regParam'\?$"):
        LogisticRegression(regparam=0.1)
    with pytest.raises(TypeError, match=r"^XGBoostRegressor\.setParams\(\) got an unexpected "
                                        r"keyword argument 'numTrees'"):
        XGBoostRegressor().setParams(numTrees=3)
    with pytest.raises(TypeError, match=r"keyword argument 'zzz'$"):  # nothing close: no hint
        SklearnRegressor(zzz=1)
    with pytest.raises(TypeError, match="forces keyword arguments"):
        LinearSVC("features")
    with pytest.raises(TypeError, match="keyword argument 'params'"):  # attributes are not Params
        LinearSVC(params=[])


def test_none_leaves_a_param_unset_and_keyword_only_records_what_was_passed():
    lr = LogisticRegression(weightCol=None, regParam=0.5, seed=None)
    assert lr._input_kwargs == {"weightCol": None, "regParam": 0.5, "seed": None}
    assert not lr.isSet(lr.weightCol) and not lr.isDefined(lr.weightCol)
    assert not lr.isSet(lr.seed) and lr.getSeed() == 0
    assert lr.setParams(regParam=None, maxIter=7) is lr
    assert lr._input_kwargs == {"regParam": None, "maxIter": 7}
    assert lr.getRegParam() == 0.5 and lr.getMaxIter() == 7  # None left regParam as it was
    assert set(_by_name(lr._paramMap)) == {"regParam", "maxIter"}
    assert LogisticRegression()._input_kwargs == {}


def test_torch_architecture_given_as_a_function_is_kept_as_its_name():
    from trust_factories import make_net

    assert TorchRegressor(architecture=make_net).getArchitecture() == "trust_factories:make_net"
    assert TorchRegressor().setParams(architecture=make_net).getArchitecture() == \
        "trust_factories:make_net"


# ------------------------------------------------------------------------- pyspark.ml tools
def test_cross_validator_over_a_param_grid(spark):
    from pyspark.ml.evaluation import MulticlassClassificationEvaluator
    from pyspark.ml.tuning import CrossValidator, ParamGridBuilder
    from sklearn.linear_model import LogisticRegression as SkLogistic

    rng = np.random.default_rng(3)
    X = rng.normal(size=(120, 2))
    frame = pd.DataFrame(X, columns=["a", "b"])
    frame["label"] = (X[:, 0] - X[:, 1] > 0).astype(float)
    df = spark.createDataFrame(frame).cache()
    estimator = SklearnClassifier(estimator=SkLogistic(), featuresCols=["a", "b"])
    grid = ParamGridBuilder().addGrid(estimator.sampleFraction, [0.3, 1.0]).build()
    cv = CrossValidator(estimator=estimator, estimatorParamMaps=grid, numFolds=2, seed=1,
                        evaluator=MulticlassClassificationEvaluator(metricName="accuracy"))
    model = cv.fit(df)
    assert len(model.avgMetrics) == 2 and max(model.avgMetrics) > 0.8
    assert model.bestModel.getSampleFraction() in (0.3, 1.0)
    assert estimator.getSampleFraction() == 1.0  # the grid copies, never sets, the estimator
    df.unpersist()


def test_estimator_in_a_pipeline_saves_and_loads(spark, tmp_path):
    from pyspark.ml import Pipeline

    pipeline = Pipeline(stages=[XGBoostClassifier(maxDepth=3, xgbParams={"max_delta_step": 1})])
    pipeline.save(str(tmp_path / "pipeline"))
    stage = Pipeline.load(str(tmp_path / "pipeline")).getStages()[0]
    assert isinstance(stage, XGBoostClassifier)
    assert stage.getOrDefault("maxDepth") == 3
    assert stage.getOrDefault("xgbParams") == {"max_delta_step": 1}


def test_config_names_are_derived_from_the_params():
    from sparkml_aiaas.config import model_param_aliases

    aliases = model_param_aliases("random_forest_classifier")
    assert aliases["num_trees"] == "numTrees" and aliases["colsample_bynode"] == "colsampleBynode"
    assert "labelCol" not in aliases.values() and "num_round" not in aliases
    assert model_param_aliases("linear_svc")["validation_indicator_col"] == "validationIndicatorCol"
    with pytest.raises(ValueError, match=r"unknown model param\(s\) \['family'\] for type "
                                         r"'linear_regression'"):
        model_param_aliases("linear_regression", {"family": "auto"})


# ------------------------------------------------------------------------- one-class labels
@pytest.fixture(scope="module")
def one_class(spark):
    rng = np.random.default_rng(5)
    frame = pd.DataFrame(rng.normal(size=(40, 2)), columns=["a", "b"])
    frame["label"] = 1.0
    df = spark.createDataFrame(frame).cache()
    df.count()
    yield df
    df.unpersist()


def _svc():
    from sklearn.svm import SVC
    return SVC()


@pytest.mark.parametrize("estimator", [
    lambda: XGBoostClassifier(featuresCols=["a", "b"], numRound=2),
    lambda: RandomForestClassifier(featuresCols=["a", "b"], numTrees=2),
    lambda: SklearnClassifier(estimator=_svc(), featuresCols=["a", "b"]),
], ids=["xgboost", "random_forest", "sklearn"])
def test_classifiers_refuse_a_single_class(one_class, estimator, monkeypatch):
    from sklearn.svm import SVC

    from sparkml_aiaas.models.xgboost import _XGBoostEstimator

    def no_training(*args, **kwargs):
        raise AssertionError("training started on single-class labels")

    # Refused before anything trains: the barrier check, or scikit-learn's fit.
    monkeypatch.setattr(_XGBoostEstimator, "_num_workers", no_training)
    monkeypatch.setattr(SVC, "fit", no_training)
    with pytest.raises(DataValidationError) as caught:
        estimator().fit(one_class)
    assert str(caught.value) == single_class_message("label", 1.0, 40)


def test_sklearn_names_a_sampled_single_class_as_sampled(one_class):
    from sklearn.svm import SVC

    with pytest.raises(DataValidationError,
                       match=r"holds a single class \(1\) in all \d+ sampled training rows"):
        SklearnClassifier(estimator=SVC(), featuresCols=["a", "b"],
                          sampleFraction=0.5).fit(one_class)
