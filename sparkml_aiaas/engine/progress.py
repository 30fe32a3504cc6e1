"""A driver-side progress bar for training, shown only on an interactive terminal.

Scheduled jobs and CI logs get the per-iteration log lines instead (the
``sparkml_aiaas.train`` logger); a bar would only fill them with carriage
returns.  No bar when stderr is not a terminal, when ``CI`` is set, when
``TERM=dumb``, or when the ``sparkml_aiaas`` logger was set above INFO (the
CLI's ``--quiet``).  ``SPARKML_AIAAS_PROGRESS=0`` turns it off, ``=1`` forces it
on (both win over the rest).

On a terminal the bar carries what the iteration lines say (iteration and
objective): iteration records logged while a bar shows them have
``record.shown_on_progress_bar`` set, and the CLI's console handler leaves them
out when it writes to a terminal (other handlers, a log file, get them all).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _quieted() -> bool:
    """The package's logging was explicitly set above INFO (``--quiet``): no bar either.
    Left unset (a library user who configured nothing), it does not decide."""
    package = logging.getLogger("sparkml_aiaas")
    return package.level != logging.NOTSET and package.level > logging.INFO


def bar_wanted(stream=None) -> bool:
    """Whether a bar would be drawn on ``stream`` (default stderr) now."""
    setting = os.environ.get("SPARKML_AIAAS_PROGRESS", "")
    if setting in ("0", "1"):
        return setting == "1"
    if _quieted() or _ci() or os.environ.get("TERM", "") == "dumb":
        return False
    return _isatty(sys.stderr if stream is None else stream)


def _terminal_shape(stream):
    """``(ncols, nrows)`` for tqdm, or ``(None, None)`` to let tqdm measure.

    A pseudo-terminal nobody sized (``script`` without a parent terminal, ``docker
    exec -t``, many CI runners) reports 0 x 0; tqdm then takes -1 rows and draws
    nothing.  Fall back to ``$COLUMNS``/``$LINES`` or 80 x 24 there.
    """
    try:
        size = os.get_terminal_size(stream.fileno())
    except (AttributeError, ValueError, OSError):
        size = None
    if size is not None and size.columns > 0 and size.lines > 0:
        return None, None
    fallback = shutil.get_terminal_size((80, 24))
    return max(fallback.columns - 1, 20), max(fallback.lines, 2)


def progress_bar(description: str, total: int):
    """A tqdm bar over ``total`` iterations, or None when not on a terminal (or no tqdm)."""
    if not bar_wanted():
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency, but degrade quietly
        return None
    ncols, nrows = _terminal_shape(sys.stderr)
    # No rate or time left: a fit that converges stops long before ``total`` (max_iter).
    return tqdm(total=total, desc=description, unit="iter", leave=False, file=sys.stderr,
                ncols=ncols, nrows=nrows,
                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} iter [{elapsed}{postfix}]")
