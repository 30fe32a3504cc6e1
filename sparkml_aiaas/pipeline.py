"""End-to-end jobs as library functions: train, score, quickstart.

The CLI and ``jobs/*.py`` only parse arguments, get the session and call
these; notebooks can call them too.  Progress goes to the
``sparkml_aiaas`` logger (the CLI prints it).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from sparkml_aiaas.atomic import atomic_file
from sparkml_aiaas.config import (InputSettings, ModelSettings, PreprocessSettings,
                                  QuickstartConfig, ScoreJobConfig, TrainJobConfig, TrainOutput)
from sparkml_aiaas.errors import ConfigError, SparkmlAiaasError

logger = logging.getLogger("sparkml_aiaas.pipeline")


@dataclass
class TrainReport:
    model_path: str
    model_id: str
    metrics: Dict[str, float]
    evaluated_on: str  # "test" or "train"
    ingest_counts: Dict[str, int]
    train_rows: int
    test_rows: int
    iterations: int
    passes: int
    final_objective: float
    metrics_path: Optional[str] = None
    test_frame: Any = field(default=None, repr=False)  # the held-out DataFrame, if any
    model: Any = field(default=None, repr=False)  # the fitted model, as trained
    #: What was read: path, format, delta_version, fingerprint (also in the metrics JSON
    #: and the model's metadata.json).
    data_source: Optional[Dict[str, Any]] = None
    #: The run report (report.html: metrics, plots, config), or None when disabled.
    report_path: Optional[str] = None
    #: ``"name/version"`` when the config's ``registry:`` block registered the model.
    registered_ref: Optional[str] = None


@dataclass
class TrainedRun:
    """What :func:`fit_from_config` read and fitted (everything a job needs to evaluate,
    save and register the model)."""

    model: Any
    #: The fitted PreprocessorModel (``preprocess:`` block), or None.
    preprocessor: Any
    #: The training rows the model was fitted on (after preprocessing).
    train: Any = field(repr=False)
    #: The held-out rows (after preprocessing); None without a ``split:`` block.
    test: Any = field(repr=False)
    train_rows: int
    test_rows: int
    #: Ingest counts: read, accepted, rejected.
    counts: Dict[str, int]
    #: What was read (see :func:`read_input_with_source`).
    data_source: Dict[str, Any]
    #: The estimator as fitted (its params include a forced number of training blocks).
    estimator: Any = field(repr=False)


# ScoreReport lives with the scoring code; importable from here as before.
from sparkml_aiaas.scoring.batch import ScoreReport  # noqa: E402


def build_estimator(settings: ModelSettings):
    from sparkml_aiaas.config import estimator_class

    try:
        return estimator_class(settings.type)(**settings.spark_params())
    except (TypeError, ValueError) as exc:  # pyspark's param type converters
        raise ConfigError(f"invalid model.params: {exc}") from None


def build_preprocessor(settings: PreprocessSettings):
    """The unfitted :class:`~sparkml_aiaas.preprocessing.Preprocessor` of a ``preprocess:`` block."""
    from sparkml_aiaas.preprocessing.stages import Preprocessor

    try:
        preprocessor = Preprocessor(**settings.spark_params())
        preprocessor.spec()  # validates the combination (ConfigError)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"invalid preprocess settings: {exc}") from None
    return preprocessor


#: The Param that sets how many blocks (partitions, barrier workers) a fit trains on.
_BLOCK_PARAMS = ("numPartitions", "numWorkers")


def _force_training_blocks(estimator, num_partitions: int) -> None:
    """Set the number of training blocks: ``numPartitions`` (linear, torch) or ``numWorkers``
    (xgboost, forests).  The sums of a fit depend on how its rows are blocked."""
    if isinstance(num_partitions, bool) or not isinstance(num_partitions, int) \
            or num_partitions < 1:
        raise ConfigError(f"num_partitions must be a whole number >= 1, got {num_partitions!r}")
    for name in _BLOCK_PARAMS:
        if estimator.hasParam(name):
            estimator.set(estimator.getParam(name), num_partitions)
            return
    raise ConfigError(f"{type(estimator).__name__} has no param setting the number of training "
                      f"blocks ({' or '.join(_BLOCK_PARAMS)})")


def _final_stage(model):
    """The model of a ``PipelineModel`` (its last stage), else ``model`` itself."""
    from pyspark.ml import PipelineModel

    return model.stages[-1] if isinstance(model, PipelineModel) else model


def _summary_of(model):
    """The model's training summary, or None (never raises: some models have none)."""
    if not getattr(model, "hasSummary", False):
        return None
    return model.summary


def training_blocks(model) -> Optional[int]:
    """How many blocks ``model`` (or a ``PipelineModel``'s final stage) was trained on.

    Linear and torch models: the summary's ``numPartitions`` (None when not recorded:
    models saved before it was); xgboost and forest models: the number of barrier
    workers they trained with (``numWorkers``); other models: None.
    """
    model = _final_stage(model)
    summary = _summary_of(model)
    if hasattr(model, "hasParam") and model.hasParam("numWorkers"):
        # The summary holds the workers actually used (the param may be 0: automatic).
        workers = getattr(summary, "numWorkers", 0) or model.getOrDefault("numWorkers")
        return int(workers) if workers else None
    blocks = getattr(summary, "numPartitions", 0)
    return int(blocks) if blocks else None


def _summary_progress(summary):
    """``(iterations, passes, objective history)`` of any summary kind: linear and tree
    models' totalIterations/numPasses/objectiveHistory, torch's epochs/numJobs/lossHistory."""
    if summary is None:
        return 0, 0, []
    if hasattr(summary, "lossHistory"):
        return int(summary.epochs), int(summary.numJobs), [float(v) for v in summary.lossHistory]
    return (int(summary.totalIterations), int(summary.numPasses),
            [float(v) for v in summary.objectiveHistory])


def _num_classes(model) -> int:
    """The number of classes of a classification model (2 when it does not say)."""
    from pyspark.ml.param import Param

    value = getattr(model, "numClasses", 2)
    if isinstance(value, Param):  # the torch models hold it as a Param
        value = model.getOrDefault(value)
    return int(value or 2)


def read_input(spark, settings: InputSettings):
    """Ingest a configured input: ``IngestResult`` with accepted rows, rejects and counts."""
    return read_input_with_source(spark, settings)[0]


def read_input_with_source(spark, settings: InputSettings):
    """Read a configured input and record exactly what was read.

    Returns
    -------
    (IngestResult, dict)
        The ingest result and the ``data_source`` record: ``path``,
        ``format``, ``delta_version`` (the version read; None for files) and
        ``fingerprint`` (sha256 over the files' relative paths, sizes and
        modification times), so a model can be retrained on the same data
        (``input.version: N`` for Delta).
    """
    from sparkml_aiaas.data.ingest_job import fingerprint_files, source_files

    if settings.format == "delta":
        return _read_delta_input(spark, settings)
    from sparkml_aiaas.data import ingest

    result = ingest(spark, settings.path, settings.schema_, format=settings.format,
                    options=settings.options, quarantine_path=settings.quarantine_path,
                    max_reject_fraction=settings.max_reject_fraction)
    try:
        # Listed after ingest has read (and cached) the records: the files it read.
        fingerprint = fingerprint_files(spark, source_files(spark, settings.path))
    except BaseException:
        result.unpersist()
        raise
    return result, {"path": settings.path, "format": settings.format, "delta_version": None,
                    "fingerprint": fingerprint}


def _read_delta_input(spark, settings: InputSettings):
    """A Delta table as committed, at a pinned version, checked against the declared schema."""
    from pyspark.errors import AnalysisException
    from pyspark.sql import types as T

    from sparkml_aiaas.data.delta import read_table, table_version
    from sparkml_aiaas.data.ingest import REJECTED_SCHEMA, IngestResult
    from sparkml_aiaas.data.ingest_job import fingerprint_files
    from sparkml_aiaas.data.schema import parse_schema
    from sparkml_aiaas.errors import DataValidationError, expected_names, name_list

    # Resolve "latest" to a number first and read that version: a commit landing
    # in between cannot make the recorded version differ from the rows read.
    version = settings.version if settings.version is not None else table_version(
        spark, settings.path)
    frame = read_table(spark, settings.path, format="delta", version=version)
    if settings.schema_:
        declared = parse_schema(settings.schema_)
        missing = [n for n in declared.names if n not in frame.columns]
        if missing:
            raise DataValidationError(
                f"missing columns {missing} in Delta table {settings.path!r} (version "
                f"{version}) ({expected_names(declared.names)}; it has {len(frame.columns)}: "
                f"{name_list(frame.columns)})")
        try:
            frame = frame.selectExpr(*[
                f"CAST(`{f.name}` AS {f.dataType.simpleString()}) AS `{f.name}`"
                if frame.schema[f.name].dataType != f.dataType else f"`{f.name}`"
                for f in declared.struct.fields])
        except AnalysisException as exc:
            differing = [f"{f.name} ({frame.schema[f.name].dataType.simpleString()} -> "
                         f"{f.dataType.simpleString()})" for f in declared.struct.fields
                         if frame.schema[f.name].dataType != f.dataType]
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DataValidationError(
                f"Delta table {settings.path!r} columns cannot be converted to the declared "
                f"types: {', '.join(differing)} ({first})") from None
    rows = frame.count()
    result = IngestResult(
        accepted=frame,
        rejected=spark.createDataFrame([], T.StructType(REJECTED_SCHEMA.fields)),
        counts={"read": rows, "accepted": rows, "rejected": 0},
    )
    source = {"path": settings.path, "format": "delta", "delta_version": version,
              "fingerprint": fingerprint_files(spark, frame.inputFiles())}
    return result, source


def write_json_atomically(path: str, payload: Dict[str, Any]) -> None:
    """Write ``payload`` as JSON at ``path`` under a temporary name, then rename it into place."""
    with atomic_file(path, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2, sort_keys=True)
        f.write("\n")


_write_json_atomically = write_json_atomically  # the name older code imports


def _save_model(model, path: str, overwrite: bool, extra_metadata: Dict[str, Any]) -> None:
    """Save ``model`` with ``extra_metadata`` merged into its metadata.json.

    For a ``PipelineModel`` the entries go into the model stage's (the last stage's)
    metadata.json only, and the pipeline directory is published in one rename.  The
    model id digests class, params and arrays only, so the entries do not change it.
    """
    from pyspark.ml import PipelineModel

    target = _final_stage(model)
    artifact = getattr(target, "_artifact", None)  # what ArtifactWriter saves
    if artifact is not None:
        def with_metadata():
            # (metadata, arrays) or (metadata, arrays, files): extra files pass through.
            parts = artifact()
            return ({**parts[0], **extra_metadata}, *parts[1:])

        # For this save only: the instance attribute shadows the method until deleted.
        target._artifact = with_metadata
    try:
        if isinstance(model, PipelineModel):
            _save_pipeline(model, path, overwrite)
        else:
            writer = model.write().overwrite() if overwrite else model.write()
            writer.save(path)
    finally:
        if artifact is not None:
            del target._artifact


def _save_pipeline(model, path: str, overwrite: bool) -> None:
    """pyspark's PipelineModel writer into a staging directory, renamed onto ``path``:
    its writer deletes the old directory first and writes stage by stage, so a failure
    would otherwise leave no model or half of one."""
    from sparkml_aiaas.atomic import atomic_directory
    from sparkml_aiaas.models.artifact import local_path

    target = os.path.abspath(local_path(path))
    if os.path.exists(target) and not overwrite:
        raise SparkmlAiaasError(f"model path {path!r} already exists (output.overwrite is false)")
    with atomic_directory(target) as staging:
        model.write().save(staging)


def _saved_model_metadata(path: str) -> Dict[str, Any]:
    """The metadata.json of a saved model, or of a saved PipelineModel's model stage."""
    from sparkml_aiaas.models.artifact import local_path, read_artifact
    from sparkml_aiaas.models.pipeline_predictor import _stage_dirs, is_saved_pipeline

    if is_saved_pipeline(path):
        path = _stage_dirs(local_path(path))[-1]
    return read_artifact(path)[0]


def training_metadata(spark, config: TrainJobConfig, run: TrainedRun,
                      metrics: Optional[Dict[str, float]] = None) -> Dict[str, Any]:
    """What the train job records in the saved model's metadata.json beside its own
    entries: ``data_source`` (what was read), ``training_job`` (the config, secrets
    hidden), ``training_metrics`` (the evaluation) and ``provenance`` (that config, the
    input's content hashes or Delta version, the blocks and the environment: what
    ``ModelRegistry.reproduce`` retrains from).  ``models register MODEL_DIR`` takes
    them from there."""
    from sparkml_aiaas.registry.provenance import training_record

    job = _redacted(config)
    return {"data_source": run.data_source, "training_job": job,
            "training_metrics": dict(metrics or {}),
            "provenance": training_record(spark, job, run.data_source, run.model,
                                          training_blocks(run.model))}


def fit_from_config(spark, config: TrainJobConfig, *,
                    num_partitions: Optional[int] = None) -> TrainedRun:
    """Ingest → split → fit the preprocessing (if any) → fit the model, as the train job does.

    The estimator (and preprocessor) are built and validated before any data is read,
    so a bad config fails in a second.  The preprocessing is fitted on the training
    split only; the model on the transformed training rows.

    Parameters
    ----------
    num_partitions : int, optional
        Train on exactly this many blocks: ``numPartitions`` of the linear and torch
        estimators, ``numWorkers`` of the xgboost and forest ones (what
        :func:`training_blocks` reports), to reproduce a fit bit for bit.
    """
    from sparkml_aiaas.data import split_by_key

    estimator = build_estimator(config.model)
    if num_partitions is not None:
        _force_training_blocks(estimator, num_partitions)
    estimator.validate_params()
    preprocessor = build_preprocessor(config.preprocess) if config.preprocess else None
    ingested, data_source = read_input_with_source(spark, config.input)
    counts = dict(ingested.counts)
    logger.info("ingest    read %d, accepted %d, rejected %d%s", counts["read"],
                counts["accepted"], counts["rejected"],
                f" (quarantine: {config.input.quarantine_path})"
                if config.input.quarantine_path else "")
    train, test = ingested.accepted, None
    if config.split is not None:
        fraction = config.split.test_fraction
        parts = split_by_key(train, config.split.key, {"train": 1.0 - fraction, "test": fraction},
                             seed=config.split.seed)
        train, test = parts["train"].cache(), parts["test"].cache()
    train_rows = train.count()
    test_rows = test.count() if test is not None else 0
    if config.split is not None:
        logger.info("split     train %d, test %d (hash of %r, seed %d)", train_rows, test_rows,
                    config.split.key, config.split.seed)

    fitted_preprocessor = None
    if preprocessor is not None:
        fitted_preprocessor = preprocessor.fit(train)
        # Cached: the model's fit and the evaluation read the vectors more than once.
        train = fitted_preprocessor.transform(train).cache()
        test = fitted_preprocessor.transform(test).cache() if test is not None else None
        logger.info("preprocess fitted on %d train rows → %r (%d features)", train_rows,
                    fitted_preprocessor.getOutputCol(), fitted_preprocessor.numFeatures)

    params = dict(config.model.params)
    if num_partitions is not None:
        params["num_partitions (forced)"] = num_partitions
    logger.info("train     %s %s", type(estimator).__name__,
                ", ".join(f"{k}={v}" for k, v in sorted(params.items())))
    model = estimator.fit(train)
    return TrainedRun(model=model, preprocessor=fitted_preprocessor, train=train, test=test,
                      train_rows=train_rows, test_rows=test_rows, counts=counts,
                      data_source=data_source, estimator=estimator)


#: Model types evaluated as classifiers with probabilities (binary, or multiclass above 2).
_PROBABILISTIC_CLASSIFIERS = ("logistic_regression", "torch_classifier", "xgboost_classifier",
                              "random_forest_classifier")


def _evaluate(config: TrainJobConfig, model, scored):
    """``(metrics, report kind, score column)`` of ``scored`` rows for the model's type."""
    from sparkml_aiaas.evaluation import (evaluate_binary, evaluate_multiclass,
                                          evaluate_regression)

    label_col = config.model.label_col
    model_type = config.model.type
    if model_type in _PROBABILISTIC_CLASSIFIERS and _num_classes(model) > 2:
        metrics = evaluate_multiclass(scored, label_col=label_col,
                                      prediction_col=model.getPredictionCol())
        return metrics, "multiclass", model.getProbabilityCol()
    if model_type in _PROBABILISTIC_CLASSIFIERS or model_type == "linear_svc":
        # The trees' rawPrediction is the vector [-m, m], as MLlib's: the evaluator ranks by m.
        metrics = evaluate_binary(scored, label_col=label_col,
                                  raw_prediction_col=model.getRawPredictionCol(),
                                  prediction_col=model.getPredictionCol())
        score_col = (model.getRawPredictionCol() if model_type == "linear_svc"
                     else model.getProbabilityCol())
        return metrics, "binary", score_col
    metrics = evaluate_regression(scored, label_col=label_col,
                                  prediction_col=model.getPredictionCol())
    return metrics, "regression", None


def register_training_run(spark, config: TrainJobConfig, report: TrainReport) -> str:
    """Register the saved model (``output.model_path``) as the next version of
    ``registry.name``, with the run's metrics, config and data source; point
    ``registry.alias`` at it when given.  Returns the ref ``"name/version"``."""
    from sparkml_aiaas.registry import ModelRegistry

    settings = config.registry
    registry = ModelRegistry(settings.root)
    version = registry.register(config.output.model_path, settings.name, metrics=report.metrics,
                                config=_redacted(config), data_source=report.data_source,
                                description=settings.description)
    if settings.alias:
        registry.set_alias(settings.name, settings.alias, version)
    ref = f"{settings.name}/{version}"
    logger.info("register  %s%s", ref, f" (alias {settings.alias})" if settings.alias else "")
    return ref


def run_training(spark, config: TrainJobConfig) -> TrainReport:
    """Ingest → split → [preprocess] → fit → evaluate → save the model (atomically), its
    metrics and run report → register it (``registry:`` block).

    With a ``preprocess:`` block the saved model is a ``PipelineModel`` of the fitted
    PreprocessorModel and the model, scoring raw columns.
    """
    import datetime

    from pyspark.ml import PipelineModel

    started_at = datetime.datetime.now(datetime.timezone.utc)
    run = fit_from_config(spark, config)
    model, test, data_source = run.model, run.test, run.data_source
    iterations, passes, history = _summary_progress(_summary_of(model))

    evaluated_on = "test" if test is not None and run.test_rows > 0 else "train"
    scored = model.transform(test if evaluated_on == "test" else run.train)
    metrics, report_kind, score_col = _evaluate(config, model, scored)
    logger.info("evaluate  %s on %s rows", ", ".join(
        f"{k} {v:.4f}" for k, v in metrics.items() if k != "rows"), evaluated_on)

    saved = model if run.preprocessor is None else PipelineModel(stages=[run.preprocessor, model])
    _save_model(saved, config.output.model_path, config.output.overwrite,
                training_metadata(spark, config, run, metrics))
    model_id = _saved_model_metadata(config.output.model_path)["model_id"]
    logger.info("save      model → %s (model_id %s)", os.path.abspath(config.output.model_path),
                model_id)
    report = TrainReport(
        model_path=os.path.abspath(config.output.model_path), model_id=model_id, metrics=metrics,
        evaluated_on=evaluated_on, ingest_counts=run.counts, train_rows=run.train_rows,
        test_rows=run.test_rows, iterations=iterations, passes=passes,
        final_objective=history[-1] if history else float("nan"),
        metrics_path=config.output.metrics_path, test_frame=test, model=model,
        data_source=data_source,
    )
    report_dir = config.output.resolved_report_dir()
    if report_dir:
        report.report_path = _write_run_report(
            report_dir, config, report, scored, report_kind, score_col,
            rows=run.test_rows if evaluated_on == "test" else run.train_rows,
            started_at=started_at)
        logger.info("report    %s", report.report_path)
    if config.output.metrics_path:
        write_json_atomically(config.output.metrics_path, {
            "model_path": report.model_path, "model_id": model_id, "metrics": metrics,
            "evaluated_on": evaluated_on, "ingest": run.counts, "train_rows": run.train_rows,
            "test_rows": run.test_rows, "iterations": report.iterations, "passes": report.passes,
            "objective_history": history, "data_source": data_source,
            "report_path": report.report_path,
        })
    if config.registry is not None:
        report.registered_ref = register_training_run(spark, config, report)
    return report


_SECRET_WORDS = ("secret", "password", "token", "credential", "access.key", "accesskey")


def _redacted(config: TrainJobConfig) -> Dict[str, Any]:
    """The config as JSON-able dict, Spark conf values that look like secrets hidden."""
    data = config.model_dump(mode="json", by_alias=True)
    conf = data.get("spark", {}).get("conf") or {}
    for key in conf:
        if any(word in key.lower() for word in _SECRET_WORDS):
            conf[key] = "***"
    return data


def _write_run_report(directory: str, config: TrainJobConfig, report: TrainReport, scored,
                      kind: str, score_col: Optional[str], rows: int, started_at) -> str:
    """Plots + report.html for a training run (at most MAX_REPORT_ROWS rows collected)."""
    from sparkml_aiaas.reports.training import (collect_scored_sample, loss_history,
                                                write_training_report)

    model = report.model
    if score_col is not None and score_col not in scored.columns:
        raw = getattr(model, "getRawPredictionCol", lambda: None)()
        score_col = raw if raw in scored.columns else None  # [-m, m]: element 1 ranks rows
    sample = collect_scored_sample(scored, config.model.label_col, model.getPredictionCol(),
                                   score_col=score_col, rows=rows,
                                   score_vector=kind == "multiclass")
    labels = None
    if kind in ("binary", "multiclass"):
        labels = [float(c) for c in range(_num_classes(model))]
    history, history_label = loss_history(_summary_of(model))
    run = {"model type": config.model.type, "model_id": report.model_id,
           "evaluated on": report.evaluated_on, "train rows": report.train_rows,
           "test rows": report.test_rows, "iterations": report.iterations,
           "passes": report.passes, "final objective": report.final_objective}
    run.update({f"ingest {k}": v for k, v in report.ingest_counts.items()})
    path, _ = write_training_report(
        directory, kind=kind, title=f"Training report: {config.model.type}",
        metrics=report.metrics, history=history, history_label=history_label or "objective",
        sample=sample, labels=labels, config=_redacted(config), model_path=report.model_path,
        sections=[("Training", run), ("Data source", report.data_source or {})],
        started_at=started_at)
    return path


def score_with_model(spark, model_path: str, frame, output_path: str, model_name: Optional[str],
                     mode: str = "overwrite", partition_by=(), rows_in: Optional[int] = None,
                     rows_rejected: int = 0, **options) -> ScoreReport:
    """Score ``frame`` with a saved model (or, with ``registry=ROOT``, a registry reference).

    A thin wrapper over :func:`sparkml_aiaas.scoring.score` (``options`` are passed on:
    ``registry``, ``format``, ``run_id``, ``batch_size``, ``snapshot``): the rows land
    atomically in ``output_path/run_id=<id>/`` with lineage columns.
    """
    from sparkml_aiaas.scoring import score

    report = score(spark, model_path, frame, output_path, mode=mode,
                   partition_by=list(partition_by or ()) or None, model_name=model_name,
                   rows_rejected=rows_rejected, **options)
    if rows_in is not None:
        report.rows_in = rows_in
    return report


def run_scoring(spark, config: ScoreJobConfig) -> ScoreReport:
    """Score the configured input with the configured model, atomically, once per run.

    Not incremental: the input is ingested (malformed rows quarantined) and the
    run id derives from the model digest and what was read (the input files'
    fingerprint, or the Delta version).  Incremental (or Parquet without a declared
    schema): the (new) input files or Delta data files are read directly, no quarantine.
    """
    from sparkml_aiaas.scoring import score

    started = time.perf_counter()
    common = dict(registry=config.registry, format=config.output.format, run_id=config.run_id,
                  batch_size=config.batch_size, mode=config.output.mode,
                  partition_by=config.output.partition_by or None, model_name=config.model_name)
    # Read directly (no ingest): incremental runs, and self-describing files (Parquet)
    # without a declared schema.
    if config.incremental or (config.input.format == "parquet" and not config.input.schema_):
        report = score(spark, config.model_ref, config.input.path, config.output.path,
                       input_format=config.input.format, input_options=config.input.options,
                       input_schema=config.input.schema_ or None,
                       incremental=config.incremental, **common)
    else:
        ingested, source = read_input_with_source(spark, config.input)
        snapshot = {"fingerprint": source.get("fingerprint"),
                    "delta_version": source.get("delta_version")}
        report = score(spark, config.model_ref, ingested.accepted, config.output.path,
                       rows_rejected=ingested.counts["rejected"], snapshot=snapshot, **common)
        report.rows_in = ingested.counts["read"]
    # The run's one timing: from before the ingest (and the model's resolution) to the
    # commit; the summary line's rows_per_s is rows_out over these seconds.
    report.seconds = time.perf_counter() - started
    return report


@dataclass
class QuickstartReport:
    workdir: str
    data_path: str
    train: TrainReport
    score: ScoreReport
    reloaded_identical: bool


def run_quickstart(spark, config: Optional[QuickstartConfig] = None) -> QuickstartReport:
    """The whole pipeline on scikit-learn's bundled breast-cancer data (569 rows, 30 features)."""
    import numpy as np

    from sparkml_aiaas.data import write_breast_cancer_csv
    from sparkml_aiaas.models import load_model

    config = config or QuickstartConfig()
    workdir = os.path.abspath(config.workdir)
    os.makedirs(workdir, exist_ok=True)
    dataset = write_breast_cancer_csv(os.path.join(workdir, "data", "breast_cancer.csv"))
    logger.info("data      %s (scikit-learn breast_cancer, %d features)", dataset.path,
                len(dataset.feature_cols))
    train_config = TrainJobConfig(
        input=InputSettings(path=dataset.path, format="csv", schema=dataset.schema_ddl,
                            options={"header": True},
                            quarantine_path=os.path.join(workdir, "quarantine"),
                            max_reject_fraction=0.01),
        split=config.split,
        model=ModelSettings(type="logistic_regression", label_col=dataset.label_col,
                            features=dataset.feature_cols, params=config.model_params),
        output=TrainOutput(model_path=os.path.join(workdir, "model"),
                           metrics_path=os.path.join(workdir, "metrics.json")),
    )
    train_report = run_training(spark, train_config)
    test = train_report.test_frame
    if test is None or train_report.test_rows == 0:
        raise SparkmlAiaasError("the quickstart split left no test rows to score")

    # Reload from disk and check that it scores exactly as the model that was trained.
    reloaded = load_model(train_report.model_path)
    probability = reloaded.getProbabilityCol()
    ordered = test.orderBy(config.split.key)
    trained_out = train_report.model.transform(ordered).toPandas()[probability]
    reloaded_out = reloaded.transform(ordered).toPandas()[probability]
    # transform gives ML vectors (DenseVector cells): compare their arrays.
    identical = bool(np.array_equal(np.stack([v.toArray() for v in trained_out]),
                                    np.stack([v.toArray() for v in reloaded_out])))
    logger.info("reload    %s: predictions %s", train_report.model_path,
                "identical" if identical else "DIFFER")
    score_report = score_with_model(
        spark, train_report.model_path, test, os.path.join(workdir, "scored"),
        model_name="quickstart_breast_cancer",
    )
    logger.info("score     %d test rows → %s (Parquet, run_id %s)", score_report.rows_out,
                score_report.output_path, score_report.run_id)
    return QuickstartReport(workdir=workdir, data_path=dataset.path, train=train_report,
                            score=score_report, reloaded_identical=identical)
