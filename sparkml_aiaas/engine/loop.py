"""One training pass: broadcast → mapPartitions on resident blocks → ordered tree reduce."""

from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np

from sparkml_aiaas.core.merge import LossGradient, merge
from sparkml_aiaas.engine.blocks import ResidentBlocks
from sparkml_aiaas.engine.tree_reduce import tree_reduce_ordered

# What a partition yields: (index, (partial sums or None, partitions whose files were missing)).
PartitionResult = Tuple[Optional[LossGradient], List[int]]


def _combine(a: PartitionResult, b: PartitionResult) -> PartitionResult:
    sums_a, missing_a = a
    sums_b, missing_b = b
    if sums_a is None:
        sums = sums_b
    elif sums_b is None:
        sums = sums_a
    else:
        sums = merge(sums_a, sums_b)
    return sums, missing_a + missing_b


def make_partition_fn(params_broadcast, loss_name: str):
    """The function each task runs: loss/gradient sums over its block.

    Only the broadcast handle and plain values are captured, never an
    estimator or the driver-side blocks object.
    """

    def run(index, key_rows):
        from sparkml_aiaas.core.losses import get_loss, loss_gradient_sums
        from sparkml_aiaas.engine.block_files import open_block

        coef, intercept = params_broadcast.value
        loss = get_loss(loss_name)
        sums = None
        missing: List[int] = []
        for key in key_rows:
            block = open_block(key["path"])
            if block is None:
                missing.append(key["partition"])
                continue
            part = loss_gradient_sums(loss, *block, coef, intercept)
            sums = part if sums is None else merge(sums, part)
        yield index, (sums, missing)

    return run


class DistributedDataPass:
    """``data_pass(coef, intercept) -> LossGradient`` over resident blocks, one Spark job a pass."""

    def __init__(self, blocks: ResidentBlocks, loss_name: str, aggregation_depth: int = 2,
                 description: str = "sparkml_aiaas"):
        self.blocks = blocks
        self.loss_name = loss_name
        self.aggregation_depth = aggregation_depth
        self.description = description
        self.passes = 0

    def __call__(self, coef: np.ndarray, intercept: np.ndarray) -> LossGradient:
        sc = self.blocks.spark.sparkContext
        self.passes += 1
        sc.setJobDescription(f"{self.description}: pass {self.passes}")
        params = sc.broadcast((np.asarray(coef, float), np.asarray(intercept, float)))
        try:
            partition_fn = make_partition_fn(params, self.loss_name)
            passed = self.blocks.keys.mapPartitionsWithIndex(partition_fn)
            sums, missing = tree_reduce_ordered(passed, _combine, self.aggregation_depth)
            if missing:
                # Tasks that ran where their files are not: recompute those blocks from the
                # source and merge their sums back in partition order.
                rebuilt = dict(self.blocks.rebuild_and_run(sorted(set(missing)), partition_fn))
                total = None
                for index, (part_sums, _) in sorted(rebuilt.items()):
                    total = part_sums if total is None else merge(total, part_sums)
                sums = total if sums is None else (merge(sums, total) if total is not None else sums)
        finally:
            params.destroy()
            sc.setJobDescription(None)
        if sums is None:
            return LossGradient.zero(coef.size + intercept.size)
        return sums
