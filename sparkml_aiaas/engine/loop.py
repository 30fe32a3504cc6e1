"""One training pass: broadcast → mapPartitions on resident blocks → ordered tree reduce.

On Spark Connect the same partition functions run through
:mod:`sparkml_aiaas.engine.connect_pass` (parameters inside the plan, partial sums as
rows merged on the client in the same tree order).
"""

from __future__ import annotations

from typing import List, Optional, Tuple, Union

import numpy as np

from sparkml_aiaas.core.losses import Loss, get_loss
from sparkml_aiaas.core.merge import LossGradient, merge
from sparkml_aiaas.core.stochastic import merge_rounds
from sparkml_aiaas.engine.blocks import ResidentBlocks
from sparkml_aiaas.engine.tree_reduce import merge_tree_ordered, tree_reduce_ordered

# What a partition function yields: (index, (partial or None, partitions whose files were
# missing)); the partial is a LossGradient for a pass, round sums for a local-SGD round.
def _combining(merge_fn):
    """Combine two ``(partial or None, missing partitions)`` results with ``merge_fn``."""

    def combine(a, b):
        part_a, missing_a = a
        part_b, missing_b = b
        if part_a is None:
            part = part_b
        elif part_b is None:
            part = part_a
        else:
            part = merge_fn(part_a, part_b)
        return part, missing_a + missing_b

    return combine


def fold_blocks(key_rows, compute, merge_fn):
    """Task side of every job: ``compute(key, block)`` on each resident block of the task,
    merged with ``merge_fn``; returns ``(partial or None, partitions whose files were missing)``.
    """
    from sparkml_aiaas.engine.block_files import open_block

    partial = None
    missing: List[int] = []
    for key in key_rows:
        block = open_block(key["path"])
        if block is None:
            missing.append(key["partition"])
            continue
        part = compute(key, block)
        partial = part if partial is None else merge_fn(partial, part)
    return partial, missing


def run_on_blocks(blocks: ResidentBlocks, partition_fn, merge_fn, aggregation_depth: int):
    """One job of ``partition_fn`` over the resident blocks, merged in partition order.

    Partitions whose task ran away from its files are recomputed from the source
    (:meth:`ResidentBlocks.rebuild_and_run`) and merged in after the others.
    Returns the merged partial, or None when no partition had rows.
    """
    combine = _combining(merge_fn)
    if blocks.connect:
        from sparkml_aiaas.engine.connect_pass import run_partitions

        pairs = run_partitions(blocks.keys, partition_fn)
        total, missing = merge_tree_ordered(pairs, combine, aggregation_depth,
                                            blocks.num_partitions)
    else:
        passed = blocks.keys.mapPartitionsWithIndex(partition_fn)
        total, missing = tree_reduce_ordered(passed, combine, aggregation_depth)
    if missing:
        rebuilt = dict(blocks.rebuild_and_run(sorted(set(missing)), partition_fn))
        for _, result in sorted(rebuilt.items()):
            total, _ = combine((total, []), result)
    return total


def run_with_payload(blocks: ResidentBlocks, description: str, payload, make_fn, merge_fn,
                     aggregation_depth: int, what: str = "the pass's parameters"):
    """Ship ``payload`` to the tasks (:meth:`ResidentBlocks.ship`) and :func:`run_on_blocks`
    the partition function ``make_fn(handle)``; every pass of the engine goes through here."""
    with blocks.describe(description):
        handle = blocks.ship(payload, what)
        try:
            return run_on_blocks(blocks, make_fn(handle), merge_fn, aggregation_depth)
        finally:
            handle.destroy()


def make_partition_fn(params_broadcast, loss: Loss, sample=None):
    """The function each task runs: loss/gradient (and Hessian) sums over its block.

    Only the broadcast handle and plain picklable values (the :class:`Loss`
    refers to module-level functions) are captured, never an estimator or the
    driver-side blocks object.
    """

    def run(index, key_rows):
        from sparkml_aiaas.core.losses import loss_gradient_sums

        coef, intercept, extra, with_hessian = params_broadcast.value

        def compute(key, block):
            if sample is not None:
                # A mini-batch: a Bernoulli sample drawn from (seed, iteration, partition),
                # so retries and resumed runs see the same rows.
                from sparkml_aiaas.core.matrices import take_rows
                from sparkml_aiaas.core.stochastic import block_rng, sample_rows

                fraction, seed, iteration = sample
                rows = sample_rows(block[0].shape[0], fraction,
                                   block_rng(seed, iteration, key["partition"]))
                if rows is not None:
                    X, y, w = block
                    block = (take_rows(X, rows), np.asarray(y)[rows], np.asarray(w)[rows])
            return loss_gradient_sums(loss, *block, coef, intercept, extra,
                                      with_hessian=with_hessian)

        yield index, fold_blocks(key_rows, compute, merge)

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
        self.passes += 1
        coef = np.asarray(coef, float)
        intercept = np.asarray(intercept, float)
        extra = None if extra is None else np.asarray(extra, float)
        sums = run_with_payload(
            self.blocks, f"{self.description}: pass {self.passes}",
            (coef, intercept, extra, bool(with_hessian)),
            lambda params: make_partition_fn(params, self.loss, sample), merge,
            self.aggregation_depth)
        if sums is None:
            d, k = coef.shape
            return LossGradient.zero(self.loss.n_params(d, k), with_hessian=with_hessian)
        return sums


def make_round_fn(round_broadcast):
    """The function each task runs for local SGD: several update steps on its block."""

    def run(index, key_rows):
        from sparkml_aiaas.core.stochastic import local_round, round_sums

        spec, x, state = round_broadcast.value

        def compute(key, block):
            return round_sums(*local_round(spec, *block, x, state, key["partition"]))

        yield index, fold_blocks(key_rows, compute, merge_rounds)

    return run


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

        self.passes += 1
        total = run_with_payload(self.blocks, f"{self.description}: local round {self.passes}",
                                 (spec, np.asarray(x, float), state), make_round_fn,
                                 merge_rounds, self.aggregation_depth)
        if total is None:
            raise ValueError("no rows were sampled in this round: raise miniBatchFraction")
        return average_rounds(total)
