"""Several fits sharing passes: one Spark job evaluates every model's pending request.

``fitMultiple`` runs one optimizer per param map, each in its own thread, over the same
resident blocks.  An optimizer calls its data pass synchronously and needs the answer
before it can go on, so the threads cannot simply queue jobs: :class:`PassBatcher` makes
each call wait until every model still running has a request pending (or has finished),
then evaluates them all at once, in the thread that called :meth:`PassBatcher.run`:

    model 0: ──fit_glm── request ┐            ┌─ fit_glm ── request ┐
    model 1: ──fit_glm── request ├─ 1 job ────┼─ fit_glm ── done    ├─ 1 job ─ ...
    model 2: ──fit_glm── request ┘            └─ fit_glm ── request ┘

Only that calling thread touches Spark: it carries the job tags, group and description
the caller set (the blocks' cleanup tag included), and Ctrl-C lands there, not in a
model thread.  The requests of a round are handed to the evaluator in model order, so
the job itself is deterministic; each model's sums depend on its own request only, so a
model's result does not depend on which others shared its rounds.

:class:`PassBatcher` and :class:`BatchedModelPass` know nothing of Spark (the evaluator
is injected; ``tests/test_batched_pass.py`` drives them with numpy);
:class:`BatchedBlocksPass` is the Spark evaluator: one job over the resident blocks
whose tasks compute every request on each block
(:func:`~sparkml_aiaas.core.losses.loss_gradient_sums_many`) and whose per-request
partials are merged exactly as :class:`~sparkml_aiaas.engine.loop.DistributedDataPass`
merges its one, so each model is bit-identical to its separate fit.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from sparkml_aiaas.core.losses import Loss, SumsRequest
from sparkml_aiaas.core.merge import LossGradient, merge, merge_present

#: ``evaluate(requests in model order) -> one answer per request``: one shared pass.
BatchEvaluator = Callable[[List[Any]], List[Any]]


class BatchAborted(Exception):
    """Raised inside a model's thread when the batch stopped before answering it
    (the coordinating thread was interrupted or failed)."""


@dataclass
class Outcome:
    """How one model's fit ended: its ``value``, or the ``error`` it raised.

    ``passes`` counts the shared jobs the model took part in; ``finished_at`` is its
    ``time.perf_counter()`` at the end.
    """

    value: Any = None
    error: Optional[BaseException] = None
    passes: int = 0
    finished_at: float = 0.0

    def result(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


_RUNNING, _WAITING, _DONE = "running", "waiting", "done"


class PassBatcher:
    """Runs K fits in threads, evaluating their data-pass requests together.

    ``run(fits)`` calls ``fits[i](request)`` in thread *i*; ``request(payload)``
    blocks until the round's evaluation, then returns the evaluator's answer for
    ``payload`` (or raises what the evaluator raised).  A round starts when no
    model is computing: every model has either a request pending or finished —
    by returning or by raising, so a failed model leaves the batch instead of
    holding the others up.  ``jobs`` counts the evaluations.
    """

    def __init__(self, evaluate: BatchEvaluator):
        self._evaluate = evaluate
        self._cond = threading.Condition()
        self._state: List[str] = []
        self._pending: Dict[int, Any] = {}
        self._answers: Dict[int, Tuple[bool, Any]] = {}
        self._aborted = False
        self.jobs = 0

    def run(self, fits: Sequence[Callable[[Callable[[Any], Any]], Any]],
            name: str = "sparkml_aiaas-fit") -> List[Outcome]:
        """Run every fit to its end; one :class:`Outcome` per fit, in order.

        Raises only when the coordination itself is interrupted (Ctrl-C, or a
        ``BaseException`` from the evaluator); the model threads are then released
        with :class:`BatchAborted` and joined before the exception propagates.
        """
        outcomes = [Outcome() for _ in fits]
        with self._cond:
            self._state = [_RUNNING] * len(fits)
            self._pending.clear()
            self._answers.clear()
            self._aborted = False
        threads = [threading.Thread(target=self._run_one, args=(i, fit, outcomes[i]),
                                    name=f"{name}-{i}", daemon=True)
                   for i, fit in enumerate(fits)]
        for thread in threads:
            thread.start()
        try:
            self._coordinate()
        except BaseException:
            with self._cond:
                self._aborted = True
                self._cond.notify_all()
            raise
        finally:
            for thread in threads:
                thread.join()
        return outcomes

    # -- the model threads --------------------------------------------------------------
    def _run_one(self, index: int, fit, outcome: Outcome) -> None:
        def request(payload):
            return self._request(index, payload, outcome)

        try:
            outcome.value = fit(request)
        except BaseException as exc:  # recorded, re-raised to whoever asks for this model
            outcome.error = exc
        finally:
            outcome.finished_at = time.perf_counter()
            with self._cond:
                self._state[index] = _DONE
                self._cond.notify_all()

    def _request(self, index: int, payload, outcome: Outcome):
        with self._cond:
            if self._aborted:
                raise BatchAborted("the batched fit was stopped")
            self._pending[index] = payload
            self._state[index] = _WAITING
            self._cond.notify_all()
            while index not in self._answers and not self._aborted:
                self._cond.wait()
            if index not in self._answers:
                raise BatchAborted("the batched fit was stopped")
            ok, answer = self._answers.pop(index)
            self._state[index] = _RUNNING
        outcome.passes += 1
        if not ok:
            raise answer
        return answer

    # -- the calling thread -------------------------------------------------------------
    def _coordinate(self) -> None:
        while True:
            with self._cond:
                while _RUNNING in self._state:
                    self._cond.wait()
                if not self._pending:
                    return  # everyone is done
                order = sorted(self._pending)
                payloads = [self._pending.pop(i) for i in order]
            self.jobs += 1
            try:
                answers = [(True, a) for a in self._evaluate(payloads)]
                if len(answers) != len(order):
                    raise RuntimeError(f"the evaluator answered {len(answers)} of "
                                       f"{len(order)} requests")
            except Exception as exc:  # the job failed: every model in it fails with it
                answers = [(False, exc)] * len(order)
            with self._cond:
                for i, answer in zip(order, answers):
                    self._answers[i] = answer
                    # Answered, not yet awake: count it as computing so that the next round
                    # waits for its next request.
                    self._state[i] = _RUNNING
                self._cond.notify_all()


class HeldOutRequest(NamedTuple):
    """A request over grouped blocks (one block per partition and fold): the sums over
    every group but ``held_out`` (None: over all rows)."""

    sums: SumsRequest
    held_out: Optional[int]


class BatchedModelPass:
    """One model's ``data_pass(coef, intercept, extra, with_hessian) -> LossGradient`` whose
    passes go through a :class:`PassBatcher` round as :class:`SumsRequest` payloads
    (:class:`HeldOutRequest` ones when ``grouped``: the sums leave group ``held_out`` out).

    Mini-batches (``sample``) are not batched: their optimizers fall back to separate fits.
    """

    def __init__(self, request: Callable[[Any], LossGradient], loss: Loss,
                 grouped: bool = False, held_out: Optional[int] = None):
        self._request = request
        self.loss = loss
        self.grouped = grouped
        self.held_out = held_out

    def __call__(self, coef: np.ndarray, intercept: np.ndarray,
                 extra: Optional[np.ndarray] = None, with_hessian: bool = False,
                 sample: Optional[Tuple[float, int, int]] = None) -> LossGradient:
        if sample is not None:
            raise ValueError("a batched pass does not sample mini-batches")
        # The same conversions as DistributedDataPass: the executors see the same arrays.
        request = SumsRequest(
            self.loss, np.asarray(coef, float), np.asarray(intercept, float),
            None if extra is None else np.asarray(extra, float), bool(with_hessian))
        return self._request(HeldOutRequest(request, self.held_out) if self.grouped
                             else request)


def merge_each(a: List[LossGradient], b: List[LossGradient]) -> List[LossGradient]:
    """Merge two lists of per-request partials request by request (the single pass's merge)."""
    return [merge(x, y) for x, y in zip(a, b)]


#: :func:`merge_each` where a request may have no sums yet (None) on either side.
merge_each_present = merge_present(merge)


def make_grouped_partition_fn(requests_broadcast):
    """The function each task runs over grouped blocks: each :class:`HeldOutRequest`'s sums
    over the blocks of every group but its held-out one, merged in key order (partition,
    then group)."""

    def run(index, key_rows):
        from sparkml_aiaas.core.losses import loss_gradient_sums_many
        from sparkml_aiaas.engine.loop import fold_blocks

        requests = requests_broadcast.value

        def compute(key, block):
            group = key["group"]
            active = [i for i, r in enumerate(requests) if r.held_out != group]
            sums = loss_gradient_sums_many([requests[i].sums for i in active], *block)
            out: List[Optional[LossGradient]] = [None] * len(requests)
            for i, part in zip(active, sums):
                out[i] = part
            return out

        yield index, fold_blocks(key_rows, compute, merge_each_present)

    return run


def make_batch_partition_fn(requests_broadcast):
    """The function each task runs: every request's sums on each of its blocks.

    As :func:`~sparkml_aiaas.engine.loop.make_partition_fn`, only the broadcast handle
    is captured.
    """

    def run(index, key_rows):
        from sparkml_aiaas.core.losses import loss_gradient_sums_many
        from sparkml_aiaas.engine.loop import fold_blocks

        requests = requests_broadcast.value

        def compute(key, block):
            return loss_gradient_sums_many(requests, *block)

        yield index, fold_blocks(key_rows, compute, merge_each)

    return run


class BatchedBlocksPass:
    """The Spark evaluator of a :class:`PassBatcher`: ``evaluate(requests) -> sums`` in one
    job over the resident blocks (one broadcast of all the requests per job)."""

    def __init__(self, blocks, aggregation_depth: int = 2, description: str = "sparkml_aiaas",
                 grouped: bool = False):
        self.blocks = blocks
        self.aggregation_depth = aggregation_depth
        self.description = description
        #: Requests are HeldOutRequests over grouped blocks.
        self.grouped = grouped
        self.jobs = 0

    def __call__(self, requests: List[SumsRequest]) -> List[LossGradient]:
        from sparkml_aiaas.engine.loop import run_with_payload

        self.jobs += 1
        if self.grouped:
            make_fn, merge_fn = make_grouped_partition_fn, merge_each_present
        else:
            make_fn, merge_fn = make_batch_partition_fn, merge_each
        sums = run_with_payload(self.blocks,
                                f"{self.description}: pass {self.jobs} ({len(requests)} models)",
                                list(requests), make_fn, merge_fn, self.aggregation_depth)
        plain = [r.sums if self.grouped else r for r in requests]
        if sums is None:  # no partition had rows
            sums = [None] * len(plain)
        # A request none of whose blocks held rows (every row held out) sums to zero.
        return [s if s is not None else LossGradient.zero(
            r.loss.n_params(*r.coef.shape), with_hessian=r.with_hessian)
            for s, r in zip(sums, plain)]
