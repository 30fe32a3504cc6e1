"""pyspark.ml writer/reader for our models, over the Spark-free artifact format.

``model.write().save(path)`` / ``Model.load(path)`` and a saved
``PipelineModel`` holding our stages all go through here; plain Python reads
the same directory with :func:`sparkml_aiaas.models.load_predictor`.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any, Dict

from pyspark.ml.util import MLReader, MLWriter

from sparkml_aiaas.engine.blocks import FeatureSpec
from sparkml_aiaas.errors import ModelFormatError
from sparkml_aiaas.models.artifact import read_artifact, write_artifact

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
    def __init__(self, cls):
        super().__init__()
        self.cls = cls

    def load(self, path: str):
        metadata, arrays = read_artifact(path)
        class_path = metadata.get("class", "")
        module_name, _, class_name = class_path.rpartition(".")
        try:
            saved_class = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError, ValueError):
            raise ModelFormatError(f"model at {path!r} names an unknown class {class_path!r}") from None
        if not issubclass(saved_class, self.cls):
            raise ModelFormatError(
                f"model at {path!r} is a {class_name}, not a {self.cls.__name__}"
            )
        instance = saved_class()
        instance._resetUid(metadata["uid"])
        for name, value in metadata.get("paramMap", {}).items():
            if instance.hasParam(name):
                instance._set(**{name: value})
            else:
                logger.warning("ignoring unknown param %r in model at %s", name, path)
        instance._restore(metadata, arrays)
        if hasattr(instance, "_restore_files"):
            # Models with extra files read them verified (read_artifact_file checks sha256).
            instance._restore_files(path, metadata)
        instance.artifact_metadata = metadata
        return instance


def load_model(path: str):
    """Load any saved sparkml_aiaas model as its pyspark.ml Model class (verified)."""
    from pyspark.ml import Model

    return ArtifactReader(Model).load(path)
