"""Run reports: metrics JSON beside PNG plots and one self-contained HTML file.

* :mod:`.plots` — matplotlib plots (object API, no pyplot: no display, backend untouched) from numpy arrays, no pyspark.
* :mod:`.html` — :func:`write_report`, one HTML file with the PNGs embedded.
* :mod:`.training` — the training job's report (bounded sample of scored rows).

See ``docs/reports.md``.
"""

from sparkml_aiaas.reports.html import write_report

__all__ = ["write_report"]
