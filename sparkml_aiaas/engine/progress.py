"""A driver-side progress bar for training, shown only on an interactive terminal.

Scheduled jobs and CI logs get the per-iteration log lines instead (the
``sparkml_aiaas.train`` logger); a bar would only fill them with carriage
returns.  ``SPARKML_AIAAS_PROGRESS=0`` turns it off, ``=1`` forces it on.
"""

from __future__ import annotations

import os
import sys


def progress_bar(description: str, total: int):
    """A tqdm bar over ``total`` iterations, or None when not on a terminal (or no tqdm)."""
    setting = os.environ.get("SPARKML_AIAAS_PROGRESS", "")
    if setting == "0":
        return None
    if setting != "1" and not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty()):
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency, but degrade quietly
        return None
    return tqdm(total=total, desc=description, unit="iter", leave=False, file=sys.stderr)
