"""The loader MLflow runs for an exported model (``loader_module`` of the pyfunc flavor).

:func:`~sparkml_aiaas.registry.mlflow_support.export_mlflow` saves a registry version as
an MLflow model whose ``MLmodel`` names this module and whose ``data/`` holds our artifact
directory as it is in the registry: no pickle, no cloudpickle.  ``mlflow.pyfunc.load_model``
(and ``mlflow.pyfunc.spark_udf`` on each executor) imports this module, which is installed
code, and calls :func:`_load_pyfunc` on that directory; everything else goes through
:func:`sparkml_aiaas.models.load_predictor`: checksums verified, nothing the artifact names
imported unless allowlisted.  MLflow passes only the data path, so a torch model built by a
factory is trusted through ``SPARKML_AIAAS_TRUSTED_FACTORIES`` of the loading process (on
executors: ``spark.executorEnv.SPARKML_AIAAS_TRUSTED_FACTORIES``); the MLmodel file and its
``model_config`` are part of the artifact and are never asked.

No mlflow or pyspark import here.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

__all__ = ["ExportedModel"]


class ExportedModel:
    """What ``_load_pyfunc`` returns: ``predict(model_input, params=None)`` for MLflow."""

    def __init__(self, predictor):
        self.predictor = predictor

    def predict(self, model_input, params: Optional[Dict[str, Any]] = None):
        import pandas as pd

        if not isinstance(model_input, pd.DataFrame):
            model_input = pd.DataFrame(model_input)
        return self.predictor.predict(model_input)


def _load_pyfunc(data_path: str) -> ExportedModel:
    """MLflow's loader entry point: the Spark-free predictor of the exported directory."""
    from sparkml_aiaas.models.predictor import load_predictor

    return ExportedModel(load_predictor(data_path))
