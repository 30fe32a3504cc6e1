"""Model selection over one set of blocks: every fold × every param map, in shared passes.

pyspark.ml's ``CrossValidator`` filters the data into k training and k validation
DataFrames, caches them, fits each param map on each training set (k × m fits, each
building its blocks and running its passes) and evaluates each model with a Spark job of
its own.  Here:

1. **One block build.**  Each row's fold is a column of the build (the same ``rand(seed)``
   intervals as pyspark's, or the user's ``foldCol``), and each partition writes one block
   per fold (:func:`~sparkml_aiaas.engine.block_rows.write_grouped_blocks`): a fold's
   training rows are whole blocks, never a mask.
2. **Shared passes.**  The k × m fits (and, when the data are small, the m refits on all
   rows) run their optimizers in threads; one Spark job per round computes every pending
   request, each over the blocks of every fold but its held-out one
   (:class:`~sparkml_aiaas.engine.batched_pass.BatchedBlocksPass` ``grouped``).  The
   statistics that standardize and validate a fold's fit are merged from the folds'.
3. **One evaluation job.**  Each model predicts on its held-out blocks with the Spark-free
   predictor (the numbers ``transform`` gives) and each task returns the evaluator's
   partial sums (:mod:`~sparkml_aiaas.core.eval_metrics`), merged on the driver.
4. **The best map refitted on all rows** from the same blocks (or taken from the
   concurrent refits).

:func:`fast_path_refusal` says when this cannot apply (another estimator or evaluator,
maps that build different blocks, early stopping, ...); the validators then run
pyspark's own loop, which still shares blocks per fold through ``fitMultiple``.
"""

from __future__ import annotations

import logging
import time
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial, reduce
from typing import Any, List, Optional, Sequence

import numpy as np

from sparkml_aiaas.core.eval_metrics import (MetricSpec, merge_partials, metric_value,
                                             partial_sums, spec_of_evaluator)
from sparkml_aiaas.core.merge import merge_present
from sparkml_aiaas.core.stats import BlockStats, merge_stats
from sparkml_aiaas.errors import ConfigError, DataValidationError

logger = logging.getLogger("sparkml_aiaas.tuning")

#: The column of the build that holds each row's fold.
FOLD_COLUMN = "__sparkml_aiaas_fold"
#: Refit every map on all rows alongside the folds (instead of the best one after them)
#: while rows × features × maps stays below this: a pass then costs little more, and the
#: refit's rounds (one Spark job each) vanish.
CONCURRENT_REFIT_CELLS = 50_000_000
#: Rows a task predicts at once for the held-out metrics.
PREDICT_CHUNK_ROWS = 65536


#: The column holding ``rand(seed)`` while the folds are computed from it.
RAND_COLUMN = "__sparkml_aiaas_rand"


@dataclass
class Splits:
    """How rows are split: ``fold`` (a Column of ints ``0 … groups − 1``, over the dataset
    plus, with ``seed`` set, a :data:`RAND_COLUMN` of ``rand(seed)``) and, per split, the
    group whose rows are held out (the others train)."""

    fold: Any
    groups: int
    held_out: List[int]
    seed: Optional[int] = None

    def fold_frame(self, dataset):
        """``dataset`` plus :data:`FOLD_COLUMN`.  ``rand`` is one column of its own first, as
        in pyspark's split: written inside the fold expression, each comparison would draw
        its own number."""
        from pyspark.sql import functions as F

        if self.seed is not None:
            dataset = dataset.select("*", F.rand(self.seed).alias(RAND_COLUMN))
        data = dataset.select("*", self.fold.alias(FOLD_COLUMN))
        return data.drop(RAND_COLUMN) if self.seed is not None else data


@dataclass
class SelectionResult:
    metrics: List[List[float]]  # [split][map]
    sub_models: Optional[List[List[Any]]]  # [split][map] when collected
    best_index: int
    best_model: Any


def _evaluator_columns(evaluator, spec: MetricSpec) -> dict:
    """``{estimator param name: the column the evaluator reads}`` for the spec's needs."""
    needs = {"labelCol": evaluator.getLabelCol()}
    if spec.kind == "binary":
        needs["rawPredictionCol"] = evaluator.getRawPredictionCol()
    else:
        needs["predictionCol"] = evaluator.getPredictionCol()
    if spec.needs == "prediction+probability":
        needs["probabilityCol"] = evaluator.getProbabilityCol()
    return needs


def fast_path_refusal(estimator, param_maps: Sequence[dict], evaluator) -> Optional[str]:
    """Why the shared-blocks selection cannot run these (None when it can)."""
    from sparkml_aiaas.models.fit_multiple import shared_blocks_key, unbatchable_reason
    from sparkml_aiaas.models.linear import _LinearEstimator

    if not isinstance(estimator, _LinearEstimator):
        return f"the estimator is a {type(estimator).__name__}, not one of the linear estimators"
    if not param_maps:
        return "no param maps"
    spec = spec_of_evaluator(evaluator)
    if spec is None:
        metric = (evaluator.getOrDefault("metricName") if evaluator.hasParam("metricName")
                  else "?")
        return f"{type(evaluator).__name__} with metric {metric} is not computed inside the tasks"
    try:
        estimators = [estimator.copy(m) for m in param_maps]
        for candidate in estimators:
            candidate.validate_params()
    except Exception as exc:  # pyspark's loop raises it as it would
        return f"a param map is invalid ({exc})"
    keys = [shared_blocks_key(e) for e in estimators]
    if any(key != keys[0] for key in keys):
        return "the maps build different blocks"
    for candidate in estimators:
        reason = unbatchable_reason(candidate)
        if reason:
            return reason
        for param, column in _evaluator_columns(evaluator, spec).items():
            if not candidate.hasParam(param) or candidate.getOrDefault(param) != column:
                return f"the evaluator reads {column!r}, the model's {param} is not that column"
        weight = evaluator.getOrDefault("weightCol") if (
            evaluator.hasParam("weightCol") and evaluator.isDefined("weightCol")) else None
        _, _, estimator_weight = candidate._training_columns()
        if (weight or None) != estimator_weight:
            return (f"the evaluator weighs rows by {weight!r}, the estimator by "
                    f"{estimator_weight!r}")
    return None


def cross_validation_splits(dataset, num_folds: int, seed: int, fold_col: str = "") -> Splits:
    """pyspark's k-fold split as a column: ``rand(seed)`` in ``[i/k, (i+1)/k)`` holds fold
    ``i`` out (the very intervals ``CrossValidator._kFold`` filters by; a value in none
    of them, possible in floating point, trains in every split and is never held out,
    as there), or the user's ``foldCol`` with pyspark's range check."""
    from pyspark.sql import functions as F

    from sparkml_aiaas.columns import named_column

    if fold_col:
        column = named_column(fold_col)
        fold = F.when((F.lit(0) <= column) & (column < F.lit(num_folds)), column).otherwise(
            F.raise_error(F.printf(
                F.lit(f"Fold number must be in range [0, {num_folds}), but got %s"), column)))
        return Splits(fold, num_folds, list(range(num_folds)))
    h = 1.0 / num_folds
    rand = F.col(RAND_COLUMN)
    fold = F.lit(num_folds)
    for i in reversed(range(num_folds)):
        fold = F.when((rand >= i * h) & (rand < (i + 1) * h), F.lit(i)).otherwise(fold)
    return Splits(fold, num_folds + 1, list(range(num_folds)), seed)


def train_validation_splits(train_ratio: float, seed: int) -> Splits:
    """pyspark's ``TrainValidationSplit``: ``rand(seed) >= trainRatio`` validates (group 1)."""
    from pyspark.sql import functions as F

    return Splits(F.when(F.col(RAND_COLUMN) >= train_ratio, F.lit(1)).otherwise(F.lit(0)), 2,
                  [1], seed)


def fold_column_type_refusal(dataset, fold_col: str) -> Optional[str]:
    if not fold_col:
        return None
    from pyspark.sql.types import IntegralType

    if fold_col not in dataset.columns:
        return None  # pyspark's loop raises its own error
    if not isinstance(dataset.schema[fold_col].dataType, IntegralType):
        return f"foldCol {fold_col!r} is not an integer column"
    return None


def _held_out_outputs(predictor, X, needs: str):
    """What the evaluator reads of ``predictor``'s outputs on the rows of ``X``."""
    import scipy.sparse as sp

    from sparkml_aiaas.core.matrices import as_float64, row_slice

    parts = []
    for start in range(0, X.shape[0], PREDICT_CHUNK_ROWS):
        chunk = as_float64(row_slice(X, start, min(start + PREDICT_CHUNK_ROWS, X.shape[0])))
        parts.append(predictor.predict_arrays(chunk.toarray() if sp.issparse(chunk) else chunk))
    outputs = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    if needs == "score":
        raw = outputs["rawPrediction"]
        return raw if raw.ndim == 1 else raw[:, 1]
    if needs == "prediction+probability":
        return outputs["prediction"], outputs["probability"]
    return outputs["prediction"]


def make_held_out_fn(models_handle, spec: MetricSpec):
    """The function each task of the evaluation job runs: for each model, the evaluator's
    partial sums over the blocks of its held-out group (merged with :func:`held_out_merge`)."""
    merge_all = held_out_merge(spec)

    def run(index, key_rows):
        from sparkml_aiaas.engine.loop import fold_blocks

        models = models_handle.value

        def compute(key, block):
            X, y, w = block
            out = [None] * len(models)
            for i, (predictor, held_out) in enumerate(models):
                if held_out == key["group"] and X.shape[0]:
                    out[i] = partial_sums(spec, np.asarray(y), np.asarray(w),
                                          _held_out_outputs(predictor, X, spec.needs))
            return out

        yield index, fold_blocks(key_rows, compute, merge_all)

    return run


def held_out_merge(spec: MetricSpec):
    """Merge two tasks' per-model partial sums (None: the task saw none of the model's rows)."""
    return merge_present(partial(merge_partials, spec))


def evaluate_held_out(blocks, models: List[tuple], spec: MetricSpec,
                      aggregation_depth: int) -> List[float]:
    """One Spark job: the metric of each ``(predictor, held-out group)`` on that group's rows."""
    from sparkml_aiaas.engine.loop import run_with_payload

    partials = run_with_payload(
        blocks, f"sparkml_aiaas model selection: evaluate {len(models)} models", models,
        lambda handle: make_held_out_fn(handle, spec), held_out_merge(spec), aggregation_depth,
        what="the fitted models")
    partials = partials or [None] * len(models)
    missing = sorted({held_out for (_, held_out), p in zip(models, partials) if p is None})
    if missing:
        raise DataValidationError(
            f"no rows to evaluate on in fold(s) {missing}: the split left them empty")
    return [metric_value(spec, p) for p in partials]


def select_model(estimator, dataset, param_maps: Sequence[dict], evaluator, splits: Splits,
                 collect_sub_models: bool, kind: str) -> SelectionResult:
    """Fit every map on every split's training rows over one set of grouped blocks, evaluate
    each on its held-out rows, and refit the best map on all rows (see the module doc)."""
    from sparkml_aiaas.engine.blocks import ResidentBlocks
    from sparkml_aiaas.models.fit_multiple import fit_task
    from sparkml_aiaas.models.linear import TrainingSummary
    from sparkml_aiaas.models.persistence import input_signature

    started = time.perf_counter()
    spec = spec_of_evaluator(evaluator)
    estimators = [estimator.copy(m) for m in param_maps]
    first = estimators[0]
    features, label_col, weight_col = first._training_columns()
    signature = input_signature(dataset, features)
    for reserved in (FOLD_COLUMN, RAND_COLUMN):
        if reserved in dataset.columns:
            raise ConfigError(f"the dataset has a column named {reserved!r}, which model "
                              "selection uses for the folds: rename it")
    data = splits.fold_frame(dataset)
    name = type(first).__name__
    with ExitStack() as stack:  # the blocks are removed however the selection ends
        blocks = stack.enter_context(ResidentBlocks.build(
            data, features, label_col, weight_col, first.getNumPartitions(),
            **first._block_options(), group_col=FOLD_COLUMN, groups=splits.groups))
        build_seconds = time.perf_counter() - started
        cells = blocks.stats.count * max(blocks.n_features, 1) * len(estimators)
        concurrent_refit = cells <= CONCURRENT_REFIT_CELLS
        # (split or None for all rows, map index, stats of its training rows)
        jobs = []
        for split, held_out in enumerate(splits.held_out):
            train_stats = reduce(merge_stats, [s for g, s in enumerate(blocks.group_stats)
                                               if g != held_out],
                                 BlockStats.empty(blocks.n_features))
            jobs += [(split, i, train_stats) for i in range(len(estimators))]
        if concurrent_refit:
            jobs += [(None, i, blocks.stats) for i in range(len(estimators))]
        tasks = []
        for split, i, stats in jobs:
            loss, n_outputs = estimators[i]._training_loss(blocks, stats)
            held_out = None if split is None else splits.held_out[split]
            label = f"{name}[map {i}{'' if split is None else f', split {split}'}]"
            tasks.append(fit_task(estimators[i], label, stats, loss, n_outputs, True, held_out))
        fits = _run_batched(blocks, first, tasks, f"{kind} over {name}")
        models = {}
        for (split, i, stats), fit in zip(jobs, fits):
            summary = TrainingSummary.of_fit(
                fit.result(), passes=fit.passes, blocks=blocks, build_seconds=build_seconds,
                wall_seconds=fit.finished_at - started, rebuilt_partitions=0,
                num_rows=stats.count)
            models[split, i] = estimators[i]._make_model(fit.value, signature, summary)
        held_out_models = [(models[split, i].predictor(), splits.held_out[split])
                           for split, i, _ in jobs if split is not None]
        values = evaluate_held_out(blocks, held_out_models, spec, first.getAggregationDepth())
        m = len(estimators)
        metrics = [values[s * m:(s + 1) * m] for s in range(len(splits.held_out))]
        average = np.mean(metrics, axis=0)
        best = int(np.argmax(average) if evaluator.isLargerBetter() else np.argmin(average))
        if concurrent_refit:
            best_model = models[None, best]
        else:
            loss, n_outputs = estimators[best]._training_loss(blocks)
            fit = _run_batched(blocks, first, [fit_task(estimators[best], f"{name}[best]",
                                                        blocks.stats, loss, n_outputs, True)],
                               f"{kind} refit of {name}")[0]
            summary = TrainingSummary.of_fit(
                fit.result(), passes=fit.passes, blocks=blocks, build_seconds=build_seconds,
                wall_seconds=time.perf_counter() - started, rebuilt_partitions=0)
            best_model = estimators[best]._make_model(fit.value, signature, summary)
    logger.info("%s over %s: %d splits x %d maps in %.2f s (blocks %.2f s), best map %d",
                kind, name, len(splits.held_out), m, time.perf_counter() - started,
                build_seconds, best)
    sub_models = None
    if collect_sub_models:
        sub_models = [[models[s, i] for i in range(m)] for s in range(len(splits.held_out))]
    return SelectionResult(metrics, sub_models, best, best_model)


def _run_batched(blocks, first, tasks, description: str):
    """Run the fits' optimizers over shared grouped passes; raise the first failure (in
    task order), as pyspark's loop would fail on it."""
    from sparkml_aiaas.engine.batched_pass import BatchedBlocksPass, PassBatcher

    evaluator = BatchedBlocksPass(blocks, first.getAggregationDepth(),
                                  description=f"sparkml_aiaas {description}", grouped=True)
    fits = PassBatcher(evaluator).run(tasks, name="sparkml_aiaas-model-selection")
    for fit in fits:
        if fit.error is not None:
            raise fit.error
    logger.info("%s: %d fits in %d shared passes", description, len(tasks), evaluator.jobs)
    return fits
