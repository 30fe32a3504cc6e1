"""pyspark.ml writer/reader for our models, over the Spark-free artifact format.

``model.write().save(path)`` / ``Model.load(path)`` and a saved
``PipelineModel`` holding our stages all go through here; plain Python reads
the same directory with :func:`sparkml_aiaas.models.load_predictor`.

Reading imports only the package's own model classes, checked by name first, and a torch
factory only when allowlisted (:mod:`sparkml_aiaas.models.trust`).  pyspark's own
``PipelineModel.load`` imports each stage's class by the name in the stage's metadata
before our reader is involved; :func:`load_model` checks those names first.
"""

from __future__ import annotations

import importlib
import logging
import os
from typing import Any, Dict

from pyspark.ml.util import MLReader, MLWriter

from sparkml_aiaas.engine.blocks import FeatureSpec
from sparkml_aiaas.errors import ModelFormatError
from sparkml_aiaas.models.artifact import (METADATA_FILE, checked_signature, local_path,
                                           read_artifact, read_metadata_json, write_artifact)
from sparkml_aiaas.models.trust import (check_artifact_class, check_stage_class, current,
                                        loading, trusted)

logger = logging.getLogger(__name__)


def _class_path(cls) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def input_signature(dataset, spec: FeatureSpec) -> Dict[str, Any]:
    """The raw input columns a model reads, with their Spark SQL types."""
    inputs = []
    for name in spec.input_columns():
        data_type = dataset.schema[name].dataType if name in dataset.columns else None
        type_name = data_type.simpleString() if data_type is not None else "unknown"
        inputs.append({"name": name, "type": type_name})
    return {"inputs": inputs}


def _param_values(instance, param_map) -> Dict[str, Any]:
    return {param.name: value for param, value in param_map.items()
            if instance.hasParam(param.name)}


def restored_signature(metadata: Dict[str, Any]) -> Dict[str, Any]:
    """The input signature saved in ``metadata`` (outputs dropped: the model recomputes them)."""
    signature = checked_signature(metadata.get("signature"))
    signature.pop("outputs", None)
    return signature


def restored_summary(summary_class, metadata: Dict[str, Any]):
    """The training summary saved in ``metadata`` as ``summary_class`` (None when absent)."""
    training = metadata.get("training")
    if not training:
        return None
    if not isinstance(training, dict):
        raise ModelFormatError(f"model metadata 'training' is not an object: {training!r:.80}")
    try:
        return summary_class(**training)
    except TypeError as exc:
        raise ModelFormatError(f"model metadata 'training' does not fit "
                               f"{summary_class.__name__}: {exc}") from None


class ArtifactWriter(MLWriter):
    """Writes ``instance._artifact()`` plus its params, atomically (no Spark job needed)."""

    def __init__(self, instance):
        super().__init__()
        self.instance = instance

    def save(self, path: str) -> None:
        # MLWriter.save would call a JVM helper for overwrite; the artifact
        # writer replaces the directory itself, atomically.
        self.saveImpl(path)

    def saveImpl(self, path: str) -> None:
        # (metadata, arrays) or (metadata, arrays, files): extra files in open formats
        # (an XGBoost UBJ booster, a skops file), checksummed beside arrays.npz.
        parts = self.instance._artifact()
        metadata, arrays = parts[0], parts[1]
        files = parts[2] if len(parts) > 2 else None
        compress = bool(getattr(self.instance, "_compress_arrays", False))
        metadata = dict(metadata)
        metadata.update({
            "class": _class_path(type(self.instance)),
            "uid": self.instance.uid,
            "paramMap": _param_values(self.instance, self.instance._paramMap),
            "defaultParamMap": _param_values(self.instance, self.instance._defaultParamMap),
        })
        write_artifact(path, metadata, arrays, overwrite=self.shouldOverwrite, files=files,
                       compress=compress)


class ArtifactReader(MLReader):
    """Reads a model directory as ``cls`` (or a subclass), refusing what it cannot trust.

    The class named in metadata.json is checked against the package's own model classes
    (:data:`~sparkml_aiaas.models.trust.ARTIFACT_CLASSES`) as a string, before anything is
    imported; a torch model's factory against ``trusted_factories`` (plus
    ``SPARKML_AIAAS_TRUSTED_FACTORIES``, or the list of an enclosing
    :func:`~sparkml_aiaas.models.trust.loading` block).
    """

    def __init__(self, cls, trusted_factories=None):
        super().__init__()
        self.cls = cls
        self.trusted_factories = trusted_factories

    def load(self, path: str):
        metadata, arrays = read_artifact(path)
        where = f"model at {path!r}"
        class_path = check_artifact_class(metadata.get("class"), where)
        module_name, _, class_name = class_path.rpartition(".")
        try:
            saved_class = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError):  # e.g. sklearn or xgboost not installed
            raise ModelFormatError(f"{where} is a {class_path}, which cannot be imported here "
                                   "(an optional dependency missing?)") from None
        if not (isinstance(saved_class, type) and issubclass(saved_class, self.cls)):
            raise ModelFormatError(
                f"{where} is a {class_name}, not a {self.cls.__name__}"
            )
        uid = metadata.get("uid")
        params = metadata.get("paramMap", {})
        if not isinstance(uid, str) or not uid or not isinstance(params, dict):
            raise ModelFormatError(f"{where}: metadata.json has no valid uid and paramMap")
        instance = saved_class()
        instance._resetUid(uid)
        for name, value in params.items():
            if instance.hasParam(name):
                try:
                    instance._set(**{name: value})
                except (TypeError, ValueError) as exc:  # the param's type converter refused it
                    raise ModelFormatError(f"{where}: param {name!r} has an invalid value "
                                           f"{value!r:.80}: {exc}") from None
            else:
                logger.warning("ignoring unknown param %r in model at %s", name, path)
        if hasattr(instance, "_trust_factories"):
            # Models whose artifact may name code (torch factories) get the caller's allowlist.
            instance._trust_factories(current(self.trusted_factories), where)
        instance._restore(metadata, arrays)
        if hasattr(instance, "_restore_files"):
            # Models with extra files read them verified (read_artifact_file checks sha256).
            instance._restore_files(path, metadata)
        instance.artifact_metadata = metadata
        return instance


def _check_pipeline(path: str, where: str) -> None:
    """Refuse a saved PipelineModel any of whose (nested) stages names a class that is
    neither ours nor pyspark.ml's, before pyspark's reader imports it."""
    from sparkml_aiaas.models.pipeline_predictor import _spark_metadata, _stage_dirs

    for stage in _stage_dirs(path):
        name = f"stage {os.path.basename(stage)} of {where}"
        check_stage_class(_spark_metadata(stage).get("class"), name)
        if os.path.isfile(os.path.join(stage, METADATA_FILE)):
            check_artifact_class(read_metadata_json(
                os.path.join(stage, METADATA_FILE)).get("class"), name)
        elif os.path.isdir(os.path.join(stage, "stages")):
            _check_pipeline(stage, name)


def load_model(path: str, trusted_factories=None):
    """Load any saved sparkml_aiaas model as its pyspark.ml Model class (verified).

    Also a saved ``PipelineModel`` whose stages are pyspark.ml's and ours: every stage's class
    name is checked before pyspark's reader (which imports stage classes by the name in their
    metadata) runs, and our stages get ``trusted_factories``.

    Parameters
    ----------
    trusted_factories : list of str, str or Allowlist, optional
        Torch network factories the model may name (see :mod:`sparkml_aiaas.models.trust`).
    """
    from pyspark.ml import Model

    from sparkml_aiaas.models.pipeline_predictor import is_saved_pipeline

    if is_saved_pipeline(path):
        from pyspark.ml import PipelineModel

        _check_pipeline(local_path(path), f"the PipelineModel at {path!r}")
        with loading(trusted(trusted_factories)):
            return PipelineModel.load(path)
    return ArtifactReader(Model, trusted_factories).load(path)
