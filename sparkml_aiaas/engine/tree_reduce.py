"""A tree reduce whose result does not depend on task timing.

``RDD.treeReduce`` adds a shuffle level once there are more than a handful of
partitions, and a shuffle merges values in arrival order: floating-point sums
then differ in their last bits from run to run.  Here every value carries its
partition index, each tree level groups contiguous indices and merges them in
index order, and the driver merges the last level in index order, so the same
data and parameters give bit-identical results.
"""

from __future__ import annotations

import math
from functools import reduce
from typing import Callable, List, Tuple, TypeVar

T = TypeVar("T")


def _merge_sorted(combine: Callable[[T, T], T], items: List[Tuple[int, T]]) -> T:
    items = sorted(items, key=lambda kv: kv[0])
    return reduce(combine, (value for _, value in items))


def _scale(n: int, depth: int) -> int:
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    return max(int(math.ceil(n ** (1.0 / depth))), 2)


def _needs_level(n: int, scale: int) -> bool:
    return n > scale + int(math.ceil(n / scale))


def tree_reduce_ordered(rdd, combine: Callable[[T, T], T], depth: int = 2) -> T:
    """Combine the ``(partition_index, value)`` pairs of ``rdd`` in index order.

    Parameters
    ----------
    rdd : pyspark.RDD
        Exactly one ``(index, value)`` pair per partition (what a
        ``mapPartitionsWithIndex`` pass yields).
    combine : callable
        Associative merge of two values.
    depth : int
        Suggested tree depth, as ``aggregationDepth`` in pyspark.ml: levels are
        added while partitions outnumber ``scale + ceil(n / scale)`` with
        ``scale = ceil(n ** (1 / depth))``, the rule of ``RDD.treeReduce``.
    """
    n = rdd.getNumPartitions()
    scale = _scale(n, depth)
    level = rdd
    while _needs_level(n, scale):
        n = int(math.ceil(n / scale))
        group_size = scale

        def to_group(kv, group_size=group_size):
            return (kv[0] // group_size, kv)

        def merge_group(pairs):
            groups: dict = {}
            for group, kv in pairs:
                groups.setdefault(group, []).append(kv)
            for group in sorted(groups):
                yield group, _merge_sorted(combine, groups[group])

        level = level.map(to_group).partitionBy(n, lambda group: group).mapPartitions(merge_group)
    return _merge_sorted(combine, level.collect())


def merge_tree_ordered(pairs: List[Tuple[int, T]], combine: Callable[[T, T], T], depth: int,
                       n: int) -> T:
    """:func:`tree_reduce_ordered` on values already collected: the same levels, groups and
    order for ``n`` partitions, so the same ``(index, value)`` pairs merge to the same bits.
    Spark Connect passes (no RDDs) merge their per-partition rows with it on the client."""
    scale = _scale(n, depth)
    level = list(pairs)
    while _needs_level(n, scale):
        n = int(math.ceil(n / scale))
        groups: dict = {}
        for index, value in level:
            groups.setdefault(index // scale, []).append((index, value))
        level = [(group, _merge_sorted(combine, groups[group])) for group in sorted(groups)]
    return _merge_sorted(combine, level)
