"""What ``model_ref`` names: a saved model directory, or a registry reference.

``model_ref`` is a plain path (``/models/churn``) unless ``registry=ROOT`` is
given, in which case it is a registry reference (``churn@production``,
``churn/3``, ``churn``) resolved by :class:`sparkml_aiaas.registry.ModelRegistry`
(only then is a registry opened; its file names are always skipped when reading
a model directory).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from sparkml_aiaas.errors import ModelFormatError, SparkmlAiaasError
from sparkml_aiaas.models.trust import Allowlist, trusted


@dataclass
class ResolvedModel:
    """A model ready to score: lineage fields, its files' bytes and digest, the predictor."""

    name: str
    version: str
    path: str
    digest: str
    files: Dict[str, bytes] = field(repr=False)
    predictor: Any = field(repr=False)
    metadata: Dict[str, Any] = field(default_factory=dict, repr=False)
    #: The factories the driver trusted for this model; executors load with exactly these.
    allowlist: Allowlist = field(default_factory=Allowlist, repr=False)

    @property
    def signature(self) -> Dict[str, Any]:
        return self.metadata.get("signature") or {}


def resolve_model(model_ref, registry: Optional[str] = None,
                  model_name: Optional[str] = None, trusted_factories=None) -> ResolvedModel:
    """Resolve ``model_ref`` (see module doc); ``model_name`` overrides the lineage name.

    ``trusted_factories`` (plus ``SPARKML_AIAAS_TRUSTED_FACTORIES`` here, on the driver)
    is resolved once into the :class:`~sparkml_aiaas.models.trust.Allowlist` that the model
    is loaded with, here and on every executor.
    """
    from sparkml_aiaas.scoring.model_cache import artifact_files, files_digest, \
        predictor_from_files

    if isinstance(model_ref, ResolvedModel):
        return model_ref
    allowlist = trusted(trusted_factories)
    if registry is not None:
        try:
            from sparkml_aiaas.registry import ModelRegistry
        except ImportError as exc:
            raise SparkmlAiaasError(
                f"a registry root was given ({registry!r}) but sparkml_aiaas.registry is not "
                f"available: {exc}") from None
        mv = ModelRegistry(registry).resolve(model_ref)
        path = mv.predictor_path  # with a preprocessor: the bundle, raw columns in
        name, version = mv.name, str(mv.version)
    else:
        path = str(model_ref)
        name = version = None
    from sparkml_aiaas.registry.core import CONTROL_FILES

    # The registry's own metadata and signature are not part of what is shipped and loaded.
    files = {rel: data for rel, data in artifact_files(path).items() if rel not in CONTROL_FILES}
    digest = files_digest(files)
    # Verifies checksums and the format version; refuses an untrusted factory, here on the
    # driver, before any executor sees the model.
    predictor = predictor_from_files(files, allowlist)
    metadata = getattr(predictor, "metadata", None) or {}
    if name is None:
        name = metadata.get("model_name") or os.path.basename(os.path.normpath(path))
        version = str(metadata.get("model_id") or digest[:16])
    if not metadata:
        raise ModelFormatError(f"model at {path!r} has no metadata")
    return ResolvedModel(name=model_name or name, version=version, path=path, digest=digest,
                         files=files, predictor=predictor, metadata=metadata,
                         allowlist=allowlist)
