"""Spark-free prediction for a saved ``PipelineModel``: fitted preprocessing, then a model.

A pyspark.ml ``PipelineModel`` of ``[PreprocessorModel, <one of our models>]``
saved with ``model.write().save(path)`` is read here without Spark: the
preprocessor's fitted steps turn request columns into the feature matrix
(:mod:`sparkml_aiaas.core.preprocessing`) and the model's predictor turns
that into predictions, the same arithmetic the Spark stages run.  So batch
scoring, the REST server and ``PipelineModel.transform`` give the same
numbers for the same rows.  This module imports no pyspark.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping

import numpy as np
import pandas as pd

from sparkml_aiaas.core.preprocessing import FittedPreprocessor
from sparkml_aiaas.errors import DataValidationError, ModelFormatError
from sparkml_aiaas.models.artifact import (METADATA_FILE, checked_signature, local_path,
                                           read_artifact)
from sparkml_aiaas.models.predictor_base import output_arrays

__all__ = ["PipelinePredictor", "compose", "is_bundle", "is_saved_pipeline", "load_bundle_predictor",
           "load_pipeline_predictor"]

#: A model bundle: a directory holding ``model/`` (one of our models) and optionally
#: ``preprocessor/`` (a saved ``PreprocessorModel``) -- the layout of a registry version.
BUNDLE_MODEL_DIR = "model"
BUNDLE_PREPROCESSOR_DIR = "preprocessor"

_PIPELINE_CLASSES = ("pyspark.ml.pipeline.PipelineModel", "pyspark.ml.PipelineModel")
_PREPROCESSOR_CLASS = ".PreprocessorModel"


def _spark_metadata(path: str) -> Dict[str, Any]:
    """The one-line JSON pyspark.ml writes to ``<path>/metadata/part-00000`` (a JSON object,
    else :class:`ModelFormatError`)."""
    folder = os.path.join(path, "metadata")
    parts = sorted(p for p in os.listdir(folder) if p.startswith("part-")) if os.path.isdir(folder) else []
    if not parts:
        raise ModelFormatError(f"{path!r} has no metadata/part-* file")
    with open(os.path.join(folder, parts[0]), "rb") as f:
        line = f.readline()
    try:
        metadata = json.loads(line.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # not UTF-8, not JSON
        raise ModelFormatError(f"{path!r}: metadata/{parts[0]} is not a JSON line: {exc}") from None
    if not isinstance(metadata, dict):
        raise ModelFormatError(f"{path!r}: metadata/{parts[0]} is not a JSON object")
    return metadata


def is_saved_pipeline(path: str) -> bool:
    """Whether ``path`` holds a saved pyspark.ml ``PipelineModel``."""
    root = local_path(path)
    if os.path.isfile(os.path.join(root, METADATA_FILE)) or not os.path.isdir(os.path.join(root, "stages")):
        return False
    try:
        return _spark_metadata(root).get("class") in _PIPELINE_CLASSES
    except (ModelFormatError, ValueError, OSError):
        return False


def _stage_dirs(root: str) -> List[str]:
    """Stage directories in pipeline order (``stages/<index>_<uid>``)."""
    stages = os.path.join(root, "stages")
    found = []
    for name in os.listdir(stages):
        match = re.match(r"([0-9]{1,9})_", name)
        if match and os.path.isdir(os.path.join(stages, name)):
            found.append((int(match.group(1)), os.path.join(stages, name)))
    return [path for _, path in sorted(found)]


@dataclass
class PipelinePredictor:
    """Fitted preprocessing steps, then a predictor reading their output column.

    Attributes
    ----------
    preprocessors : list of (FittedPreprocessor, output column)
    model : predictor
        Reads a vector column (``input_columns == [output column]``) of the
        last preprocessor.
    """

    preprocessors: List[tuple]
    model: Any
    metadata: Dict[str, Any]

    @property
    def input_columns(self) -> List[str]:
        needed: List[str] = []
        for fitted, _ in self.preprocessors:
            needed += [c for c in fitted.input_columns if c not in needed]
        return needed

    @property
    def output_columns(self) -> List[tuple]:
        return self.model.output_columns

    def features(self, frame: pd.DataFrame) -> np.ndarray:
        """The matrix the model reads: the last preprocessor's output for ``frame``.

        Earlier preprocessors are checked (their columns must be present, as
        the Spark pipeline needs them) but their vectors feed nothing.
        """
        for fitted, _ in self.preprocessors[:-1]:
            fitted.transform_frame(frame)
        return self.preprocessors[-1][0].transform_frame(frame)

    def features_from_columns(self, columns: Mapping[str, Any]) -> np.ndarray:
        """:meth:`features` of one numpy array per input column.

        Numeric-only preprocessing of numeric arrays runs on the arrays; anything else
        (categorical or hashed columns, object arrays) goes through a pandas frame, as
        :meth:`features` -- the same values either way.
        """
        matrices = [fitted.transform_numeric_columns(columns) for fitted, _ in self.preprocessors]
        if matrices and all(matrix is not None for matrix in matrices):
            return matrices[-1]
        return self.features(_frame_of(columns))

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Predictions for every row of ``frame``: preprocess, then the model's arithmetic."""
        return self.model.predict_matrix(self.features(frame), index=frame.index)

    def predict_columns(self, columns: Mapping[str, Any]) -> Dict[str, np.ndarray]:
        """Predictions as numpy arrays, one per output column (see
        :meth:`~sparkml_aiaas.models.predictor_base.Predictor.predict_columns`)."""
        X = self.features_from_columns(columns)
        return output_arrays(self.model, self.model.predict_arrays(X))


def _frame_of(columns: Mapping[str, Any]) -> pd.DataFrame:
    """A pandas frame of numpy columns (a 2-D array: a column of per-row arrays)."""
    data = {}
    for name, values in columns.items():
        values = np.asarray(values) if not isinstance(values, np.ndarray) else values
        data[name] = list(values) if values.ndim == 2 else values
    try:
        return pd.DataFrame(data)
    except ValueError as exc:  # columns of different lengths, a 3-D array
        raise DataValidationError(f"the input columns do not make a table: {exc}") from None


def _raw_signature(signatures: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The columns a pipeline reads from its input: the preprocessors' inputs, in order."""
    inputs, seen = [], set()
    for signature in signatures:
        for column in (signature or {}).get("inputs", []):
            if column.get("name") not in seen:
                seen.add(column.get("name"))
                inputs.append(dict(column))
    return {"inputs": inputs}


def compose(preprocessors: List[tuple], model, where: str,
            signatures: List[Dict[str, Any]] = (), extra: Dict[str, Any] = None) -> PipelinePredictor:
    """Chain fitted preprocessors ``[(FittedPreprocessor, output column)]`` and a model predictor.

    Refuses, naming ``where``, a model that does not read the last preprocessor's
    output column or cannot predict from a matrix: such a pair would score garbage.
    """
    if preprocessors and list(model.input_columns) != [preprocessors[-1][1]]:
        raise ModelFormatError(
            f"the model of {where} reads {list(model.input_columns)}, not the preprocessor's "
            f"output column {preprocessors[-1][1]!r}; fit the model on the preprocessor's "
            "output (featuresCol = the preprocessor's outputCol)"
        )
    if not hasattr(model, "predict_matrix"):
        raise ModelFormatError(f"the model of {where} cannot predict from a feature matrix")
    metadata = dict(extra or {})
    metadata["signature"] = _raw_signature(list(signatures))
    metadata["model"] = getattr(model, "metadata", None) or {}
    for key in ("model_name", "model_id"):
        if metadata["model"].get(key) is not None:
            metadata.setdefault(key, metadata["model"][key])
    return PipelinePredictor(preprocessors=list(preprocessors), model=model, metadata=metadata)


def _preprocessor_stage(stage: str, where: str) -> tuple:
    """``(FittedPreprocessor, output column, signature)`` of a saved PreprocessorModel.

    The class is compared as a string: nothing named in the metadata is imported.
    """
    metadata, _ = read_artifact(stage) if os.path.isfile(os.path.join(stage, METADATA_FILE)) else (
        _spark_metadata(stage), None)
    class_path = metadata.get("class", "")
    if not isinstance(class_path, str) or not class_path.endswith(_PREPROCESSOR_CLASS) \
            or "preprocessor" not in metadata:
        raise ModelFormatError(
            f"{where} is a {class_path or 'unknown stage'!r:.120}; only PreprocessorModel stages "
            "followed by one of our models can be served without Spark"
        )
    column = None
    for key in ("paramMap", "defaultParamMap"):
        params = metadata.get(key)
        if column is None and isinstance(params, dict):
            column = params.get("outputCol")
    column = "features" if column is None else column
    if not isinstance(column, str) or not column:
        raise ModelFormatError(f"{where}: outputCol {column!r:.80} is not a column name")
    signature = checked_signature(metadata.get("signature"), f"signature of {where}")
    return FittedPreprocessor.from_dict(metadata["preprocessor"]), column, signature


def is_bundle(path: str) -> bool:
    """Whether ``path`` is a model bundle (``model/`` [+ ``preprocessor/``], no metadata.json)."""
    root = local_path(path)
    return (not os.path.isfile(os.path.join(root, METADATA_FILE))
            and os.path.isfile(os.path.join(root, BUNDLE_MODEL_DIR, METADATA_FILE)))


def load_bundle_predictor(path: str, load_model_predictor):
    """The predictor of a model bundle: preprocessor (when present) then model."""
    root = local_path(path)
    model = load_model_predictor(os.path.join(root, BUNDLE_MODEL_DIR))
    pre_dir = os.path.join(root, BUNDLE_PREPROCESSOR_DIR)
    if not os.path.isdir(pre_dir):
        return model
    fitted, column, signature = _preprocessor_stage(pre_dir, f"{path!r}/preprocessor")
    return compose([(fitted, column)], model, repr(path), [signature],
                   {"class": "sparkml_aiaas.bundle"})


def load_pipeline_predictor(path: str, load_model_predictor) -> PipelinePredictor:
    """Read a saved ``PipelineModel`` of preprocessors and one final model, without Spark.

    ``load_model_predictor(stage_dir)`` loads the final stage (our
    :func:`~sparkml_aiaas.models.load_predictor`).  Any other kind of stage
    is refused with its class name: it would need Spark to run.
    """
    root = local_path(path)
    stages = _stage_dirs(root)
    if len(stages) < 2:
        raise ModelFormatError(
            f"the PipelineModel at {path!r} has {len(stages)} stage(s); a served pipeline is "
            "PreprocessorModel stage(s) followed by one of our models"
        )
    preprocessors, signatures = [], []
    for stage in stages[:-1]:
        fitted, column, signature = _preprocessor_stage(
            stage, f"stage {os.path.basename(stage)} of the PipelineModel at {path!r}")
        preprocessors.append((fitted, column))
        signatures.append(signature)
    model = load_model_predictor(stages[-1])
    return compose(preprocessors, model, f"the PipelineModel at {path!r}", signatures,
                   {"class": "pyspark.ml.pipeline.PipelineModel",
                    "stages": [os.path.basename(s) for s in stages]})
