"""The run report of a compression (``sparkml-aiaas compress --report-dir DIR``)."""

from __future__ import annotations

import os
from typing import Any, Optional


def write_compression_report(report, directory: str, config: Optional[Any] = None) -> str:
    """``compression.png`` (weight bytes and eval metric before/after) and ``report.html``
    for a :class:`~sparkml_aiaas.compress.api.CompressionReport`; returns the HTML path."""
    from sparkml_aiaas.reports import plots
    from sparkml_aiaas.reports.html import write_report

    png = plots.compression_plot(report, os.path.join(os.path.abspath(directory),
                                                      "compression.png"))
    data = report.to_dict()
    metrics = {k: v for k, v in data.items()
               if v is not None and not isinstance(v, (list, dict))}
    losses = data.get("fine_tune_losses") or []
    sections = [("Fine-tuning losses", {f"epoch {i + 1}": v for i, v in enumerate(losses)})] \
        if losses else []
    return write_report(directory, f"Compression report: {report.method}", metrics,
                        [("Size and accuracy before/after", png)], sections=sections,
                        config=config, model_path=report.output)
