"""MLflow interoperability (optional extra: ``pip install 'sparkml_aiaas[mlflow]'``).

* :func:`export_mlflow` writes a registered version as an MLflow **pyfunc**
  model in MLflow's ``loader_module`` form: ``data/`` holds the saved artifact
  directory and ``MLmodel`` names :mod:`sparkml_aiaas.registry.mlflow_loader`,
  whose ``_load_pyfunc`` runs our Spark-free predictor.  Nothing is pickled, so
  loading the export runs no code from it (a ``python_model`` export would be
  cloudpickled, and unpickling runs whatever the pickle says).
  ``mlflow.pyfunc.load_model(path).predict(pdf)`` gives the same numbers as
  :meth:`ModelRegistry.load_predictor` and ``model.transform``, and
  ``mlflow.pyfunc.spark_udf(spark, path)`` can load it.
* :func:`log_to_mlflow` records a version's params, metrics and identity as an
  MLflow run on a tracking server (``sqlite:///...`` works offline).

mlflow is imported lazily; without it a :class:`ConfigError` says how to install it.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, Optional

import pandas as pd

from sparkml_aiaas import __version__
from sparkml_aiaas.errors import ConfigError

__all__ = ["SparkmlAiaasPyfunc", "export_mlflow", "log_to_mlflow"]

_ARTIFACT_KEY = "sparkml_aiaas_model"  # of the pickled exports SparkmlAiaasPyfunc loads


def _mlflow():
    try:
        import mlflow  # noqa: F401
        import mlflow.pyfunc  # noqa: F401
    except ImportError:
        raise ConfigError(
            "MLflow support needs mlflow: pip install 'sparkml_aiaas[mlflow]'"
        ) from None
    return mlflow


try:  # mlflow is optional: this module imports without it, and _mlflow() explains.
    from mlflow.pyfunc import PythonModel as _PythonModel
except ImportError:  # pragma: no cover - exercised only without the extra
    _PythonModel = object


class SparkmlAiaasPyfunc(_PythonModel):
    """``mlflow.pyfunc.PythonModel`` of exports written before the ``loader_module`` form.

    Kept so that those (pickled) exports still load; :func:`export_mlflow` no longer
    writes it.  Loading a pickled MLflow model runs the pickle: load only those you made.
    """

    def load_context(self, context) -> None:
        from sparkml_aiaas.models.predictor import load_predictor

        self._predictor = load_predictor(context.artifacts[_ARTIFACT_KEY])

    # Annotated with a frame: MLflow then neither validates by type hint nor warns that
    # the method has none (it checks at class definition).
    def predict(self, context, model_input: pd.DataFrame, params=None):
        if not isinstance(model_input, pd.DataFrame):
            model_input = pd.DataFrame(model_input)
        return self._predictor.predict(model_input)


def _signature(predictor) -> Any:
    """An MLflow model signature from the predictor's input columns (None for vector inputs)."""
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    inputs = (getattr(predictor, "metadata", None) or {}).get("signature", {}).get("inputs")
    if not inputs:
        return None
    kinds = {"string": "string", "boolean": "boolean", "int": "integer", "bigint": "long",
             "float": "float", "double": "double"}
    if any(column.get("type") not in kinds for column in inputs):
        return None  # vectors and other types MLflow's column specs cannot state
    return ModelSignature(inputs=Schema([ColSpec(kinds[c["type"]], c["name"]) for c in inputs]))


_EXAMPLE_VALUES = {"string": "", "boolean": False, "int": 0, "bigint": 0, "float": 0.0,
                   "double": 0.0}


def _input_example(predictor) -> Optional[pd.DataFrame]:
    """One row that fits the signature and that the model scores: zeros (and a category
    the preprocessor knows, when it has one); MLflow stores it beside the signature.
    None for vector inputs, or when no such row is found."""
    inputs = (getattr(predictor, "metadata", None) or {}).get("signature", {}).get("inputs")
    if not inputs or any(c.get("type") not in _EXAMPLE_VALUES for c in inputs):
        return None
    row = {c["name"]: _EXAMPLE_VALUES[c["type"]] for c in inputs}
    # A bundle's one-hot steps may refuse an unseen category: take one each step kept.
    for fitted, _ in getattr(predictor, "preprocessors", None) or ():
        for step in getattr(fitted, "steps", ()):
            kept = [c for c in getattr(step, "categories", None) or () if c is not None]
            if getattr(step, "kind", "") == "onehot" and step.column in row and kept:
                row[step.column] = kept[0]
    example = pd.DataFrame([row]).astype(
        {c["name"]: {"int": "int32", "bigint": "int64", "float": "float32"}[c["type"]]
         for c in inputs if c["type"] in ("int", "bigint", "float")})
    try:
        predictor.predict(example)
    except Exception:  # noqa: BLE001 - an example the model refuses is no example
        return None
    return example


def export_mlflow(registry, ref: str, path: str, trusted_factories=None) -> str:
    """Write the verified version ``ref`` as an MLflow pyfunc model directory at ``path``.

    Returns the path.  The model declares ``sparkml_aiaas=={version}`` as its
    pip requirement (no requirement inference, which would need a network).
    ``trusted_factories`` is needed here only to read a torch factory model's
    signature; whoever loads the export trusts factories through
    ``SPARKML_AIAAS_TRUSTED_FACTORIES`` (see :mod:`.mlflow_loader`).
    """
    mlflow = _mlflow()
    from sparkml_aiaas.models.predictor import load_predictor

    target = os.fspath(path)
    if os.path.exists(target):
        raise ConfigError(f"MLflow export target {target!r} already exists")
    mv = registry.resolve(ref)
    # The whole version (preprocessor + model) when it has a preprocessor: the pyfunc
    # then takes raw columns, as batch scoring and serving do.
    artifact = mv.predictor_path
    predictor = load_predictor(artifact, trusted_factories)
    mlflow.pyfunc.save_model(
        target,
        loader_module="sparkml_aiaas.registry.mlflow_loader",
        data_path=artifact,
        signature=_signature(predictor),
        input_example=_input_example(predictor),
        pip_requirements=[f"sparkml_aiaas=={__version__}", "numpy", "pandas"],
        metadata={"sparkml_aiaas_ref": mv.ref, "sparkml_aiaas_digest": mv.digest},
    )
    return target


def _flat(prefix: str, value: Any, out: Dict[str, str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        text = value if isinstance(value, str) else json.dumps(value)
        out[prefix] = text[:6000]


def log_to_mlflow(registry, ref: str, tracking_uri: Optional[str] = None, *,
                  experiment_name: Optional[str] = None) -> str:
    """Log ``ref``'s params, numeric metrics and identity tags as a finished MLflow run.

    Parameters
    ----------
    tracking_uri : str, optional
        Default: the ``MLFLOW_TRACKING_URI`` environment variable; one of the two
        is required (nothing is logged to an implicit ``./mlruns``).
    experiment_name : str, optional
        Default: ``sparkml_aiaas/<name>``; created when missing.

    Returns
    -------
    str
        The MLflow run id.
    """
    tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not tracking_uri:
        raise ConfigError("log_to_mlflow needs a tracking URI (argument or MLFLOW_TRACKING_URI)")
    _mlflow()
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    mv = registry.resolve(ref)
    meta = mv.metadata
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment_name = experiment_name or f"sparkml_aiaas/{mv.name}"
    experiment = client.get_experiment_by_name(experiment_name)
    experiment_id = (experiment.experiment_id if experiment is not None
                     else client.create_experiment(experiment_name))
    run = client.create_run(experiment_id, run_name=mv.ref.replace("/", "-v"))
    params: Dict[str, str] = {}
    _flat("", meta.get("params") or {}, params)
    now = int(time.time() * 1000)
    metrics = [Metric(k, float(v), now, 0) for k, v in (meta.get("metrics") or {}).items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)]
    tags = {
        "sparkml_aiaas.name": mv.name, "sparkml_aiaas.version": str(mv.version),
        "sparkml_aiaas.digest": mv.digest, "sparkml_aiaas.registry": registry.root,
        "sparkml_aiaas.package_version": str(meta.get("package_version")),
    }
    if meta.get("git_commit"):
        tags["mlflow.source.git.commit"] = meta["git_commit"]
    client.log_batch(run.info.run_id, metrics=metrics,
                     params=[Param(k, v) for k, v in params.items()],
                     tags=[RunTag(k, v) for k, v in tags.items()])
    client.set_terminated(run.info.run_id)
    return run.info.run_id
