"""Block boundaries by global row index, placed by a hash Spark computes the same everywhere.

The training blocks must not depend on how the input happens to be partitioned, nor on
the session (classic or Spark Connect) or the application's history: the same rows in
the same order must give the same blocks, so that every fit of them is bit-identical.
Block ``b`` of ``n`` therefore holds the rows whose global index ``i`` (position in the
input's order) satisfies ``floor(T·b/n) <= i < floor(T·(b+1)/n)`` for ``T`` rows — the
split the direct Parquet path uses too.

Spark's DataFrame API cannot send a row to a chosen partition, but ``repartition(n, key)``
sends it to ``pmod(murmur3_32(key, seed 42), n)``.  :func:`partition_keys` finds, for
each block, a small int whose hash lands in that block's partition, so the shuffle puts
block ``b`` in partition ``b``.  Pure Python (no pyspark): tested against Spark's own
``hash`` in ``tests/test_partitioning.py``.
"""

from __future__ import annotations

from typing import List, Sequence

_MASK = 0xFFFFFFFF
_C1 = 0xCC9E2D51
_C2 = 0x1B873593
#: Spark's seed for ``hash()`` and hash partitioning (``Murmur3Hash(children, 42)``).
SPARK_HASH_SEED = 42


def _rotl(value: int, bits: int) -> int:
    return ((value << bits) | (value >> (32 - bits))) & _MASK


def _mix_k1(k1: int) -> int:
    k1 = (k1 * _C1) & _MASK
    k1 = _rotl(k1, 15)
    return (k1 * _C2) & _MASK


def _mix_h1(h1: int, k1: int) -> int:
    h1 ^= k1
    h1 = _rotl(h1, 13)
    return (h1 * 5 + 0xE6546B64) & _MASK


def _fmix(h1: int, length: int) -> int:
    h1 ^= length
    h1 ^= h1 >> 16
    h1 = (h1 * 0x85EBCA6B) & _MASK
    h1 ^= h1 >> 13
    h1 = (h1 * 0xC2B2AE35) & _MASK
    h1 ^= h1 >> 16
    return h1


def spark_hash_int(value: int, seed: int = SPARK_HASH_SEED) -> int:
    """Spark's ``Murmur3_x86_32.hashInt`` of a 32-bit int, as a signed int (``hash(CAST(v AS
    INT))`` in Spark SQL)."""
    h1 = _fmix(_mix_h1(seed & _MASK, _mix_k1(value & _MASK)), 4)
    return h1 - (1 << 32) if h1 & 0x80000000 else h1


def partition_keys(n: int) -> List[int]:
    """For each partition ``b < n`` the smallest int ``k >= 0`` with
    ``pmod(hash(k), n) == b``: ``repartition(n, key)`` then sends key ``k`` to ``b``."""
    keys: List[int] = [-1] * n
    missing = n
    candidate = 0
    while missing:
        target = spark_hash_int(candidate) % n  # Python's % is pmod for a positive n
        if keys[target] < 0:
            keys[target] = candidate
            missing -= 1
        candidate += 1
    return keys


def block_bounds(total: int, n: int) -> List[int]:
    """First global row index of each of ``n`` blocks, then ``total``."""
    return [total * b // n for b in range(n + 1)]


def aligned(counts: Sequence[int], n: int) -> bool:
    """Whether partitions holding ``counts`` rows already are the ``n`` blocks."""
    if len(counts) != n:
        return False
    bounds = block_bounds(sum(counts), n)
    start = 0
    for b, count in enumerate(counts):
        if start != bounds[b]:
            return False
        start += count
    return start == bounds[n]


def block_of_sql(position: str, total: int, n: int) -> str:
    """Spark SQL for the block of global index ``position``: the largest ``b`` with
    ``floor(T·b/n) <= i``, i.e. ``((i + 1)·n − 1) DIV T``."""
    # Clamped: an input whose partitioning changed since its rows were counted (a
    # nondeterministic upstream) must still land somewhere; ResidentBlocks.build warns.
    block = f"CAST((({position} + 1) * {int(n)} - 1) DIV {int(total)} AS INT)"
    return f"LEAST(GREATEST({block}, 0), {int(n) - 1})"
