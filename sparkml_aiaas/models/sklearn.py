"""scikit-learn estimators as pyspark.ml stages: trained on a driver-side sample, scored at scale.

:class:`SklearnClassifier` / :class:`SklearnRegressor` count the rows (one
cheap job), decide a seeded Bernoulli sampling fraction, check that the
sample fits the driver budget ``maxSampleBytes`` *before* collecting it,
collect only the feature and label columns through Arrow and fit the
scikit-learn estimator in the driver.  The fitted model scores through
:func:`~sparkml_aiaas.scoring.udf.transform_like_mllib` with the
Spark-free :class:`~sparkml_aiaas.models.sklearn_predictor.SklearnPredictor`,
the same code batch scoring and serving run.  Any already-fitted scikit-learn
classifier or regressor (a Pipeline included) can be wrapped with
``from_estimator``.

The estimator to train is a Param holding its *spec* as JSON (class path
under ``sklearn.`` + ``get_params(deep=False)``, nested estimators
recursively), not the object: a Param value must survive ``save``/``load``
of an unfitted Pipeline and ``copy``, and JSON does, without pickle.  The
fitted estimator is saved with skops (``model.skops``) and loaded with an
allowlist of trusted types (see :mod:`sparkml_aiaas.models.sklearn_predictor`).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional

import numpy as np
from pyspark.ml import Estimator, Model
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import (HasFeaturesCol, HasLabelCol, HasPredictionCol,
                                     HasProbabilityCol, HasRawPredictionCol, HasSeed)
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable, MLReadable, MLWritable

from sparkml_aiaas.core.stats import single_class_message
from sparkml_aiaas.engine.blocks import training_frame
from sparkml_aiaas.errors import ConfigError, DataValidationError, name_list
from sparkml_aiaas.models.param_signature import KeywordParams
from sparkml_aiaas.models.params import HasFeaturesCols, with_doc
from sparkml_aiaas.models.persistence import (ArtifactReader, ArtifactWriter, input_signature,
                                              restored_signature, restored_summary)
from sparkml_aiaas.models.sklearn_predictor import (
    DEFAULT_MAX_SAMPLE_BYTES,
    SKOPS_FILE,
    SklearnPredictor,
    _class_path,
    _sklearn_class,
    build_estimator,
    load_estimator,
    plan_sample,
    safe_dumps,
    spec_json,
)
from sparkml_aiaas.scoring.mllib_output import (omitted_outputs, output_names,
                                                 predictor_outputs, transform_types)
from sparkml_aiaas.scoring.udf import transform_like_mllib

logger = logging.getLogger("sparkml_aiaas.train")

__all__ = ["SklearnClassifier", "SklearnClassificationModel", "SklearnRegressor",
           "SklearnRegressionModel", "SklearnTrainingSummary"]

_NUMERIC_TYPES = ("ByteType", "ShortType", "IntegerType", "LongType", "FloatType", "DoubleType",
                  "DecimalType", "BooleanType")


@dataclass
class SklearnTrainingSummary:
    """What a fit did: the data's size, the sample taken from it, and the time spent.

    ``numRows`` rows were counted; a Bernoulli sample of fraction
    ``sampleFraction`` (seed ``seed``) gave ``numSampleRows`` rows,
    ``sampleBytes`` bytes as a float64 matrix (features + label), within the
    guard's estimate ``estimatedSampleBytes`` and the budget
    ``maxSampleBytes``.  ``randomState`` is the ``random_state`` the estimator
    was fitted with (the seed when it was None; None when it has no such param).
    """

    estimatorClass: str = ""
    numRows: int = 0
    sampleFraction: float = 1.0
    numSampleRows: int = 0
    numFeatures: int = 0
    sampleBytes: int = 0
    estimatedSampleBytes: int = 0
    maxSampleBytes: int = 0
    seed: int = 0
    randomState: Optional[int] = None
    collectSeconds: float = 0.0
    fitSeconds: float = 0.0
    wallTimeSeconds: float = 0.0


# ----------------------------------------------------------------------------- params


def _to_spec(value) -> str:
    """Param converter: an estimator object, a spec dict or its JSON -> canonical spec JSON."""
    return spec_json(value)


class SklearnParams(HasFeaturesCol, HasFeaturesCols, HasLabelCol, HasPredictionCol, HasSeed):
    """Params shared by the scikit-learn estimators and models."""

    estimator: Param = Param(
        Params._dummy(), "estimator",
        "the scikit-learn estimator to fit: an unfitted estimator object, e.g. "
        "SVC(kernel='linear') or a Pipeline of scikit-learn steps, kept as its JSON spec "
        "(class path under 'sklearn.' and get_params(deep=False)); a None random_state is "
        "set to seed", typeConverter=_to_spec)
    maxSampleBytes: Param = Param(
        Params._dummy(), "maxSampleBytes",
        "budget in bytes of the driver-side training sample as a float64 matrix (features + "
        "label); a fit whose sample could exceed it is refused before collecting",
        typeConverter=TypeConverters.toInt)
    maxSampleRows: Param = Param(
        Params._dummy(), "maxSampleRows",
        "expected rows of the training sample at most (the sampling fraction is lowered to "
        "reach it); 0 means no row cap", typeConverter=TypeConverters.toInt)
    sampleFraction: Param = Param(
        Params._dummy(), "sampleFraction",
        "fraction of the rows sampled for training (Bernoulli, seeded by seed), in (0, 1]; "
        "lowered to honour maxSampleRows",
        typeConverter=TypeConverters.toFloat)
    seed: Param = with_doc(HasSeed.seed, "seed of the training sample, and the random_state "
                                         "of an estimator whose random_state is None")

    def __init__(self):
        super().__init__()
        self._setDefault(featuresCol="features", labelCol="label", predictionCol="prediction",
                         seed=0, maxSampleBytes=DEFAULT_MAX_SAMPLE_BYTES, maxSampleRows=0,
                         sampleFraction=1.0)

    def getEstimatorSpec(self) -> Dict[str, Any]:
        """The estimator param as a dict (``{"class": ..., "params": {...}}``)."""
        if not self.isDefined(self.estimator):
            raise ConfigError("param estimator is not set: give an unfitted scikit-learn "
                              "estimator, e.g. estimator=SVC(kernel='linear')")
        return json.loads(self.getOrDefault(self.estimator))

    def getEstimator(self):
        """A new unfitted scikit-learn estimator built from the estimator param."""
        return build_estimator(self.getEstimatorSpec())

    def getMaxSampleBytes(self) -> int:
        return self.getOrDefault(self.maxSampleBytes)

    def getMaxSampleRows(self) -> int:
        return self.getOrDefault(self.maxSampleRows)

    def getSampleFraction(self) -> float:
        return self.getOrDefault(self.sampleFraction)

    def validate_params(self) -> None:
        """Raise :class:`ConfigError` naming the first out-of-range param."""
        checks = [
            (self.getMaxSampleBytes() > 0, "maxSampleBytes", "must be > 0"),
            (self.getMaxSampleRows() >= 0, "maxSampleRows", "must be >= 0 (0: no cap)"),
            (0.0 < self.getSampleFraction() <= 1.0, "sampleFraction", "must be in (0, 1]"),
        ]
        for ok, name, rule in checks:
            if not ok:
                raise ConfigError(f"param {name} {rule}, got {self.getOrDefault(name)!r}")


class SklearnClassifierParams(SklearnParams, HasProbabilityCol, HasRawPredictionCol):
    def __init__(self):
        super().__init__()
        self._setDefault(probabilityCol="probability", rawPredictionCol="rawPrediction")


# ------------------------------------------------------------------------- helpers


def _task_of(estimator) -> str:
    from sklearn.base import is_classifier, is_regressor

    if is_classifier(estimator):
        return "classifier"
    if is_regressor(estimator):
        return "regressor"
    return "other"


def _check_task(estimator, task: str, what: str) -> None:
    found = _task_of(estimator)
    if found != task:
        raise ConfigError(
            f"{what} needs a scikit-learn {task}, but {type(estimator).__name__} is "
            + ("neither a classifier nor a regressor" if found == "other" else f"a {found}"))


def _check_feature_types(dataset, spec) -> None:
    """Refuse missing or non-numeric feature columns on the driver, before any job."""
    for name in spec.input_columns():
        if name not in dataset.columns:
            raise DataValidationError(
                f"feature column {name!r} is not in the data (it has {len(dataset.columns)}: "
                f"{name_list(dataset.columns)})")
        data_type = dataset.schema[name].dataType
        kind = type(data_type).__name__
        ok = (kind in _NUMERIC_TYPES if spec.columns else
              kind == "VectorUDT" or (kind == "ArrayType"
                                      and type(data_type.elementType).__name__ in _NUMERIC_TYPES))
        if not ok:
            expected = "numeric" if spec.columns else "a vector or an array of numbers"
            raise DataValidationError(
                f"feature column {name!r} must be {expected}, but its type is "
                f"{data_type.simpleString()}")


def _sample_arrays(table, n_features: int, vector_input: bool):
    """``(X, y)`` float64 from the collected Arrow table (features, then ``label``)."""
    import pyarrow.compute as pc

    y = table.column("label").to_numpy().astype(np.float64, copy=False)
    if not vector_input:
        X = np.empty((table.num_rows, n_features), dtype=np.float64)
        for j in range(n_features):
            # Nulls become NaN: estimators that accept missing values get them as such.
            X[:, j] = table.column(f"f{j}").to_numpy()
        return X, y
    vectors = table.column("features").combine_chunks()
    lengths = pc.fill_null(pc.list_value_length(vectors), -1).to_numpy(zero_copy_only=False)
    bad = int((lengths != n_features).sum())
    if bad:
        raise DataValidationError(
            f"{bad} sampled row(s) of the features column hold a null vector or one whose size "
            f"is not {n_features}")
    values = vectors.flatten().to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    return values.reshape(table.num_rows, n_features), y


def _check_class_labels(y: np.ndarray, label_col: str, role: str = "training") -> np.ndarray:
    """Class indices 0..k-1 as int64, or :class:`DataValidationError` naming what is wrong
    (``role``: what the rows are, for the message)."""
    if not np.isfinite(y).all():
        raise DataValidationError(
            f"label column {label_col!r} holds null or NaN values in the training sample; "
            "filter them out first")
    labels = np.unique(y)
    if len(labels) < 2:
        raise DataValidationError(single_class_message(label_col, labels[0], len(y), role))
    if (labels != np.round(labels)).any() or labels[0] < 0:
        raise DataValidationError(
            f"label column {label_col!r} must hold class indices 0, 1, ..., k-1; the sample "
            f"holds {labels[:10].tolist()} (use StringIndexer to index other labels)")
    expected = np.arange(int(labels[-1]) + 1)
    if labels.shape != expected.shape:
        missing = sorted(set(expected.tolist()) - set(labels.astype(int).tolist()))
        raise DataValidationError(
            f"label column {label_col!r} must hold class indices 0..k-1 with every class "
            f"present; the training sample lacks class(es) {missing[:10]} (too rare for the "
            "sampling fraction, or labels not indexed: use StringIndexer)")
    return y.astype(np.int64)


# ---------------------------------------------------------------------------- estimators


class _SklearnEstimator(KeywordParams, Estimator, DefaultParamsReadable, DefaultParamsWritable):
    """Shared ``_fit``: count -> plan the sample (size guard) -> collect via Arrow -> fit."""

    _model_class: type = None
    _task: str = ""

    def _fit(self, dataset):
        started = time.perf_counter()
        self.validate_params()
        estimator = self.getEstimator()
        _check_task(estimator, self._task, type(self).__name__)
        seed = int(self.getSeed())
        random_state = None
        if "random_state" in estimator.get_params(deep=False):
            random_state = estimator.get_params(deep=False)["random_state"]
            if random_state is None:
                # Re-running a fit on the same data gives the same model, as with the
                # sampling: the seed param stands in for an unset random_state.
                random_state = seed & 0x7FFFFFFF
                estimator.set_params(random_state=random_state)
        spec = self.feature_spec()
        label_col = self.getLabelCol()
        _check_feature_types(dataset, spec)
        signature = input_signature(dataset, spec)
        # Validates the label (numeric) and, for a vector column, reads its size (a tiny job).
        frame, n_features = training_frame(dataset, spec, label_col)
        frame = frame.drop("weight")
        total = dataset.count()
        if total == 0:
            raise DataValidationError("the training data has no rows")
        plan = plan_sample(total, n_features, self.getMaxSampleBytes(),
                           self.getSampleFraction(), self.getMaxSampleRows())
        if plan.fraction < 1.0:
            frame = frame.sample(withReplacement=False, fraction=plan.fraction, seed=seed)
        collect_started = time.perf_counter()
        # Arrow straight into numpy: only the needed columns, no Row objects.
        table = frame.toArrow()
        X, y = _sample_arrays(table, n_features, spec.vector_col is not None)
        del table
        collect_seconds = time.perf_counter() - collect_started
        if X.shape[0] == 0:
            raise DataValidationError(
                f"the training sample is empty ({total} rows, fraction {plan.fraction:.6g}); "
                "raise sampleFraction or maxSampleRows")
        if self._task == "classifier":
            # A sample of all rows is the training data; a smaller one may have missed a class.
            y = _check_class_labels(y, label_col, "training" if plan.fraction >= 1.0
                                    else "sampled training")
        elif not np.isfinite(y).all():
            raise DataValidationError(
                f"label column {label_col!r} holds null or NaN values in the training sample; "
                "filter them out first")
        logger.info("%s sampled %d of %d rows (fraction %.6g, %d bytes) in %.2fs",
                    type(self).__name__, X.shape[0], total, plan.fraction,
                    X.nbytes + y.nbytes, collect_seconds)
        fit_started = time.perf_counter()
        try:
            estimator.fit(X, y)
        except ValueError as exc:
            raise DataValidationError(
                f"scikit-learn's {type(estimator).__name__} refused the training sample: "
                f"{exc}") from None
        fit_seconds = time.perf_counter() - fit_started
        summary = SklearnTrainingSummary(
            estimatorClass=_class_path(type(estimator)), numRows=int(total),
            sampleFraction=plan.fraction, numSampleRows=int(X.shape[0]),
            numFeatures=int(n_features), sampleBytes=int(X.shape[0] * plan.row_bytes),
            estimatedSampleBytes=plan.estimated_bytes, maxSampleBytes=self.getMaxSampleBytes(),
            seed=seed, randomState=random_state, collectSeconds=collect_seconds,
            fitSeconds=fit_seconds, wallTimeSeconds=time.perf_counter() - started)
        model = self._model_class(estimator=estimator, signature=signature, summary=summary)
        self._copyValues(model)
        return model


class _SklearnModel(Model, MLWritable, MLReadable):
    """Shared state, scoring, wrapping and persistence of the fitted scikit-learn models."""

    _task: str = ""

    def __init__(self, estimator=None, signature: Optional[Dict[str, Any]] = None,
                 summary: Optional[SklearnTrainingSummary] = None):
        super().__init__()
        self._estimator = estimator
        self._signature = signature or {}
        self._summary = summary

    # -- wrapping ------------------------------------------------------------------------
    @classmethod
    def from_estimator(cls, estimator, featuresCols: Optional[List[str]] = None,
                       featuresCol: Optional[str] = None,
                       inputTypes: Optional[Dict[str, str]] = None, **params):
        """Wrap an already-fitted scikit-learn estimator (a Pipeline included) for scoring.

        Parameters
        ----------
        estimator : fitted scikit-learn classifier or regressor
        featuresCols : list of str, optional
            Numeric columns in the estimator's feature order; by default its
            ``feature_names_in_`` when it was fitted on a DataFrame.
        featuresCol : str, optional
            Alternatively, one vector or ``array<double>`` column.
        inputTypes : dict, optional
            Spark SQL types recorded in the signature, by column (default
            ``"double"``; ``"vector"`` for ``featuresCol``).
        **params
            Output column params: ``predictionCol``, ``probabilityCol``,
            ``rawPredictionCol``.

        Raises
        ------
        ConfigError
            Not a scikit-learn estimator of the right kind, not fitted, a
            feature count that does not match the columns, or holding types
            that could not be loaded back safely.
        """
        from sklearn.base import BaseEstimator
        from sklearn.exceptions import NotFittedError
        from sklearn.utils.validation import check_is_fitted

        if not isinstance(estimator, BaseEstimator):
            raise ConfigError(f"from_estimator needs a fitted scikit-learn estimator, got a "
                              f"{type(estimator).__name__}")
        _sklearn_class(_class_path(type(estimator)))
        _check_task(estimator, cls._task, f"{cls.__name__}.from_estimator")
        try:
            check_is_fitted(estimator)
        except NotFittedError:
            raise ConfigError(f"the {type(estimator).__name__} is not fitted: fit it first, or "
                              "train it on Spark data with SklearnClassifier/SklearnRegressor"
                              ) from None
        if featuresCols and featuresCol:
            raise ConfigError("give featuresCols or featuresCol, not both")
        n_features = getattr(estimator, "n_features_in_", None)
        if not featuresCols and not featuresCol:
            names = getattr(estimator, "feature_names_in_", None)
            if names is None:
                raise ConfigError(
                    "name the input: featuresCols=[...] (numeric columns in the estimator's "
                    "feature order) or featuresCol='...' (a vector column)")
            featuresCols = [str(n) for n in names]
        if featuresCols and n_features is not None and int(n_features) != len(featuresCols):
            raise ConfigError(
                f"the {type(estimator).__name__} was fitted on {int(n_features)} features but "
                f"featuresCols names {len(featuresCols)}: {list(featuresCols)}")
        # Refused now, not when the saved model is loaded (e.g. a FunctionTransformer of a
        # user's function, which a safe loader must not import).
        safe_dumps(estimator)
        types = dict(inputTypes or {})
        if featuresCols:
            inputs = [{"name": c, "type": types.get(c, "double")} for c in featuresCols]
        else:
            inputs = [{"name": featuresCol, "type": types.get(featuresCol, "vector")}]
        model = cls(estimator=estimator, signature={"inputs": inputs})
        settings = dict(params)
        if featuresCols:
            settings["featuresCols"] = list(featuresCols)
        else:
            settings["featuresCol"] = featuresCol
        unknown = [k for k in settings if not model.hasParam(k)]
        if unknown:
            raise ConfigError(f"{cls.__name__} has no param(s) {unknown}")
        model._set(**settings)
        model.predictor()  # checks the columns against the estimator's classes and features
        return model

    # -- accessors -----------------------------------------------------------------------
    @property
    def estimator_(self):
        """The fitted scikit-learn estimator."""
        if self._estimator is None:
            raise RuntimeError(f"this {type(self).__name__} holds no fitted estimator")
        return self._estimator

    @property
    def signature(self) -> Dict[str, Any]:
        """Input columns and their Spark types, and the columns ``transform`` appends with
        their types there (MLlib's ``vector``/``double``; the predictor's ``output_columns``
        are the wire types score() and serving give)."""
        return dict(self._signature, outputs=transform_types(
            predictor_outputs(self.predictor()), omitted_outputs(self)))

    @property
    def hasSummary(self) -> bool:
        return self._summary is not None

    @property
    def summary(self) -> SklearnTrainingSummary:
        if self._summary is None:
            raise RuntimeError(f"No training summary available for this {type(self).__name__} "
                               "(it was wrapped with from_estimator or saved without one)")
        return self._summary

    def _output_names(self) -> Dict[str, str]:
        return output_names(self, ["prediction"])

    def predictor(self) -> SklearnPredictor:
        """The Spark-free predictor with this model's estimator and params."""
        spec = self.feature_spec()
        return SklearnPredictor(
            estimator=self.estimator_, task=self._task,
            feature_cols=list(spec.columns) if spec.columns else None,
            vector_col=spec.vector_col, output_names=self._output_names())

    def _transform(self, dataset):
        _check_feature_types(dataset, self.feature_spec())
        # pyspark.ml's output schema (vectors); score() keeps the predictor's wire types.
        return transform_like_mllib(dataset, self.predictor(), omitted_outputs(self))

    # -- persistence ---------------------------------------------------------------------
    def _artifact(self):
        """``(metadata, arrays, files)``: the estimator lives in ``model.skops``."""
        predictor = self.predictor()
        metadata = {
            "predictor": predictor.predictor_metadata(),
            "signature": self.signature,
            "training": asdict(self._summary) if self._summary is not None else None,
        }
        return metadata, {}, {SKOPS_FILE: safe_dumps(self.estimator_)}

    def _restore(self, metadata: Dict[str, Any], arrays: Dict[str, np.ndarray]) -> None:
        self._signature = restored_signature(metadata)
        self._summary = restored_summary(SklearnTrainingSummary, metadata)

    def _restore_files(self, path: str, metadata: Dict[str, Any]) -> None:
        self._estimator = load_estimator(path, metadata)

    def write(self) -> ArtifactWriter:
        return ArtifactWriter(self)

    @classmethod
    def read(cls) -> ArtifactReader:
        return ArtifactReader(cls)


# -------------------------------------------------------------------------- classifier


class SklearnClassificationModel(_SklearnModel, SklearnClassifierParams):
    """A fitted scikit-learn classifier as a pyspark.ml Model.

    Output columns: ``rawPrediction`` (``decision_function``, binary as
    ``[-d, d]``; the probabilities when there is none), ``probability`` (when
    the estimator has ``predict_proba``) and ``prediction`` (the class index,
    a double).  See :class:`~sparkml_aiaas.models.sklearn_predictor.SklearnPredictor`.
    """

    _task = "classifier"

    @property
    def classes(self) -> list:
        """The estimator's ``classes_``: ``prediction`` is an index into this list."""
        return list(self.estimator_.classes_)

    @property
    def numClasses(self) -> int:
        return len(self.estimator_.classes_)

    def _output_names(self) -> Dict[str, str]:
        return output_names(self, ["prediction", "probability", "rawPrediction"])


class SklearnClassifier(_SklearnEstimator, SklearnClassifierParams):
    """Train a scikit-learn classifier on a seeded driver-side sample of a DataFrame.

    Labels are class indices 0, 1, ..., k-1, at least two classes and every class
    present in the sample.

    Examples
    --------
    >>> from sklearn.svm import SVC                                             # doctest: +SKIP
    >>> clf = SklearnClassifier(estimator=SVC(kernel="linear"), featuresCols=["a", "b"],
    ...                         maxSampleRows=100_000)                            # doctest: +SKIP
    >>> model = clf.fit(train_df)                                                # doctest: +SKIP
    >>> model.transform(test_df).select("id", "prediction").show()               # doctest: +SKIP
    """

    _model_class = SklearnClassificationModel
    _task = "classifier"


# --------------------------------------------------------------------------- regressor


class SklearnRegressionModel(_SklearnModel, SklearnParams):
    """A fitted scikit-learn regressor as a pyspark.ml Model; output column ``prediction``."""

    _task = "regressor"


class SklearnRegressor(_SklearnEstimator, SklearnParams):
    """Train a scikit-learn regressor (e.g. ``Ridge``, ``RandomForestRegressor``) on a sample.

    The label is any numeric column (no nulls in the sample); sampled as
    :class:`SklearnClassifier` samples.
    """

    _model_class = SklearnRegressionModel
    _task = "regressor"
