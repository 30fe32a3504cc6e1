"""Spark side of PyTorch training: data-parallel passes and local rounds on resident blocks.

Each job broadcasts the flat parameter vector (and, for a local round, the optimizer state),
every task loads it into its per-worker copy of the network and runs torch autograd on its
memory-mapped block (:mod:`sparkml_aiaas.core.torch_nets`), and the partial sums are combined
in partition order by the engine's tree reduce (:func:`sparkml_aiaas.engine.loop.run_on_blocks`).

* :meth:`TorchDataParallel.gradient` — ``(loss sum, gradient sum, weight, count)`` of each
  block (or of one mini-batch of each block), merged with :func:`sparkml_aiaas.core.merge.merge`;
  the driver takes the optimizer step on the mean gradient.
* :meth:`TorchDataParallel.local_round` — every task takes ``localSteps`` steps of the rule on
  its own mini-batches (or, with ``localSteps`` 0, one pass over its block) and returns
  row-weighted parameters and rule state, merged and averaged with the linear models'
  local-SGD functions (:mod:`sparkml_aiaas.core.stochastic`).

Either job can also evaluate the broadcast parameters on the block's held-out rows
(``validationFraction``) before it trains, so early stopping costs no job of its own.
:func:`train_network` is the driver loop over epochs, with scikit-learn's stopping rule.
A task runs on the GPU that Spark assigned it (``spark.task.resource.gpu.amount``) when
torch sees CUDA, else on the CPU with one thread (one task per core).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from sparkml_aiaas.core.first_order import RuleSettings, apply_update, init_state
from sparkml_aiaas.core.merge import LossGradient, merge
from sparkml_aiaas.core.stochastic import NoImprovement, average_rounds, merge_rounds, round_sums
from sparkml_aiaas.engine.blocks import ResidentBlocks
from sparkml_aiaas.engine.loop import fold_blocks, run_with_payload


def task_device() -> str:
    """The torch device of the running Spark task: ``cuda:<address>`` when Spark assigned this
    task a GPU and torch can use CUDA, else ``cpu``.

    Spark hands each task the addresses of its GPUs (``TaskContext.resources()["gpu"]``);
    the first is used (a task asks for one GPU, or a fraction of one).  Without an
    assignment the task stays on the CPU even if the machine has GPUs: another task may own them.
    """
    import torch
    from pyspark import TaskContext

    context = TaskContext.get()
    resources = context.resources() if context is not None else {}
    gpu = resources.get("gpu") if resources else None
    if gpu is not None and gpu.addresses and torch.cuda.is_available():
        address = int(gpu.addresses[0])
        if address < torch.cuda.device_count():
            return f"cuda:{address}"
        # CUDA_VISIBLE_DEVICES already narrowed the view to the assigned GPU(s).
        return "cuda:0"
    return "cpu"


def _prepare_task(spec):
    """Per task: one torch thread (Spark runs one task per core), the task's device, and the
    worker's cached network in training mode."""
    import torch

    from sparkml_aiaas.core.torch_nets import cached_network

    torch.set_num_threads(1)
    device = task_device()
    module = cached_network(spec, device)
    module.train()
    return module, device


_SPLITS: Dict[Any, Any] = {}


def _split(key, y, p):
    """``(training rows, held-out rows)`` of a block (``(None, None)`` without validation),
    cached per worker: every job of a fit asks for the same split."""
    fraction = p["validation"]
    if fraction <= 0:
        return None, None
    from sparkml_aiaas.core.torch_nets import validation_split

    cache_key = (key["path"], fraction, p["split_seed"], p["task"])
    split = _SPLITS.get(cache_key)
    if split is None:
        if len(_SPLITS) > 16:
            _SPLITS.clear()
        labels = np.asarray(y) if p["task"] == "classification" else None
        split = _SPLITS[cache_key] = validation_split(len(y), fraction, p["split_seed"],
                                                      key["partition"], labels)
    return split


def _evaluate(module, block, p, device, held):
    """``[Σ w·loss, Σ w, Σ w·correct]`` of the held-out rows at the broadcast parameters,
    when this job evaluates; zeros otherwise."""
    from sparkml_aiaas.core.torch_nets import block_evaluate

    if not p["evaluate"] or held is None:
        return np.zeros(3)
    X, y, w = block
    return block_evaluate(module, X, y, w, task=p["task"], input_shape=p["input_shape"],
                          rows=held, device=device, scaling=p["scaling"])


def _merge_pair(merge_fn):
    def combine(a, b):
        return merge_fn(a[0], b[0]), a[1] + b[1]

    return combine


def _gradient_fn(payload_bc):
    def run(index, key_rows):
        from sparkml_aiaas.core.torch_nets import (batch_rows, block_loss_grad, epoch_order,
                                                   seed_torch, set_vector)

        p = payload_bc.value
        module, device = _prepare_task(p["spec"])
        set_vector(module, p["x"])

        def compute(key, block):
            X, y, w = block
            train, held = _split(key, y, p)
            evaluated = _evaluate(module, block, p, device, held)
            seed_torch(*p["rng"], key["partition"])
            rows = train
            n_train = X.shape[0] if train is None else len(train)
            # A batch that covers the block is the whole block: read it as memory-map slices
            # (no copy) rather than gathering every row.
            if p["batch"] is not None and 0 < p["batch"][0] < n_train:
                batch_size, seed, epoch, position = p["batch"]
                order = epoch_order(X.shape[0], seed, epoch, key["partition"], train)
                rows = batch_rows(order, position, batch_size)
            sums = block_loss_grad(module, X, y, w, task=p["task"],
                                   input_shape=p["input_shape"], device=device, rows=rows,
                                   scaling=p["scaling"])
            return sums, evaluated

        yield index, fold_blocks(key_rows, compute, _merge_pair(merge))

    return run


def _round_fn(payload_bc):
    def run(index, key_rows):
        from sparkml_aiaas.core.torch_nets import (epoch_order, local_steps, seed_torch,
                                                   set_vector)

        p = payload_bc.value
        module, device = _prepare_task(p["spec"])

        def compute(key, block):
            X, y, w = block
            train, held = _split(key, y, p)
            if p["evaluate"]:
                set_vector(module, p["x"])
            evaluated = _evaluate(module, block, p, device, held)
            seed_torch(*p["rng"], key["partition"])
            order = epoch_order(X.shape[0], p["seed"], p["epoch"], key["partition"], train)
            x, state, used, loss_sum = local_steps(
                module, X, y, w, p["x"], p["state"], task=p["task"],
                input_shape=p["input_shape"], rule=p["rule"], settings=p["settings"],
                step=p["step"], steps=p["steps"], batch_size=p["batch_size"], order=order,
                position=p["position"], device=device, scaling=p["scaling"])
            return round_sums(x, state, used, loss_sum), evaluated

        yield index, fold_blocks(key_rows, compute, _merge_pair(merge_rounds))

    return run


def _evaluate_fn(payload_bc):
    def run(index, key_rows):
        from sparkml_aiaas.core.torch_nets import set_vector

        p = payload_bc.value
        module, device = _prepare_task(p["spec"])
        set_vector(module, p["x"])

        def compute(key, block):
            _, held = _split(key, block[1], p)
            return _evaluate(module, block, p, device, held)

        yield index, fold_blocks(key_rows, compute, np.add)

    return run


class TorchDataParallel:
    """Jobs over resident blocks for one network; counts the jobs it ran.

    ``scaling`` (:class:`~sparkml_aiaas.core.torch_nets.Scaling`) standardizes inputs and
    regression targets in the tasks; ``validation`` holds that fraction of each block out
    of training (:func:`~sparkml_aiaas.core.torch_nets.validation_split`, drawn from
    ``seed``) for :meth:`evaluate` and the jobs' ``evaluate=True``.
    """

    def __init__(self, blocks: ResidentBlocks, spec: Dict[str, Any], task: str,
                 input_shape: Sequence[int], aggregation_depth: int = 2,
                 description: str = "sparkml_aiaas torch", scaling=None,
                 validation: float = 0.0, seed: int = 0):
        self.blocks = blocks
        self.spec = spec
        self.task = task
        self.input_shape = [int(s) for s in input_shape]
        self.aggregation_depth = aggregation_depth
        self.description = description
        self.scaling = scaling
        self.validation = float(validation)
        self.split_seed = int(seed)
        self.jobs = 0

    def _run(self, payload: Dict[str, Any], make_fn, merge_fn, label: str):
        self.jobs += 1
        payload = dict({"evaluate": False}, **payload, spec=self.spec, task=self.task,
                       input_shape=self.input_shape, scaling=self.scaling,
                       validation=self.validation, split_seed=self.split_seed)
        return run_with_payload(self.blocks, f"{self.description}: {label} (job {self.jobs})",
                                payload, make_fn, merge_fn, self.aggregation_depth,
                                what="the network's parameters")

    def gradient(self, x: np.ndarray, batch=None, rng=(0, 0, 0), evaluate: bool = False):
        """Loss and gradient sums at ``x`` over every block's training rows, or over one
        mini-batch per block with ``batch=(batch_size, seed, epoch, position)``;
        ``rng=(seed, epoch, job)`` seeds torch in each task (dropout).  With ``evaluate``
        returns ``(sums, held-out [Σ w·loss, Σ w, Σ w·correct] at x)``."""
        total = self._run({"x": np.asarray(x, np.float64), "batch": batch, "rng": tuple(rng),
                           "evaluate": bool(evaluate)},
                          _gradient_fn, _merge_pair(merge), "gradient pass")
        sums, held = (LossGradient.zero(len(x)), np.zeros(3)) if total is None else total
        return (sums, held) if evaluate else sums

    def local_round(self, x: np.ndarray, state, *, rule: str, settings: RuleSettings,
                    step: float, steps: Optional[int], batch_size: int, seed: int, epoch: int,
                    position: int, job: int = 0, evaluate: bool = False):
        """One job of ``steps`` local steps per task (``None``: one pass over each block's
        training rows): ``(averaged x, averaged state, mean loss)``, plus the held-out sums
        at ``x`` with ``evaluate``."""
        payload = {"x": np.asarray(x, np.float64), "state": state, "rule": rule,
                   "settings": settings, "step": float(step),
                   "steps": None if steps is None else int(steps),
                   "batch_size": int(batch_size), "seed": int(seed), "epoch": int(epoch),
                   "position": int(position), "rng": (int(seed), int(epoch), int(job)),
                   "evaluate": bool(evaluate)}
        total = self._run(payload, _round_fn, _merge_pair(merge_rounds), "local round")
        if total is None:
            raise ValueError("no partition had rows to train on")
        averaged = average_rounds(total[0])
        return (*averaged, total[1]) if evaluate else averaged

    def evaluate(self, x: np.ndarray) -> np.ndarray:
        """One job: the held-out rows' ``[Σ w·loss, Σ w, Σ w·correct]`` at ``x``."""
        total = self._run({"x": np.asarray(x, np.float64), "evaluate": True}, _evaluate_fn,
                          np.add, "validation pass")
        return np.zeros(3) if total is None else total


@dataclass
class TrainResult:
    x: np.ndarray
    loss_history: List[float] = field(default_factory=list)
    epochs: int = 0
    jobs: int = 0
    steps_per_epoch: int = 0
    stop_reason: str = "maxEpochs"
    stop_message: str = ""
    best_epoch: int = 0
    validation_loss: List[float] = field(default_factory=list)
    validation_accuracy: List[float] = field(default_factory=list)


#: ``TrainResult.stop_reason`` values.
STOP_REASONS = ("converged", "earlyStopping", "maxEpochs")


def jobs_per_epoch(rows: int, partitions: int, batch_size: int, local_steps: int) -> int:
    """Spark jobs in one epoch: ``ceil(rows / (batchSize · partitions · localSteps))``; one for
    full batch (``batchSize`` 0 or covering every partition) and for ``localSteps`` 0 (each
    task passes over its whole block in one job)."""
    if batch_size <= 0 or local_steps <= 0:
        return 1
    per_job = batch_size * max(partitions, 1) * max(local_steps, 1)
    return max(1, math.ceil(rows / per_job))


def train_network(trainer: TorchDataParallel, x0: np.ndarray, *, rule: str,
                  settings: RuleSettings, step_size: float, batch_size: int, local_steps: int,
                  max_epochs: int, seed: int, rows: int, tol: Optional[float] = None,
                  n_iter_no_change: int = 10,
                  callback: Optional[Callable[[int, float], None]] = None) -> TrainResult:
    """The driver loop.

    ``local_steps == 1``: each job is one step of ``rule`` (the engine's
    :func:`~sparkml_aiaas.core.first_order.apply_update`) on the mean gradient of all blocks'
    mini-batches (``batch_size`` rows per partition; the whole block when 0).  With one
    partition per task and full batch this is exactly single-process full-batch training.
    ``local_steps > 1``: each job is a local round (tasks step, the driver averages
    parameters and rule state weighted by rows used).  ``local_steps == 0``: one local
    round per epoch in which every task passes over its block's rows in mini-batches of
    ``batch_size`` (full batch: the exact step, as ``local_steps == 1``).  An epoch visits
    each block's training rows once in a (seed, epoch, partition) order;
    ``callback(epoch, mean training loss)``.

    Stopping (``tol`` > 0): scikit-learn's rule (:class:`~sparkml_aiaas.core.stochastic.
    NoImprovement`) on the epoch's training loss, or — when the trainer holds rows out
    (``trainer.validation > 0``) — on the held-out loss of the parameters after each epoch;
    the first job of each epoch evaluates the parameters it receives, and the parameters
    of the best evaluated epoch are returned.  Otherwise every one of ``max_epochs`` runs.
    """
    settings.validate()
    x = np.array(x0, dtype=np.float64)
    state = init_state(rule, x.size)
    partitions = trainer.blocks.num_partitions
    validating = trainer.validation > 0
    if validating:
        rows = max(rows - int(round(trainer.validation * rows)), 1)
    auto = local_steps <= 0
    exact = local_steps == 1 or (auto and batch_size <= 0)
    per_epoch = jobs_per_epoch(rows, partitions, batch_size, local_steps)
    history: List[float] = []
    result = TrainResult(x, history, 0, 0, per_epoch)
    stopping = tol is not None and tol > 0
    monitor = NoImprovement(tol if stopping else 0.0, max(int(n_iter_no_change), 1))
    best_x = x

    def evaluated(held: np.ndarray, at: np.ndarray, epoch: int) -> bool:
        """Record the held-out result of ``at`` (the parameters after ``epoch`` epochs);
        True when the fit should stop."""
        nonlocal best_x
        if held[1] <= 0:
            raise ValueError("no rows were held out for validation: raise validationFraction")
        result.validation_loss.append(float(held[0] / held[1]))
        if trainer.task == "classification":
            result.validation_accuracy.append(float(held[2] / held[1]))
        if monitor.update(result.validation_loss[-1]):
            best_x, result.best_epoch = at, epoch
        return stopping and monitor.stop

    stopped = False
    for epoch in range(max_epochs):
        loss_total, weight_total = 0.0, 0.0
        start = x
        for j in range(per_epoch):
            evaluate = validating and j == 0
            if exact:
                batch = None if batch_size <= 0 else (batch_size, seed, epoch, j * batch_size)
                out = trainer.gradient(x, batch, rng=(seed, epoch, j), evaluate=evaluate)
                sums, held = out if evaluate else (out, None)
                if sums.weight <= 0:
                    raise ValueError("the training rows have zero total weight")
                x_next, state_next = apply_update(rule, x, sums.mean()[1], state, step_size,
                                                  settings)
                loss, weight = sums.loss, sums.weight
            else:
                out = trainer.local_round(
                    x, state, rule=rule, settings=settings, step=step_size,
                    steps=None if auto else local_steps, batch_size=batch_size, seed=seed,
                    epoch=epoch, position=j * local_steps * max(batch_size, 0), job=j,
                    evaluate=evaluate)
                x_next, state_next, loss = out[:3]
                held = out[3] if evaluate else None
                weight = 1.0
            if evaluate and evaluated(held, start, epoch):
                stopped = True  # this job's training is discarded: the best came earlier
                break
            x, state = x_next, state_next
            loss_total += loss
            weight_total += weight
            if not np.all(np.isfinite(x)):
                raise ValueError(
                    f"optimizer {rule!r} diverged in epoch {epoch + 1} (non-finite parameters); "
                    "lower stepSize")
        if stopped:
            result.stop_reason = "earlyStopping"
            result.stop_message = (
                f"validation loss did not improve by more than tol={tol:g} for "
                f"{monitor.n_iter_no_change} consecutive epochs; kept epoch {result.best_epoch}")
            break
        history.append(loss_total / weight_total)
        result.epochs = epoch + 1
        if callback is not None:
            callback(epoch + 1, history[-1])
        if validating or not stopping:
            continue
        monitor.update(history[-1])
        if monitor.stop:
            result.stop_reason = "converged"
            result.stop_message = (
                f"training loss did not improve by more than tol={tol:g} for "
                f"{monitor.n_iter_no_change} consecutive epochs")
            break
    if validating and not stopped and result.epochs > 0:
        evaluated(trainer.evaluate(x), x, result.epochs)
    if validating and result.validation_loss:
        x = best_x
    else:
        result.best_epoch = result.epochs
    if not result.stop_message:
        result.stop_message = f"reached maxEpochs={max_epochs}"
    result.x = x
    result.jobs = trainer.jobs
    return result
