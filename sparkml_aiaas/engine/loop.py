"""One training pass: broadcast → mapPartitions on resident blocks → ordered tree reduce."""

from __future__ import annotations

from typing import List, Optional, Tuple, Union

import numpy as np

from sparkml_aiaas.core.losses import Loss, get_loss
from sparkml_aiaas.core.merge import LossGradient, merge
from sparkml_aiaas.core.stochastic import merge_rounds
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


def make_partition_fn(params_broadcast, loss: Loss, sample=None):
    """The function each task runs: loss/gradient (and Hessian) sums over its block.

    Only the broadcast handle and plain picklable values (the :class:`Loss`
    refers to module-level functions) are captured, never an estimator or the
    driver-side blocks object.
    """

    def run(index, key_rows):
        from sparkml_aiaas.core.losses import loss_gradient_sums
        from sparkml_aiaas.engine.block_files import open_block

        coef, intercept, extra, with_hessian = params_broadcast.value
        sums = None
        missing: List[int] = []
        for key in key_rows:
            block = open_block(key["path"])
            if block is None:
                missing.append(key["partition"])
                continue
            if sample is not None:
                # A mini-batch: a Bernoulli sample drawn from (seed, iteration, partition),
                # so retries and resumed runs see the same rows.
                from sparkml_aiaas.core.stochastic import block_rng, sample_rows

                fraction, seed, iteration = sample
                rows = sample_rows(block[0].shape[0], fraction,
                                   block_rng(seed, iteration, key["partition"]))
                if rows is not None:
                    block = tuple(np.asarray(a)[rows] for a in block)
            part = loss_gradient_sums(loss, *block, coef, intercept, extra,
                                      with_hessian=with_hessian)
            sums = part if sums is None else merge(sums, part)
        yield index, (sums, missing)

    return run


class DistributedDataPass:
    """``data_pass(coef, intercept, extra, with_hessian) -> LossGradient`` over resident blocks,
    one Spark job a pass."""

    def __init__(self, blocks: ResidentBlocks, loss: Union[Loss, str], aggregation_depth: int = 2,
                 description: str = "sparkml_aiaas"):
        self.blocks = blocks
        self.loss = get_loss(loss) if isinstance(loss, str) else loss
        self.aggregation_depth = aggregation_depth
        self.description = description
        self.passes = 0

    def __call__(self, coef: np.ndarray, intercept: np.ndarray,
                 extra: Optional[np.ndarray] = None, with_hessian: bool = False,
                 sample: Optional[Tuple[float, int, int]] = None) -> LossGradient:
        """One pass; ``sample=(fraction, seed, iteration)`` restricts it to a mini-batch."""
        sc = self.blocks.spark.sparkContext
        self.passes += 1
        sc.setJobDescription(f"{self.description}: pass {self.passes}")
        coef = np.asarray(coef, float)
        intercept = np.asarray(intercept, float)
        extra = None if extra is None else np.asarray(extra, float)
        params = sc.broadcast((coef, intercept, extra, bool(with_hessian)))
        try:
            partition_fn = make_partition_fn(params, self.loss, sample)
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
            d, k = coef.shape
            return LossGradient.zero(self.loss.n_params(d, k), with_hessian=with_hessian)
        return sums


def make_round_fn(round_broadcast):
    """The function each task runs for local SGD: several update steps on its block."""

    def run(index, key_rows):
        from sparkml_aiaas.core.stochastic import local_round, round_sums
        from sparkml_aiaas.engine.block_files import open_block

        spec, x, state = round_broadcast.value
        result = None
        missing: List[int] = []
        for key in key_rows:
            block = open_block(key["path"])
            if block is None:
                missing.append(key["partition"])
                continue
            x_local, state_local, used, loss_sum = local_round(spec, *block, x, state,
                                                               key["partition"])
            part = round_sums(x_local, state_local, used, loss_sum)
            result = part if result is None else merge_rounds(result, part)
        yield index, (result, missing)

    return run


def _combine_rounds(a, b):
    rounds_a, missing_a = a
    rounds_b, missing_b = b
    if rounds_a is None:
        merged = rounds_b
    elif rounds_b is None:
        merged = rounds_a
    else:
        merged = merge_rounds(rounds_a, rounds_b)
    return merged, missing_a + missing_b


class DistributedLocalRounds:
    """Local SGD over resident blocks: ``(spec, x, state) -> (x, state, mean loss)``, one job."""

    def __init__(self, blocks: ResidentBlocks, aggregation_depth: int = 2,
                 description: str = "sparkml_aiaas"):
        self.blocks = blocks
        self.aggregation_depth = aggregation_depth
        self.description = description
        self.passes = 0

    def __call__(self, spec, x, state):
        from sparkml_aiaas.core.stochastic import average_rounds

        sc = self.blocks.spark.sparkContext
        self.passes += 1
        sc.setJobDescription(f"{self.description}: local round {self.passes}")
        payload = sc.broadcast((spec, np.asarray(x, float), state))
        try:
            round_fn = make_round_fn(payload)
            passed = self.blocks.keys.mapPartitionsWithIndex(round_fn)
            total, missing = tree_reduce_ordered(passed, _combine_rounds, self.aggregation_depth)
            if missing:
                rebuilt = dict(self.blocks.rebuild_and_run(sorted(set(missing)), round_fn))
                for _, (part, _) in sorted(rebuilt.items()):
                    if part is not None:
                        total = part if total is None else merge_rounds(total, part)
        finally:
            payload.destroy()
            sc.setJobDescription(None)
        if total is None:
            raise ValueError("no rows were sampled in this round: raise miniBatchFraction")
        return average_rounds(total)
