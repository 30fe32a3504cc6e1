"""Spark side of PyTorch training: data-parallel passes and local rounds on resident blocks.

Each job broadcasts the flat parameter vector (and, for a local round, the optimizer state),
every task loads it into its per-worker copy of the network and runs torch autograd on its
memory-mapped block (:mod:`sparkml_aiaas.core.torch_nets`), and the partial sums are combined
in partition order by the engine's tree reduce (:func:`sparkml_aiaas.engine.loop.run_on_blocks`).

* :meth:`TorchDataParallel.gradient` — ``(loss sum, gradient sum, weight, count)`` of each
  block (or of one mini-batch of each block), merged with :func:`sparkml_aiaas.core.merge.merge`;
  the driver takes the optimizer step on the mean gradient.
* :meth:`TorchDataParallel.local_round` — every task takes ``localSteps`` steps of the rule on
  its own mini-batches and returns row-weighted parameters and rule state, merged and averaged
  with the linear models' local-SGD functions (:mod:`sparkml_aiaas.core.stochastic`).

:func:`train_network` is the driver loop over epochs.  A task runs on the GPU that Spark
assigned it (``spark.task.resource.gpu.amount``) when torch sees CUDA, else on the CPU with one
thread (one task per core).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from sparkml_aiaas.core.first_order import RuleSettings, apply_update, init_state
from sparkml_aiaas.core.merge import LossGradient, merge
from sparkml_aiaas.core.stochastic import average_rounds, merge_rounds, round_sums
from sparkml_aiaas.engine.blocks import ResidentBlocks
from sparkml_aiaas.engine.loop import fold_blocks, run_on_blocks


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


def _gradient_fn(payload_bc):
    def run(index, key_rows):
        from sparkml_aiaas.core.torch_nets import (batch_rows, block_loss_grad, epoch_order,
                                                   seed_torch, set_vector)

        p = payload_bc.value
        module, device = _prepare_task(p["spec"])
        set_vector(module, p["x"])

        def compute(key, block):
            X, y, w = block
            seed_torch(*p["rng"], key["partition"])
            rows = None
            # A batch that covers the block is the whole block: read it as memory-map slices
            # (no copy) rather than gathering every row.
            if p["batch"] is not None and 0 < p["batch"][0] < X.shape[0]:
                batch_size, seed, epoch, position = p["batch"]
                order = epoch_order(X.shape[0], seed, epoch, key["partition"])
                rows = batch_rows(order, position, batch_size)
            return block_loss_grad(module, X, y, w, task=p["task"],
                                   input_shape=p["input_shape"], device=device, rows=rows)

        yield index, fold_blocks(key_rows, compute, merge)

    return run


def _round_fn(payload_bc):
    def run(index, key_rows):
        from sparkml_aiaas.core.torch_nets import epoch_order, local_steps, seed_torch

        p = payload_bc.value
        module, device = _prepare_task(p["spec"])

        def compute(key, block):
            X, y, w = block
            seed_torch(*p["rng"], key["partition"])
            order = epoch_order(X.shape[0], p["seed"], p["epoch"], key["partition"])
            x, state, used, loss_sum = local_steps(
                module, X, y, w, p["x"], p["state"], task=p["task"],
                input_shape=p["input_shape"], rule=p["rule"], settings=p["settings"],
                step=p["step"], steps=p["steps"], batch_size=p["batch_size"], order=order,
                position=p["position"], device=device)
            return round_sums(x, state, used, loss_sum)

        yield index, fold_blocks(key_rows, compute, merge_rounds)

    return run


class TorchDataParallel:
    """Jobs over resident blocks for one network; counts the jobs it ran."""

    def __init__(self, blocks: ResidentBlocks, spec: Dict[str, Any], task: str,
                 input_shape: Sequence[int], aggregation_depth: int = 2,
                 description: str = "sparkml_aiaas torch"):
        self.blocks = blocks
        self.spec = spec
        self.task = task
        self.input_shape = [int(s) for s in input_shape]
        self.aggregation_depth = aggregation_depth
        self.description = description
        self.jobs = 0

    def _run(self, payload: Dict[str, Any], make_fn, merge_fn, label: str):
        sc = self.blocks.spark.sparkContext
        self.jobs += 1
        sc.setJobDescription(f"{self.description}: {label} (job {self.jobs})")
        payload = dict(payload, spec=self.spec, task=self.task, input_shape=self.input_shape)
        bc = sc.broadcast(payload)
        try:
            return run_on_blocks(self.blocks, make_fn(bc), merge_fn, self.aggregation_depth)
        finally:
            bc.destroy()
            sc.setJobDescription(None)

    def gradient(self, x: np.ndarray, batch=None, rng=(0, 0, 0)) -> LossGradient:
        """Loss and gradient sums at ``x`` over every block, or over one mini-batch per block
        with ``batch=(batch_size, seed, epoch, position)``; ``rng=(seed, epoch, job)`` seeds
        torch in each task (dropout)."""
        total = self._run({"x": np.asarray(x, np.float64), "batch": batch, "rng": tuple(rng)},
                          _gradient_fn, merge, "gradient pass")
        if total is None:
            return LossGradient.zero(len(x))
        return total

    def local_round(self, x: np.ndarray, state, *, rule: str, settings: RuleSettings,
                    step: float, steps: int, batch_size: int, seed: int, epoch: int,
                    position: int, job: int = 0):
        """One job of ``steps`` local steps per task: ``(averaged x, averaged state, mean loss)``."""
        payload = {"x": np.asarray(x, np.float64), "state": state, "rule": rule,
                   "settings": settings, "step": float(step), "steps": int(steps),
                   "batch_size": int(batch_size), "seed": int(seed), "epoch": int(epoch),
                   "position": int(position), "rng": (int(seed), int(epoch), int(job))}
        total = self._run(payload, _round_fn, merge_rounds, "local round")
        if total is None:
            raise ValueError("no partition had rows to train on")
        return average_rounds(total)


@dataclass
class TrainResult:
    x: np.ndarray
    loss_history: List[float] = field(default_factory=list)
    epochs: int = 0
    jobs: int = 0
    steps_per_epoch: int = 0


def jobs_per_epoch(rows: int, partitions: int, batch_size: int, local_steps: int) -> int:
    """Spark jobs in one epoch: ``ceil(rows / (batchSize · partitions · localSteps))``; one for
    full batch (``batchSize`` 0 or covering every partition)."""
    if batch_size <= 0:
        return 1
    per_job = batch_size * max(partitions, 1) * max(local_steps, 1)
    return max(1, math.ceil(rows / per_job))


def train_network(trainer: TorchDataParallel, x0: np.ndarray, *, rule: str,
                  settings: RuleSettings, step_size: float, batch_size: int, local_steps: int,
                  max_epochs: int, seed: int, rows: int,
                  callback: Optional[Callable[[int, float], None]] = None) -> TrainResult:
    """The driver loop.

    ``local_steps == 1``: each job is one step of ``rule`` (the engine's
    :func:`~sparkml_aiaas.core.first_order.apply_update`) on the mean gradient of all blocks'
    mini-batches (``batch_size`` rows per partition; the whole block when 0).  With one
    partition per task and full batch this is exactly single-process full-batch training.
    ``local_steps > 1``: each job is a local round (tasks step, the driver averages
    parameters and rule state weighted by rows used).  An epoch visits each block's rows once
    in a (seed, epoch, partition) order; ``callback(epoch, mean training loss)``.
    """
    settings.validate()
    x = np.array(x0, dtype=np.float64)
    state = init_state(rule, x.size)
    partitions = trainer.blocks.num_partitions
    per_epoch = jobs_per_epoch(rows, partitions, batch_size, local_steps)
    history: List[float] = []
    for epoch in range(max_epochs):
        loss_total, weight_total = 0.0, 0.0
        for j in range(per_epoch):
            if local_steps <= 1:
                batch = None if batch_size <= 0 else (batch_size, seed, epoch, j * batch_size)
                sums = trainer.gradient(x, batch, rng=(seed, epoch, j))
                if sums.weight <= 0:
                    raise ValueError("the training rows have zero total weight")
                mean_loss, grad = sums.mean()
                x, state = apply_update(rule, x, grad, state, step_size, settings)
                loss_total += sums.loss
                weight_total += sums.weight
            else:
                x, state, mean_loss = trainer.local_round(
                    x, state, rule=rule, settings=settings, step=step_size, steps=local_steps,
                    batch_size=batch_size, seed=seed, epoch=epoch,
                    position=j * local_steps * max(batch_size, 0), job=j)
                loss_total += mean_loss
                weight_total += 1.0
            if not np.all(np.isfinite(x)):
                raise ValueError(
                    f"optimizer {rule!r} diverged in epoch {epoch + 1} (non-finite parameters); "
                    "lower stepSize")
        history.append(loss_total / weight_total)
        if callback is not None:
            callback(epoch + 1, history[-1])
    return TrainResult(x, history, max_epochs, trainer.jobs, per_epoch)
