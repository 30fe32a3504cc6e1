"""Deterministic train/validation/test splits by hashing a key column.

``DataFrame.randomSplit`` depends on partitioning and row order, so the same
seed can put a row in a different split after a re-read or a repartition.
Hashing the key instead gives every key a fixed position in [0, 1): a row
lands in the same split on every run, on any cluster, and all rows sharing a
key (say, one patient's visits) land together.
"""

from __future__ import annotations

import math
from typing import Mapping

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from sparkml_aiaas.columns import quoted
from sparkml_aiaas.errors import ConfigError, DataValidationError

__all__ = ["split_by_key", "key_position"]

_FRACTION_TOLERANCE = 1e-9
# The low 53 bits of the hash, divided by 2**53, are exact in a double and
# uniform in [0, 1).
_MANTISSA_BITS = 53


def key_position(key: Column, seed: int = 0) -> Column:
    """Map a key to a stable pseudo-random double in [0, 1).

    The value depends only on the key's value and type (an INT 5 and a BIGINT
    5 hash differently) and on ``seed``.  Null keys all share one position.
    """
    hashed = F.xxhash64(key, F.lit(seed).cast("long"))
    low_bits = hashed.bitwiseAND(F.lit((1 << _MANTISSA_BITS) - 1))
    return low_bits.cast("double") / float(1 << _MANTISSA_BITS)


def split_by_key(
    df: DataFrame, key_col: str, fractions: Mapping[str, float], seed: int = 0
) -> dict[str, DataFrame]:
    """Split ``df`` into named parts by hashing ``key_col``.

    Parameters
    ----------
    df : DataFrame
    key_col : str
        Column whose value decides the part; rows with equal keys stay together.
    fractions : mapping of str to float
        Part name to expected share, e.g. ``{"train": 0.8, "test": 0.2}``.
        Positive, summing to 1 (within 1e-9).  Parts take consecutive ranges
        of [0, 1) in the mapping's order.
    seed : int
        Changes the assignment; the same seed always gives the same split.

    Returns
    -------
    dict of str to DataFrame
        One lazily filtered view of ``df`` per part, in the order given.  Each
        part re-reads ``df``; cache ``df`` first when it is expensive to compute.

    Raises
    ------
    ConfigError
        Bad fractions or seed.
    DataValidationError
        ``key_col`` is not a column of ``df``.
    """
    bounds = _cumulative_bounds(fractions)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"split seed must be an integer, not {seed!r}")
    if key_col not in df.columns:
        raise DataValidationError(
            f"split key column {key_col!r} not found; columns are {df.columns}"
        )
    position = key_position(F.col(quoted(key_col)), seed)
    return {
        name: df.where((position >= low) & (position < high))
        for name, (low, high) in bounds.items()
    }


def _cumulative_bounds(fractions: Mapping[str, float]) -> dict[str, tuple[float, float]]:
    if not isinstance(fractions, Mapping) or not fractions:
        raise ConfigError(
            f"split fractions must be a non-empty mapping of name to fraction, not {fractions!r}"
        )
    for name, fraction in fractions.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(f"split part names must be non-empty strings, not {name!r}")
        is_number = isinstance(fraction, (int, float)) and not isinstance(fraction, bool)
        if not is_number or not math.isfinite(fraction):
            raise ConfigError(f"split fraction for {name!r} must be a number, not {fraction!r}")
        if fraction <= 0:
            raise ConfigError(f"split fraction for {name!r} must be positive, not {fraction}")
    total = math.fsum(fractions.values())
    if abs(total - 1.0) > _FRACTION_TOLERANCE:
        raise ConfigError(f"split fractions must sum to 1, not {total:.12g} ({dict(fractions)})")
    bounds, low = {}, 0.0
    names = list(fractions)
    for name in names:
        # The last part ends exactly at 1 so that rounding leaves no row out.
        high = 1.0 if name == names[-1] else low + fractions[name]
        bounds[name] = (low, high)
        low = high
    return bounds

