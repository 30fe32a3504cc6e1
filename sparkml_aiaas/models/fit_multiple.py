"""``fitMultiple`` of the linear estimators: one block build, one Spark job per round.

pyspark.ml's ``CrossValidator`` and ``TrainValidationSplit`` call
``estimator.fitMultiple(train, paramMaps)`` per fold.  The default fits each map
separately: K block builds, and a Spark job per pass of each model.  Here the maps share
the resident blocks (built with the copy for the first map) and the passes: every fit runs
:func:`~sparkml_aiaas.core.glm.fit_glm` in its own thread, and a
:class:`~sparkml_aiaas.engine.batched_pass.PassBatcher` evaluates all pending steps in one
job.  Each model takes the same steps on the same sums as its separate fit, so it is
bit-identical to ``estimator.fit(dataset, paramMap)``.

Maps that need what the shared pass does not do (early stopping's held-out blocks,
checkpoints, mini-batch sampling) or that would build different blocks fall back to
pyspark's per-map fits.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import ExitStack
from typing import Any, List, Optional, Sequence

from pyspark.ml.base import _FitMultipleIterator

from sparkml_aiaas.core.stochastic import STOCHASTIC_OPTIMIZERS
from sparkml_aiaas.engine.batched_pass import (BatchedBlocksPass, BatchedModelPass, Outcome,
                                               PassBatcher)
from sparkml_aiaas.models.linear import TrainingSummary
from sparkml_aiaas.models.persistence import input_signature

logger = logging.getLogger("sparkml_aiaas.train")


def shared_blocks_key(estimator) -> tuple:
    """What must be equal between maps for one set of blocks and one reduce to serve all:
    the columns, the partitioning, the storage, and the tree of the reduce."""
    spec, label_col, weight_col = estimator._training_columns()
    return (spec, label_col, weight_col, estimator.getNumPartitions(),
            tuple(sorted(estimator._block_options().items())), estimator.getAggregationDepth())


def unbatchable_reason(estimator) -> Optional[str]:
    """Why this (valid) map needs its own fit, or None when it can share passes."""
    if estimator.validation_col() is not None:
        return "validationIndicatorCol (early stopping builds its own held-out blocks)"
    if estimator.getCheckpointDir():
        return "checkpointDir (checkpoints are per fit)"
    if estimator.getOptimizer() in STOCHASTIC_OPTIMIZERS:
        return f"optimizer {estimator.getOptimizer()!r} (mini-batches sample per fit)"
    return None


def batched_fit_multiple(estimator, dataset, param_maps: Sequence[dict]):
    """A thread-safe iterator of ``(index, model)`` fitting every map over shared blocks and
    passes, or None when the maps cannot share them (the caller falls back)."""
    if len(param_maps) < 2:
        return None  # nothing to share
    try:
        estimators = [estimator.copy(param_map) for param_map in param_maps]
    except Exception:  # a bad map: pyspark's fallback raises it for that index, lazily
        return None
    invalid = {}
    for index, candidate in enumerate(estimators):
        try:
            candidate.validate_params()
        except Exception as exc:  # that map's error, raised for its index; the rest go on
            invalid[index] = exc
    valid = [i for i in range(len(estimators)) if i not in invalid]
    if not valid:
        return None
    keys = [shared_blocks_key(estimators[i]) for i in valid]
    reasons = [r for r in (unbatchable_reason(estimators[i]) for i in valid) if r]
    if any(key != keys[0] for key in keys) or reasons:
        logger.info("%s.fitMultiple: %d maps fitted one by one (%s)", type(estimator).__name__,
                    len(param_maps), reasons[0] if reasons else "the maps build different blocks")
        return None
    return _lazy_iterator(lambda: fit_shared(estimators, dataset, invalid), len(estimators))


def _lazy_iterator(fit_all, n_models: int) -> _FitMultipleIterator:
    """pyspark's iterator; the first ``next`` runs every fit (the others wait for it), as a
    shared pass cannot deliver models one by one."""
    lock = threading.Lock()
    outcomes: List[Outcome] = []

    def fit_single_model(index: int):
        with lock:
            if not outcomes:
                try:
                    outcomes.extend(fit_all())
                except Exception as exc:  # shared failure (e.g. the block build): every index
                    outcomes.extend(Outcome(error=exc) for _ in range(n_models))
        return outcomes[index].result()

    return _FitMultipleIterator(fit_single_model, n_models)


def fit_shared(estimators: list, dataset, invalid: dict) -> List[Outcome]:
    """Fit every estimator (one per map) over one set of blocks; an :class:`Outcome` each.

    ``invalid`` maps indices to the error of their params: those maps fail with it.
    """
    started = time.perf_counter()
    outcomes: List[Optional[Outcome]] = [
        Outcome(error=invalid[i]) if i in invalid else None for i in range(len(estimators))]
    first = estimators[min(i for i in range(len(estimators)) if i not in invalid)]
    kind = type(first).__name__
    spec, _, _ = first._training_columns()
    signature = input_signature(dataset, spec)
    with ExitStack() as stack:  # the blocks are removed however the fits end
        blocks = stack.enter_context(first._build_blocks(dataset))
        build_seconds = time.perf_counter() - started
        losses = {}
        for index, candidate in enumerate(estimators):
            if outcomes[index] is None:
                try:  # the loss (so k, and the label checks) may differ by map, e.g. family
                    losses[index] = candidate._training_loss(blocks)
                except Exception as exc:
                    outcomes[index] = Outcome(error=exc)
        order = sorted(losses)
        evaluator = BatchedBlocksPass(blocks, first.getAggregationDepth(),
                                      description=f"sparkml_aiaas {kind} fitMultiple")
        batcher = PassBatcher(evaluator)
        fits = batcher.run([fit_task(estimators[i], f"{kind}[map {i}]", blocks.stats, *losses[i])
                            for i in order], name=f"sparkml_aiaas-{kind}-fitMultiple")
        rebuilt = blocks.rebuilt_partitions
    logger.info("%s.fitMultiple: %d models in %d shared passes (separately: %d)", kind,
                len(order), batcher.jobs, sum(f.passes for f in fits))
    for index, fit in zip(order, fits):
        outcomes[index] = fit if fit.error is not None else Outcome(
            value=_model(estimators[index], fit, signature, blocks, build_seconds,
                         fit.finished_at - started, rebuilt),
            passes=fit.passes, finished_at=fit.finished_at)
    return outcomes


def fit_task(estimator, name: str, stats, loss, n_outputs: int, grouped: bool = False,
             held_out: Optional[int] = None):
    """What model ``name``'s thread runs: its fit_glm over the batcher's passes, on the rows
    ``stats`` summarizes (over grouped blocks: every group but ``held_out``).  It never
    calls Spark itself (only the coordinating thread does)."""

    def fit(request):
        data_pass = BatchedModelPass(request, loss, grouped=grouped, held_out=held_out)
        return estimator._run_glm(data_pass, stats, loss, n_outputs,
                                  estimator._iteration_logger(name))

    return fit


def _model(estimator, fit: Outcome, signature: Any, blocks, build_seconds: float,
           wall_seconds: float, rebuilt: int):
    summary = TrainingSummary.of_fit(fit.value, passes=fit.passes, blocks=blocks,
                                     build_seconds=build_seconds, wall_seconds=wall_seconds,
                                     rebuilt_partitions=rebuilt)
    return estimator._make_model(fit.value, signature, summary)
