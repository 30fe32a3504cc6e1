"""The batching of fitMultiple without Spark: PassBatcher with numpy evaluators."""

import threading
from functools import reduce

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from sparkml_aiaas.core.glm import fit_glm
from sparkml_aiaas.core.losses import (LOSSES, SumsRequest, get_loss, loss_gradient_sums,
                                       loss_gradient_sums_many)
from sparkml_aiaas.core.merge import merge
from sparkml_aiaas.core.stats import block_stats, merge_stats
from sparkml_aiaas.engine.batched_pass import (BatchAborted, BatchedModelPass, PassBatcher,
                                               merge_each)

HUBER = get_loss("huber", epsilon=1.35)


def run_with_deadline(target, seconds=30.0):
    """Run ``target()`` in a thread; fail (instead of hanging the suite) if it does not end."""
    box = {}

    def body():
        try:
            box["value"] = target()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box["error"] = exc

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "the batcher hung"
    if "error" in box:
        raise box["error"]
    return box["value"]


# ----------------------------------------------------------------- loss_gradient_sums_many
def _blocks(seed=0, n=3000, d=6):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    X[rng.uniform(size=X.shape) < 0.6] = 0.0
    y_bin = (rng.uniform(size=n) < 0.4).astype(float)
    y_cls = rng.integers(0, 3, size=n).astype(float)
    y_real = X @ np.linspace(1, -1, d) + rng.normal(size=n)
    w = rng.uniform(0.5, 2.0, size=n)
    return rng, X, y_bin, y_cls, y_real, w


@pytest.mark.parametrize("layout", ["dense64", "dense32", "csr"])
def test_sums_many_equal_separate_sums_bit_for_bit(layout):
    rng, X, y_bin, y_cls, _, w = _blocks()
    if layout == "dense32":
        X = X.astype(np.float32)
    elif layout == "csr":
        X = sp.csr_matrix(X)
    d = X.shape[1]
    requests = [
        SumsRequest(LOSSES["logistic"], rng.normal(size=(d, 1)), np.array([0.2])),
        SumsRequest(LOSSES["multinomial"], rng.normal(size=(d, 3)), rng.normal(size=3)),
        SumsRequest(LOSSES["logistic"], rng.normal(size=(d, 1)), np.array([-0.1]), None, True),
        SumsRequest(LOSSES["hinge"], rng.normal(size=(d, 1)), np.array([0.0])),
    ]
    labels = [y_bin, y_cls, y_bin, y_bin]
    # One label column per block in the engine: check each request against its own label.
    for request, y in zip(requests, labels):
        many = loss_gradient_sums_many([request, requests[0], request], X, y, w)
        alone = loss_gradient_sums(request.loss, X, y, w, request.coef, request.intercept,
                                   request.extra, with_hessian=request.with_hessian)
        for got in (many[0], many[2]):
            assert got.loss == alone.loss and got.weight == alone.weight
            assert got.count == alone.count
            np.testing.assert_array_equal(got.grad, alone.grad)
            if alone.hessian is None:
                assert got.hessian is None
            else:
                np.testing.assert_array_equal(got.hessian, alone.hessian)


def test_sums_many_huber_extra_and_empty_block():
    _, X, _, _, y, w = _blocks(n=700)
    request = SumsRequest(HUBER, np.ones((X.shape[1], 1)), np.array([0.5]), np.array([0.3]), True)
    (got,) = loss_gradient_sums_many([request], X, y, w)
    alone = loss_gradient_sums(HUBER, X, y, w, request.coef, request.intercept, request.extra,
                               with_hessian=True)
    np.testing.assert_array_equal(got.grad, alone.grad)
    np.testing.assert_array_equal(got.hessian, alone.hessian)
    (empty,) = loss_gradient_sums_many([request], X[:0], y[:0], w[:0])
    assert empty.count == 0 and empty.grad.shape == alone.grad.shape


def test_merge_each_merges_request_by_request():
    parts = [loss_gradient_sums(LOSSES["squared"], np.eye(3), np.ones(3), np.ones(3),
                                np.full((3, 1), c), np.zeros(1)) for c in (0.0, 1.0)]
    merged = merge_each(parts, parts[::-1])
    assert [m.loss for m in merged] == [merge(parts[0], parts[1]).loss] * 2


# ----------------------------------------------------------------------- the batcher
def chunked_data(seed=0, n=600, d=4, kind="logistic"):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    m = X @ np.linspace(1.0, -1.0, d) + 0.3
    if kind == "logistic":
        y = (rng.uniform(size=n) < 1.0 / (1.0 + np.exp(-m))).astype(float)
    else:
        y = m + 0.5 * rng.standard_t(3, size=n)
    w = np.ones(n)
    bounds = np.linspace(0, n, 4).astype(int)
    chunks = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
    stats = reduce(merge_stats, [block_stats(X[s], y[s], w[s]) for s in chunks])
    return X, y, w, chunks, stats


def numpy_evaluator(X, y, w, chunks, log=None):
    """A fake engine: every request summed over the chunks in order, as the tasks do."""

    def evaluate(requests):
        if log is not None:
            log.append(len(requests))
        per_chunk = [loss_gradient_sums_many(requests, X[s], y[s], w[s]) for s in chunks]
        return reduce(merge_each, per_chunk)

    return evaluate


def sequential_pass(loss, X, y, w, chunks):
    def data_pass(coef, intercept, extra=None, with_hessian=False, sample=None):
        return reduce(merge, [loss_gradient_sums(loss, X[s], y[s], w[s], coef, intercept, extra,
                                                 with_hessian=with_hessian) for s in chunks])

    return data_pass


SETTINGS = [
    dict(reg_param=0.0, max_iter=30),
    dict(reg_param=0.1, elastic_net_param=0.5, max_iter=40),
    dict(reg_param=0.01, max_iter=3),  # finishes early
    dict(reg_param=0.05, optimizer="newton", max_iter=10),
    dict(reg_param=0.05, optimizer="gd", max_iter=15, fit_intercept=False),
    dict(reg_param=1.0, max_iter=0),  # no iteration: one pass at most
]


def _batched_fit(loss, stats, kwargs, fail_after=None):
    def fit(request):
        data_pass = BatchedModelPass(request, loss)
        calls = {"n": 0}

        def counted(*args, **kw):
            calls["n"] += 1
            if fail_after is not None and calls["n"] > fail_after:
                raise RuntimeError(f"model failed after {fail_after} passes")
            return data_pass(*args, **kw)

        return fit_glm(counted, stats, loss=loss, **kwargs)

    return fit


def _assert_same_fit(got, want):
    np.testing.assert_array_equal(got.coef, want.coef)
    np.testing.assert_array_equal(got.intercept, want.intercept)
    np.testing.assert_array_equal(got.extra, want.extra)
    assert got.result.history == want.result.history
    assert got.result.n_iter == want.result.n_iter


@pytest.mark.parametrize("kind", ["logistic", "huber"])
def test_batched_fits_equal_sequential_fits(kind):
    X, y, w, chunks, stats = chunked_data(kind="logistic" if kind == "logistic" else "real")
    loss = LOSSES["logistic"] if kind == "logistic" else HUBER
    jobs = []
    batcher = PassBatcher(numpy_evaluator(X, y, w, chunks, jobs))
    outcomes = run_with_deadline(
        lambda: batcher.run([_batched_fit(loss, stats, s) for s in SETTINGS]))
    passes = []
    for outcome, kwargs in zip(outcomes, SETTINGS):
        calls = {"n": 0}
        plain = sequential_pass(loss, X, y, w, chunks)

        def counting(*args, **kw):
            calls["n"] += 1
            return plain(*args, **kw)

        want = fit_glm(counting, stats, loss=loss, **kwargs)
        _assert_same_fit(outcome.result(), want)
        assert outcome.passes == calls["n"]
        passes.append(calls["n"])
    # One job a round: as many jobs as the longest fit took passes, not their sum.
    assert batcher.jobs == max(passes) == len(jobs)
    assert sum(jobs) == sum(passes)


def test_requests_reach_the_evaluator_in_model_order():
    X, y, w, chunks, stats = chunked_data()
    seen = []
    evaluate = numpy_evaluator(X, y, w, chunks)

    def recording(requests):
        seen.append([float(r.intercept[0]) for r in requests])
        return evaluate(requests)

    def fit_at(offset):
        def fit(request):
            data_pass = BatchedModelPass(request, LOSSES["logistic"])
            for i in range(3 + offset):
                data_pass(np.zeros((X.shape[1], 1)), np.array([float(offset)]))
            return offset

        return fit

    outcomes = run_with_deadline(lambda: PassBatcher(recording).run([fit_at(k) for k in range(5)]))
    assert [o.result() for o in outcomes] == list(range(5))
    assert all(batch == sorted(batch) for batch in seen)
    assert [len(b) for b in seen] == [5, 5, 5, 4, 3, 2, 1]


def test_failing_models_leave_the_batch_without_blocking_the_others():
    X, y, w, chunks, stats = chunked_data()
    loss = LOSSES["logistic"]
    batcher = PassBatcher(numpy_evaluator(X, y, w, chunks))

    def fails_at_once(request):
        raise ValueError("bad map")

    fits = [_batched_fit(loss, stats, SETTINGS[0]), fails_at_once,
            _batched_fit(loss, stats, SETTINGS[1], fail_after=4),
            _batched_fit(loss, stats, SETTINGS[2])]
    outcomes = run_with_deadline(lambda: batcher.run(fits))
    with pytest.raises(ValueError, match="bad map"):
        outcomes[1].result()
    with pytest.raises(RuntimeError, match="after 4 passes"):
        outcomes[2].result()
    assert outcomes[1].passes == 0 and outcomes[2].passes == 4
    for i, kwargs in ((0, SETTINGS[0]), (3, SETTINGS[2])):
        want = fit_glm(sequential_pass(loss, X, y, w, chunks), stats, loss=loss, **kwargs)
        _assert_same_fit(outcomes[i].result(), want)


def test_a_failed_job_fails_the_models_in_it_only():
    X, y, w, chunks, stats = chunked_data()
    evaluate = numpy_evaluator(X, y, w, chunks)
    calls = {"n": 0}

    def flaky(requests):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("executor lost")
        return evaluate(requests)

    def passes(n):
        def fit(request):
            data_pass = BatchedModelPass(request, LOSSES["logistic"])
            for _ in range(n):
                data_pass(np.zeros((X.shape[1], 1)), np.zeros(1))
            return n

        return fit

    outcomes = run_with_deadline(lambda: PassBatcher(flaky).run([passes(2), passes(5),
                                                                 passes(6)]))
    assert outcomes[0].result() == 2  # finished before the failed third job
    for outcome in outcomes[1:]:
        with pytest.raises(OSError, match="executor lost"):
            outcome.result()


def test_an_interrupt_in_the_coordinator_releases_the_threads():
    X, y, w, chunks, stats = chunked_data()
    released = []

    def interrupted(requests):
        raise KeyboardInterrupt

    def fit(request):
        try:
            BatchedModelPass(request, LOSSES["logistic"])(np.zeros((X.shape[1], 1)), np.zeros(1))
        except BatchAborted:
            released.append(True)
            raise

    batcher = PassBatcher(interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_with_deadline(lambda: batcher.run([fit, fit, fit]))
    assert released == [True, True, True]


def test_mini_batches_are_refused():
    model_pass = BatchedModelPass(lambda payload: payload, LOSSES["logistic"])
    with pytest.raises(ValueError, match="mini-batches"):
        model_pass(np.zeros((2, 1)), np.zeros(1), sample=(0.5, 0, 1))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.one_of(st.integers(0, 6), st.just(-1)), min_size=1, max_size=6),
       st.lists(st.integers(0, 6), min_size=0, max_size=6))
def test_any_mix_of_lengths_and_failures_ends_with_sequential_answers(lengths, raise_at):
    """Property: each model gets exactly the answers a sequential evaluation gives, whatever
    round the others finish or fail in (-1: fails before its first request)."""

    def evaluate(requests):
        return [r * 10 + 1 for r in requests]

    def model(index, n):
        def fit(request):
            if n < 0:
                raise ValueError(f"model {index} refused")
            answers = []
            for step in range(n):
                if index < len(raise_at) and raise_at[index] == step and step > 0:
                    raise RuntimeError(f"model {index} failed at {step}")
                answers.append(request(index * 100 + step))
            return answers

        return fit

    batcher = PassBatcher(evaluate)
    outcomes = run_with_deadline(lambda: batcher.run([model(i, n) for i, n in
                                                      enumerate(lengths)]), 10)
    for index, (n, outcome) in enumerate(zip(lengths, outcomes)):
        fails = index < len(raise_at) and 0 < raise_at[index] < n
        if n < 0 or fails:
            assert outcome.error is not None
            continue
        assert outcome.result() == [(index * 100 + s) * 10 + 1 for s in range(n)]
        assert outcome.passes == n
    assert batcher.jobs == max([o.passes for o in outcomes] + [0])
