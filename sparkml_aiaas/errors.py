"""Exceptions for expected user errors.

Everything a user can cause (bad input data, a bad config, a missing file)
raises a subclass of :class:`SparkmlAiaasError` with a message that names the
problem.  The CLI prints such errors as one line and exits non-zero; any other
exception is a bug and keeps its traceback.

Messages put the cause first (the missing or unknown names), then where, then
the full expectation in parentheses at the end: :func:`expected_names` writes
that expectation (shortened with a count when long), :func:`unknown_names_hint`
the "did you mean" of an unknown key.
"""

import difflib
import re
from typing import Iterable, Optional, Sequence

#: How many expected names a message shows before "… (+N more)".
SHOWN_NAMES = 10
#: difflib.get_close_matches cutoff for "did you mean".
CLOSE_MATCH_CUTOFF = 0.6


class SparkmlAiaasError(Exception):
    """Base class for errors caused by input, configuration or environment."""


class ConfigError(SparkmlAiaasError, ValueError):
    """A configuration file or argument is invalid."""


class DataValidationError(SparkmlAiaasError, ValueError):
    """Input data cannot be used as given (NaN, wrong labels, missing columns...)."""


class InputNotFoundError(SparkmlAiaasError, FileNotFoundError):
    """An input path does not exist."""


class ModelFormatError(SparkmlAiaasError, ValueError):
    """A saved model is missing files, is corrupt, or has an unknown format version."""


class MissingDependencyError(SparkmlAiaasError, ImportError):
    """An optional dependency this feature needs is not installed (the message names the extra)."""


#: The extra that installs each optional top-level module.
EXTRAS = {"pyspark": "spark", "py4j": "spark", "grpc": "connect", "torch": "torch",
          "xgboost": "xgboost", "skops": "sklearn", "fastapi": "serve", "uvicorn": "serve",
          "deltalake": "delta", "mlflow": "mlflow"}


def missing_dependency(exc: ImportError) -> ImportError:
    """``exc`` as a :class:`MissingDependencyError` naming the pip extra when it is an
    optional dependency of ours, else ``exc`` unchanged (raise the result ``from exc``)."""
    name = (getattr(exc, "name", None) or "").split(".")[0]
    extra = EXTRAS.get(name)
    if extra is None:
        return exc
    if extra == "spark":
        hint = ("pip install 'sparkml_aiaas[spark]' for a local Spark; on Databricks or with "
                "Databricks Connect / pyspark-client use the pyspark those provide")
    else:
        hint = f"pip install 'sparkml_aiaas[{extra}]'"
    return MissingDependencyError(f"{name} is not installed, and this needs it: {hint}")


def _name(name) -> str:
    text = str(name)
    return text if re.fullmatch(r"[\w.\-]+", text) else repr(text)


def name_list(names: Sequence, limit: int = SHOWN_NAMES) -> str:
    """``id, mean_radius, …, (+22 more)``: plain names bare, others quoted; past ``limit``
    names the rest is a count."""
    names = list(names)
    shown = ", ".join(_name(n) for n in names[:limit])
    if len(names) > limit:
        shown += f", … (+{len(names) - limit} more)"
    return shown


def expected_names(names: Sequence, what: str = "columns", limit: int = SHOWN_NAMES) -> str:
    """``expected 32 columns: id, mean_radius, …, (+22 more)``: the expectation that ends
    a message, in parentheses after the cause (:func:`name_list` shortens it)."""
    names = list(names)
    return f"expected {len(names)} {what}: {name_list(names, limit)}" if names \
        else f"expected no {what}"


def closest_name(name: str, known: Iterable[str]) -> Optional[str]:
    """The known name closest to ``name`` (difflib, cutoff :data:`CLOSE_MATCH_CUTOFF`), or None."""
    known = [str(k) for k in known]
    match = difflib.get_close_matches(str(name), known, n=1, cutoff=CLOSE_MATCH_CUTOFF)
    if not match:  # a case slip (maxIter for max_iter is not close; MAX_ITER is)
        folded = {k.lower(): k for k in known}
        match = [folded[m] for m in difflib.get_close_matches(
            str(name).lower(), list(folded), n=1, cutoff=CLOSE_MATCH_CUTOFF)]
    return match[0] if match else None


def unknown_names_hint(unknown: Sequence[str], known: Iterable[str]) -> str:
    """What follows the cause of an unknown-name error: ``; did you mean 'x'?`` when every
    unknown name has a close known one, else the close ones found and ``known: [...]``
    (sorted): ``; did you mean 'reg_param' for 'reg_parm'? known: [...]``.  Empty when ``unknown`` is."""
    known = sorted({str(k) for k in known})
    close = {u: closest_name(u, known) for u in unknown}
    found = [(u, k) for u, k in close.items() if k is not None]
    hint = ""
    if len(unknown) == 1 and found:
        hint = f"; did you mean {found[0][1]!r}?"
    elif found:
        hint = "; did you mean " + ", ".join(f"{k!r} for {u!r}" for u, k in found) + "?"
    if len(found) < len(unknown):
        hint += f" known: {known}" if hint else f"; known: {known}"
    return hint
