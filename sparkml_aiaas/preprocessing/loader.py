"""Spark-free loading of a saved :class:`~sparkml_aiaas.preprocessing.PreprocessorModel`.

The REST server rebuilds the exact fitted preprocessing from the saved
artifact's JSON metadata (checksums verified) without importing pyspark.
"""

from __future__ import annotations

import os

from sparkml_aiaas.core.preprocessing import FittedPreprocessor
from sparkml_aiaas.errors import ModelFormatError
from sparkml_aiaas.models.artifact import local_path, read_artifact, read_metadata_json

__all__ = ["load_fitted"]

_MODEL_CLASS = "PreprocessorModel"


def _pipeline_stage(path: str) -> str:
    """The directory of the single PreprocessorModel stage of a saved PipelineModel."""
    stages_dir = os.path.join(local_path(path), "stages")
    candidates = []
    for name in sorted(os.listdir(stages_dir)):
        meta = os.path.join(stages_dir, name, "metadata.json")
        if os.path.isfile(meta):
            class_path = read_metadata_json(meta).get("class")
            if isinstance(class_path, str) and class_path.endswith("." + _MODEL_CLASS):
                candidates.append(os.path.join(stages_dir, name))
    if len(candidates) != 1:
        raise ModelFormatError(
            f"the PipelineModel at {path!r} has {len(candidates)} PreprocessorModel stages; "
            "pass the path of the stage directory itself")
    return candidates[0]


def load_fitted(path: str) -> FittedPreprocessor:
    """Read a saved ``PreprocessorModel`` (or a saved PipelineModel holding exactly one).

    Parameters
    ----------
    path : str
        The directory ``PreprocessorModel.save`` wrote, or a ``PipelineModel``
        directory containing one such stage.

    Returns
    -------
    FittedPreprocessor
        ``transform_frame(pandas.DataFrame)`` gives the matrix the Spark
        model's ``outputCol`` holds, bit for bit.

    Raises
    ------
    ModelFormatError
        Missing or corrupt files (sha256 mismatch), or a directory holding
        another kind of model.
    """
    if os.path.isdir(os.path.join(local_path(path), "stages")) and not os.path.isfile(
            os.path.join(local_path(path), "metadata.json")):
        path = _pipeline_stage(path)
    metadata, _ = read_artifact(path)
    class_path = metadata.get("class", "")
    # Compared as a string: nothing the metadata names is imported.
    if not isinstance(class_path, str) or not class_path.endswith("." + _MODEL_CLASS) \
            or "preprocessor" not in metadata:
        raise ModelFormatError(f"model at {path!r} is a {class_path or 'unknown class'!r:.120}, "
                               f"not a {_MODEL_CLASS}")
    return FittedPreprocessor.from_dict(metadata["preprocessor"])
