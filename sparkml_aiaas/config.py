"""Typed job configuration, parsed once at the edge from YAML (``conf/*.yaml``).

YAML keys are snake_case; a model's params are its estimator's camelCase
Params in snake_case (``max_depth`` → ``maxDepth``), derived from the
estimator's declared Params (:func:`model_param_aliases`), so a Param added to
an estimator is configurable without a second list.  Every model forbids
unknown keys, so a typo fails with the field's name instead of being ignored.
CLI flags override values through dotted ``key=value`` pairs
(:func:`apply_overrides`) before validation.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Literal, Optional, Sequence, Type, TypeVar, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sparkml_aiaas.errors import ConfigError, unknown_names_hint

MODEL_TYPES = ("logistic_regression", "linear_regression", "linear_svc")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class SparkSettings(_Strict):
    """Settings for a session we start; an active session (Databricks, spark-submit) wins."""

    app_name: str = "sparkml_aiaas"
    master: Optional[str] = None
    #: A Spark Connect URL (sc://host:port): run on that server; SPARK_REMOTE when unset.
    remote: Optional[str] = None
    conf: Dict[str, str] = Field(default_factory=dict)

    @field_validator("remote")
    @classmethod
    def _remote_url(cls, value):
        if value is not None:
            from sparkml_aiaas.session import check_remote_url

            check_remote_url(value)
        return value

    @field_validator("conf", mode="before")
    @classmethod
    def _stringify(cls, value):
        if isinstance(value, dict):
            return {str(k): str(v).lower() if isinstance(v, bool) else str(v)
                    for k, v in value.items()}
        return value


class InputSettings(_Strict):
    """A source read with a declared schema; malformed rows go to the quarantine.

    ``format: delta`` reads a Delta table as committed (optionally at
    ``version``, time travel): the rows were validated when they were
    ingested, so only the declared schema (if any) is checked, and
    ``options``, ``quarantine_path`` and ``max_reject_fraction`` do not apply.
    """

    path: str
    format: Literal["csv", "json", "parquet", "delta"] = "csv"
    schema_: Union[str, List[Dict[str, Any]], None] = Field(default=None, alias="schema")
    options: Dict[str, Any] = Field(default_factory=dict)
    quarantine_path: Optional[str] = None
    max_reject_fraction: Optional[float] = Field(default=None, ge=0.0, le=1.0)
    version: Optional[int] = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _schema_for_text_formats(self):
        if self.format in ("csv", "json") and not self.schema_:
            raise ValueError(f"a schema must be declared for format {self.format!r}")
        return self

    @model_validator(mode="after")
    def _delta_only_settings(self):
        if self.version is not None and self.format != "delta":
            raise ValueError(
                f"version (time travel) applies to format 'delta' only, not {self.format!r}")
        if self.format == "delta":
            ingest_only = [name for name, value in (
                ("options", self.options), ("quarantine_path", self.quarantine_path),
                ("max_reject_fraction", self.max_reject_fraction)) if value]
            if ingest_only:
                raise ValueError(
                    f"{', '.join(ingest_only)} do(es) not apply to format 'delta': a Delta table "
                    "is read as committed (quarantine rows when ingesting it: sparkml-aiaas ingest)")
        return self


class SplitSettings(_Strict):
    key: str
    test_fraction: float = Field(default=0.2, gt=0.0, lt=1.0)
    seed: int = 0


#: model type → the estimator class it trains, as ``module:name`` (imported when used).
ESTIMATOR_CLASSES = {
    "logistic_regression": "sparkml_aiaas.models.linear:LogisticRegression",
    "linear_regression": "sparkml_aiaas.models.linear:LinearRegression",
    "linear_svc": "sparkml_aiaas.models.linear:LinearSVC",
    "xgboost_classifier": "sparkml_aiaas.models.xgboost:XGBoostClassifier",
    "xgboost_regressor": "sparkml_aiaas.models.xgboost:XGBoostRegressor",
    "random_forest_classifier": "sparkml_aiaas.models.xgboost:RandomForestClassifier",
    "random_forest_regressor": "sparkml_aiaas.models.xgboost:RandomForestRegressor",
    "torch_classifier": "sparkml_aiaas.models.torch:TorchClassifier",
    "torch_regressor": "sparkml_aiaas.models.torch:TorchRegressor",
}


def estimator_class(model_type: str) -> type:
    """The estimator class of a model type (imports its module: pyspark, xgboost...)."""
    import importlib

    module, _, name = ESTIMATOR_CLASSES[model_type].partition(":")
    return getattr(importlib.import_module(module), name)


def model_param_aliases(model_type: str,
                        params: Optional[Dict[str, Any]] = None) -> Dict[str, str]:
    """``{snake_case: camelCase}`` of the params a config may set for ``model_type``: its
    estimator's Params but the columns the config's own keys set (``features``,
    ``features_col``, ``label_col``).  ValueError names the ``params`` it does not know,
    then the closest known one ("did you mean") or, with none close, the known ones."""
    from sparkml_aiaas.models.param_signature import config_param_names

    return _checked_aliases(config_param_names(estimator_class(model_type)), params,
                            "model param(s)", f" for type {model_type!r}")


def _checked_aliases(aliases: Dict[str, str], params: Optional[Dict[str, Any]], what: str,
                     where: str = "") -> Dict[str, str]:
    """``aliases``, after a ValueError when ``params`` holds keys it lacks: ``unknown
    {what} [...]{where}``, then the closest known key or the known ones."""
    unknown = sorted(set(params or {}) - set(aliases))
    if unknown:
        raise ValueError(f"unknown {what} {unknown}{where}" + unknown_names_hint(unknown, aliases))
    return aliases


def __getattr__(name):
    # PARAM_ALIASES, the table of the linear models' params older code imports: derived now.
    if name == "PARAM_ALIASES":
        return {k: v for model_type in MODEL_TYPES
                for k, v in model_param_aliases(model_type).items()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


ModelType = Literal[tuple(ESTIMATOR_CLASSES)]


class ModelSettings(_Strict):
    type: ModelType = "logistic_regression"
    label_col: str = "label"
    features: Optional[List[str]] = None
    features_col: Optional[str] = None
    params: Dict[str, Any] = Field(default_factory=dict)

    @field_validator("params")
    @classmethod
    def _params_for_type(cls, value: Dict[str, Any], info):
        # The estimator's own Params decide (snake_case); an invalid type is reported alone.
        if info.data.get("type") in ESTIMATOR_CLASSES:
            model_param_aliases(info.data["type"], value)
        return value

    @model_validator(mode="after")
    def _one_feature_source(self):
        if bool(self.features) == bool(self.features_col):
            raise ValueError("set exactly one of 'features' (columns) or 'features_col' (a vector)")
        return self

    def spark_params(self) -> Dict[str, Any]:
        """Constructor keywords of the estimator (camelCase)."""
        aliases = model_param_aliases(self.type, self.params)
        params = {aliases[k]: v for k, v in self.params.items()}
        params["labelCol"] = self.label_col
        if self.features:
            params["featuresCols"] = list(self.features)
        else:
            params["featuresCol"] = self.features_col
        return params


def preprocess_param_aliases(params: Optional[Dict[str, Any]] = None) -> Dict[str, str]:
    """``{snake_case: camelCase}`` of the keys a ``preprocess:`` block may set: every Param
    of :class:`~sparkml_aiaas.preprocessing.Preprocessor`, derived as the models' are.
    ValueError names the keys of ``params`` it does not know, then a "did you mean" or
    the known keys (as :func:`model_param_aliases`)."""
    from sparkml_aiaas.models.param_signature import config_param_names
    from sparkml_aiaas.preprocessing.stages import Preprocessor

    return _checked_aliases(config_param_names(Preprocessor, skip=()), params,
                            "preprocess key(s)")


class PreprocessSettings(BaseModel):
    """The ``preprocess:`` block: a :class:`~sparkml_aiaas.preprocessing.Preprocessor` fitted
    on the training split, whose output column the model reads.

    Its keys are the Preprocessor's Params in snake_case (``numeric_cols``,
    ``categorical_cols``, ``scaling``...), derived from the class
    (:func:`preprocess_param_aliases`), so they are declared once.  The values are
    checked by building the Preprocessor when the config is read.
    """

    # The keys are the Preprocessor's Params, not fields declared here: kept as extras,
    # checked against the class by _known_keys.
    model_config = ConfigDict(extra="allow")

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, value):
        if isinstance(value, dict):
            preprocess_param_aliases({str(k): v for k, v in value.items()})
        return value

    @model_validator(mode="after")
    def _valid_values(self):
        from sparkml_aiaas.preprocessing.stages import Preprocessor

        try:
            Preprocessor(**self.spark_params()).spec()
        except (TypeError, ValueError) as exc:  # param converters; ConfigError from spec()
            raise ValueError(f"invalid preprocess settings: {exc}") from None
        return self

    @property
    def params(self) -> Dict[str, Any]:
        """The keys as given (snake_case), ``None`` values dropped (they mean "default")."""
        return {k: v for k, v in (self.model_extra or {}).items() if v is not None}

    def spark_params(self) -> Dict[str, Any]:
        """Constructor keywords of the Preprocessor (camelCase)."""
        aliases = preprocess_param_aliases(self.params)
        return {aliases[k]: v for k, v in self.params.items()}

    @property
    def output_col(self) -> str:
        """The vector column the preprocessing appends (the Preprocessor's default when unset)."""
        return self.params.get("output_col") or _default_preprocess_output()


def _default_preprocess_output() -> str:
    from sparkml_aiaas.preprocessing.stages import Preprocessor

    return Preprocessor().getOutputCol()


class RegistrySettings(_Strict):
    """The ``registry:`` block: register the saved model as the next version of ``name``
    in the registry at ``root``, then point ``alias`` (if given) at it."""

    root: str
    name: str
    alias: Optional[str] = None
    description: Optional[str] = None

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value):
        from sparkml_aiaas.registry import validate_name

        return validate_name(value)

    @field_validator("alias")
    @classmethod
    def _valid_alias(cls, value):
        if value is not None:
            from sparkml_aiaas.registry import validate_alias

            validate_alias(value)
        return value


class TrainOutput(_Strict):
    model_path: str
    metrics_path: Optional[str] = None
    overwrite: bool = True
    #: Run report (plots + report.html); see docs/reports.md.
    report: bool = True
    #: Default: ``report/`` beside ``metrics_path``, else ``<model_path>_report``.
    report_dir: Optional[str] = None

    def resolved_report_dir(self) -> Optional[str]:
        if not self.report:
            return None
        if self.report_dir:
            return os.path.abspath(self.report_dir)
        if self.metrics_path:
            return os.path.join(os.path.dirname(os.path.abspath(self.metrics_path)), "report")
        return os.path.abspath(self.model_path.rstrip("/\\") + "_report")


class TrainJobConfig(_Strict):
    spark: SparkSettings = Field(default_factory=SparkSettings)
    input: InputSettings
    split: Optional[SplitSettings] = None
    #: Fitted on the training split; the model then reads its output column.
    preprocess: Optional[PreprocessSettings] = None
    model: ModelSettings
    output: TrainOutput
    #: Register the saved model (see docs/registry.md).
    registry: Optional[RegistrySettings] = None

    @model_validator(mode="before")
    @classmethod
    def _model_reads_preprocess_output(cls, data):
        # With preprocessing the model's input is known: its output column.  Filled in here
        # so the model block need not repeat it (and the recorded config states it).
        if isinstance(data, dict) and isinstance(data.get("preprocess"), dict) \
                and isinstance(data.get("model"), dict):
            model = data["model"]
            if not model.get("features") and not model.get("features_col"):
                output = data["preprocess"].get("output_col") or _default_preprocess_output()
                data = {**data, "model": {**model, "features_col": output}}
        return data

    @model_validator(mode="after")
    def _preprocess_feeds_model(self):
        if self.preprocess is not None:
            output = self.preprocess.output_col
            if self.model.features:
                raise ValueError(
                    f"model.features must be unset with preprocess: the model reads the "
                    f"preprocess output column {output!r} (model.features_col)")
            if self.model.features_col != output:
                raise ValueError(
                    f"model.features_col must equal the preprocess output column {output!r} "
                    f"(or be left unset), not {self.model.features_col!r}")
        return self


class ScoreOutput(_Strict):
    """Parquet: one atomic ``run_id=<id>/`` partition per run.  Delta: a table partitioned
    by ``run_id`` (then ``partition_by``), one commit per run.  Either way ``mode:
    overwrite`` replaces a re-run's rows and ``error`` refuses a run already written."""

    path: str
    format: Literal["parquet", "delta"] = "parquet"
    mode: Literal["overwrite", "error"] = "overwrite"
    partition_by: List[str] = Field(default_factory=list)


class ScoreJobConfig(_Strict):
    """``model_path: DIR`` (a saved model), or ``model: name@alias`` with ``registry: ROOT``."""

    spark: SparkSettings = Field(default_factory=SparkSettings)
    model_path: Optional[str] = None
    model: Optional[str] = None
    registry: Optional[str] = None
    model_name: Optional[str] = None
    input: InputSettings
    output: ScoreOutput
    #: Defaults to sha256(model digest + input snapshot)[:16].
    run_id: Optional[str] = None
    #: Score only input files not scored by an earlier run into this output.
    incremental: bool = False
    #: Rows per Arrow batch (spark.sql.execution.arrow.maxRecordsPerBatch for the query).
    batch_size: Optional[int] = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _one_model(self):
        if (self.model_path is None) == (self.model is None):
            raise ValueError("give exactly one of model_path (a saved model directory) or "
                             "model (a registry reference such as name@production)")
        if self.model is not None and self.registry is None:
            raise ValueError("model (a registry reference) needs registry: ROOT")
        return self

    @property
    def model_ref(self) -> str:
        return self.model if self.model is not None else self.model_path


class IngestInput(_Strict):
    """The source of an ingest job: read with :func:`sparkml_aiaas.data.ingest`."""

    path: Union[str, List[str]]
    format: Literal["csv", "json", "parquet", "delta"] = "csv"
    schema_: Union[str, List[Dict[str, Any]]] = Field(alias="schema")
    options: Dict[str, Any] = Field(default_factory=dict)
    #: Fail (writing the quarantine but no accepted rows) above this rejected fraction.
    max_reject_fraction: Optional[float] = Field(default=None, ge=0.0, le=1.0)
    #: Schema drift: ``error``; ``ignore_extra`` (extra source columns left out); ``allow``
    #: (also declared nullable columns the source lacks read as null).
    on_schema_drift: Literal["error", "ignore_extra", "allow"] = "error"
    #: Literal NaN/infinity in FLOAT/DOUBLE columns: ``reject`` (ingest's default), ``null`` or
    #: ``keep``, for all of them or per column (``{x: keep, "*": "null"}``; YAML's null = ``null``).
    #: Checked against the schema by ingest.
    non_finite: Union[Literal["reject", "null", "keep"], Dict[str, Optional[str]], None] = None

    @field_validator("path")
    @classmethod
    def _paths_not_empty(cls, value):
        if not value or (isinstance(value, list) and not all(value)):
            raise ValueError("give a path (file, folder or glob) or a non-empty list of paths")
        return value

    @field_validator("non_finite")
    @classmethod
    def _non_finite_policies(cls, value):
        if isinstance(value, dict):
            bad = {k: v for k, v in value.items() if v not in (None, "reject", "null", "keep")}
            if bad:
                raise ValueError(f"non_finite policies must be reject, null or keep, not {bad}")
        return value


class IngestSink(_Strict):
    """Where accepted rows go.  Parquet: ``overwrite`` is atomic (the output
    appears complete or not at all), ``append`` adds files.  Delta: every
    write is one commit; ``merge`` upserts on ``keys``."""

    path: str
    format: Literal["parquet", "delta"] = "parquet"
    mode: Literal["overwrite", "append", "merge"] = "overwrite"
    keys: List[str] = Field(default_factory=list)
    partition_by: List[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _mode_fits_format(self):
        if self.mode == "merge":
            if self.format != "delta":
                raise ValueError("mode 'merge' needs format 'delta'")
            if not self.keys:
                raise ValueError("mode 'merge' needs keys: the columns rows are matched on")
        elif self.keys:
            raise ValueError(f"keys are used by mode 'merge' only, not mode {self.mode!r}")
        if self.partition_by and (self.format != "parquet" or self.mode != "overwrite"):
            # write_table commits unpartitioned files (Delta fallback, Parquet append).
            raise ValueError("partition_by is supported for format 'parquet' with mode "
                             "'overwrite' only")
        return self


class QuarantineSink(_Strict):
    """Where rejected rows go, with ``_ingested_at`` and ``_run_id`` added.

    ``mode`` defaults to ``append`` for Delta (a history of every run's
    rejects) and ``overwrite`` for Parquet (the last run's rejects).
    """

    path: str
    format: Literal["parquet", "delta"] = "parquet"
    mode: Optional[Literal["overwrite", "append"]] = None

    @property
    def effective_mode(self) -> str:
        if self.mode is not None:
            return self.mode
        return "append" if self.format == "delta" else "overwrite"


class IngestJobConfig(_Strict):
    spark: SparkSettings = Field(default_factory=SparkSettings)
    input: IngestInput
    #: ``{columns: {email: hash, ssn: drop}, key_env: VAR | key_file: PATH}``; never a key.
    pii: Optional[Dict[str, Any]] = None
    output: IngestSink
    quarantine: Optional[QuarantineSink] = None
    report_path: Optional[str] = None

    @field_validator("pii")
    @classmethod
    def _pii_policy(cls, value):
        if value is not None:
            from sparkml_aiaas.core.pii import PiiPolicy

            # Raises ConfigError (a ValueError) naming the problem, e.g. a `key` entry.
            PiiPolicy.from_config(value)
        return value

    def pii_policy(self):
        """The parsed :class:`~sparkml_aiaas.core.pii.PiiPolicy`, or None."""
        from sparkml_aiaas.core.pii import PiiPolicy

        return PiiPolicy.from_config(self.pii) if self.pii is not None else None


class QuickstartConfig(_Strict):
    spark: SparkSettings = Field(default_factory=SparkSettings)
    workdir: str = "sparkml_aiaas_work/quickstart"
    split: SplitSettings = Field(default_factory=lambda: SplitSettings(key="id", test_fraction=0.25,
                                                                       seed=42))
    model_params: Dict[str, Any] = Field(
        default_factory=lambda: {"reg_param": 0.01, "max_iter": 100, "tol": 1e-8,
                                 "optimizer": "lbfgs"}
    )

    @field_validator("model_params")
    @classmethod
    def _known_params(cls, value):
        model_param_aliases("logistic_regression", value)  # the quickstart's model
        return value


C = TypeVar("C", bound=BaseModel)


def _parse_scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(data: Dict[str, Any], overrides: Sequence[str]) -> Dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML scalars) to a config dict."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} must look like key.subkey=value")
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = _parse_scalar(raw)
    return data


#: At most this many problems are joined on the one line of a config error, then "(+N more)".
MAX_PROBLEMS = 5


def _section_model(model: Type[BaseModel], loc: Sequence[Any]) -> Optional[Type[BaseModel]]:
    """The model class of the section at ``loc`` (field names or aliases; list indices are
    skipped), or None when ``loc`` leads outside declared models (a dict, a scalar)."""
    import typing

    for part in loc:
        if isinstance(part, int):
            continue
        fields = {(f.alias or name): f for name, f in model.model_fields.items()}
        fields.update(model.model_fields)
        field = fields.get(str(part))
        if field is None:
            return None
        pending, found = [field.annotation], None
        while pending and found is None:  # Optional[X], Union[...], List[X]: the model inside
            annotation = pending.pop()
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                found = annotation
            else:
                pending.extend(typing.get_args(annotation))
        if found is None:
            return None
        model = found
    return model


def _known_keys(model: Type[BaseModel]) -> List[str]:
    return sorted(f.alias or name for name, f in model.model_fields.items())


def _problem(err: Dict[str, Any], model: Type[BaseModel], overridden: Sequence[str]) -> str:
    """One problem of a ValidationError as text: ``where: message``, or for an unknown key
    ``unknown key 'k' in section; did you mean 'key'?`` (the known keys when none is close)."""
    loc = [str(p) for p in err["loc"]]
    if err["type"] == "extra_forbidden" and loc:
        *section, key = err["loc"]
        where = ".".join(str(p) for p in section)
        text = f"unknown key {key!r} " + (f"in {where}" if where else "at the top level")
        dotted = ".".join(loc)
        if any(k == dotted or k.startswith(dotted + ".") for k in overridden):
            text += " (from --set)"
        known = _section_model(model, section)
        return text + (unknown_names_hint([str(key)], _known_keys(known)) if known else "")
    where = ".".join(loc) or "(top level)"
    return f"{where}: {err['msg'].removeprefix('Value error, ')}"


def _format_errors(exc: ValidationError, source: str, model: Optional[Type[BaseModel]] = None,
                   overridden: Sequence[str] = ()) -> str:
    """The one line of an invalid config: ``invalid configuration in SOURCE: PROBLEM``.
    Several problems are counted and joined with ``; `` (each starts with its dotted field
    or ``unknown key``), at most :data:`MAX_PROBLEMS` of them, then ``(+N more)``."""
    problems = [_problem(err, model or BaseModel, overridden) for err in exc.errors()]
    if len(problems) == 1:
        return f"invalid configuration in {source}: {problems[0]}"
    more = f" (+{len(problems) - MAX_PROBLEMS} more)" if len(problems) > MAX_PROBLEMS else ""
    return (f"invalid configuration in {source} ({len(problems)} problems): "
            + "; ".join(problems[:MAX_PROBLEMS]) + more)


def validate_config(model: Type[C], data: Dict[str, Any], source: str = "<arguments>",
                    overridden: Sequence[str] = ()) -> C:
    """``data`` validated into ``model``; ConfigError (one line) names every problem.
    ``overridden``: the dotted keys that came from ``--set`` (an unknown one says so)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source, model, overridden)) from None


def load_config(model: Type[C], path: Optional[str] = None,
                overrides: Sequence[str] = ()) -> C:
    """Read a YAML file (optional), apply overrides, validate into ``model``.

    Raises
    ------
    ConfigError
        The file is missing or not YAML, or a field is invalid (each problem
        named by its dotted field path).
    """
    data: Dict[str, Any] = {}
    source = path or "<defaults>"
    if path is not None:
        if not os.path.isfile(path):
            raise ConfigError(f"config file {path!r} does not exist")
        try:
            with open(path) as f:
                loaded = yaml.safe_load(f)
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path!r} is not valid YAML: {exc}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path!r} must hold a mapping at the top level")
        data = loaded
    data = apply_overrides(data, overrides)
    overridden = [item.partition("=")[0].strip() for item in overrides]
    return validate_config(model, data, source, overridden)
