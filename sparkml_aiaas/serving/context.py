"""What every protocol's handlers share: the models, the gate, the metrics, the limits."""

from __future__ import annotations

from dataclasses import dataclass

from sparkml_aiaas.serving.metrics import Metrics
from sparkml_aiaas.serving.models import ModelManager
from sparkml_aiaas.serving.security import Gate

__all__ = ["ServingContext"]


@dataclass
class ServingContext:
    manager: ModelManager
    gate: Gate
    metrics: Metrics
    max_body_bytes: int  # larger request bodies are refused (413 / RESOURCE_EXHAUSTED)
    max_records: int  # rows per request, likewise
