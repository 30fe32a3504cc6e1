"""Checkpoint and resume: a killed fit re-run with the same arguments ends identical."""

import os

import numpy as np
import pandas as pd
import pytest

from sparkml_aiaas.core.checkpoint import FileCheckpoint
from sparkml_aiaas.core.optimizers import minimize_objective
from sparkml_aiaas.core.regularizers import ElasticNet
from sparkml_aiaas.errors import SparkmlAiaasError


def _logistic(X, y, reg):
    def fun(theta):
        m = X @ theta[:-1] + theta[-1]
        p = 1 / (1 + np.exp(-m))
        value = np.mean(np.logaddexp(0, m) - y * m) + 0.5 * reg * theta[:-1] @ theta[:-1]
        r = (p - y) / len(y)
        return value, np.append(X.T @ r + reg * theta[:-1], r.sum())
    return fun


class Killed(Exception):
    pass


@pytest.mark.parametrize("optimizer, l1", [("lbfgs", 0.0), ("lbfgs", 0.02), ("gd", 0.02),
                                           ("newton", 0.0)])
def test_resume_is_bit_identical(tmp_path, optimizer, l1):
    rng = np.random.default_rng(4)
    X = rng.normal(size=(300, 5))
    y = (rng.uniform(size=300) < 1 / (1 + np.exp(-X @ [1, -1, 0.5, 0, 0]))).astype(float)
    fun = _logistic(X, y, 0.01)

    def fun_hess(theta):
        value, grad = fun(theta)
        m = X @ theta[:-1] + theta[-1]
        p = 1 / (1 + np.exp(-m))
        Xa = np.column_stack([X, np.ones(len(y))])
        H = (Xa * (p * (1 - p))[:, None]).T @ Xa / len(y)
        H[:-1, :-1] += 0.01 * np.eye(5)
        return value, grad, H

    penalty = ElasticNet(np.zeros(6), np.append(np.full(5, l1), 0.0))
    args = dict(penalty=penalty, max_iter=40, tol=1e-14, step_size=1.0,
                fun_hess=fun_hess if optimizer == "newton" else None)
    reference = minimize_objective(optimizer, fun, np.zeros(6), **args)

    checkpoint = FileCheckpoint(str(tmp_path), "fit", interval=2)
    calls = {"n": 0}

    def dying(theta):
        calls["n"] += 1
        if calls["n"] == 6:
            raise Killed()
        return fun(theta)

    with pytest.raises(Killed):
        minimize_objective(optimizer, dying, np.zeros(6), checkpoint=checkpoint,
                           **{**args, "fun_hess": (lambda t: (dying(t), fun_hess(t))[1])
                              if optimizer == "newton" else None})
    assert os.path.exists(checkpoint.path)  # the last complete checkpoint survived the crash
    resumed = minimize_objective(optimizer, fun, np.zeros(6),
                                 checkpoint=FileCheckpoint(str(tmp_path), "fit", interval=2),
                                 **args)
    np.testing.assert_array_equal(resumed.x, reference.x)
    assert resumed.history == reference.history
    assert resumed.n_iter == reference.n_iter
    assert not os.path.exists(checkpoint.path)  # a completed fit removes its checkpoint


def test_checkpoint_errors(tmp_path):
    with pytest.raises(SparkmlAiaasError, match="checkpointInterval must be >= 1"):
        FileCheckpoint(str(tmp_path), "k", interval=0)
    with pytest.raises(SparkmlAiaasError, match="only local or mounted paths"):
        FileCheckpoint("s3://bucket/ckpt", "k")
    broken = FileCheckpoint(str(tmp_path), "k")
    with open(broken.path, "wb") as f:
        f.write(b"not a zip")
    with pytest.raises(SparkmlAiaasError, match="unreadable"):
        broken.load()


def test_estimator_resumes_after_a_killed_fit(spark, tmp_path, monkeypatch):
    from sparkml_aiaas.engine import loop
    from sparkml_aiaas.models import LogisticRegression

    rng = np.random.default_rng(9)
    pdf = pd.DataFrame(rng.normal(size=(400, 4)), columns=["a", "b", "c", "d"])
    pdf["label"] = (pdf.a - pdf.b + rng.normal(size=400) > 0).astype(float)
    df = spark.createDataFrame(pdf).cache()
    params = dict(featuresCols=["a", "b", "c", "d"], regParam=0.01, tol=1e-12, maxIter=60)
    reference = LogisticRegression(**params).fit(df)

    ckpt = str(tmp_path / "ckpt")
    original_call = loop.DistributedDataPass.__call__
    passes = {"n": 0}

    def dying_call(self, *args, **kwargs):
        passes["n"] += 1
        if passes["n"] == 8:
            raise KeyboardInterrupt("killed")
        return original_call(self, *args, **kwargs)

    monkeypatch.setattr(loop.DistributedDataPass, "__call__", dying_call)
    with pytest.raises(KeyboardInterrupt):
        LogisticRegression(checkpointDir=ckpt, checkpointInterval=2, **params).fit(df)
    monkeypatch.setattr(loop.DistributedDataPass, "__call__", original_call)
    assert len(os.listdir(ckpt)) == 1

    resumed = LogisticRegression(checkpointDir=ckpt, checkpointInterval=2, **params).fit(df)
    np.testing.assert_array_equal(resumed.coefficients, reference.coefficients)
    assert resumed.intercept == reference.intercept
    assert resumed.summary.objectiveHistory == reference.summary.objectiveHistory
    assert resumed.summary.numPasses < reference.summary.numPasses  # it really resumed
    assert os.listdir(ckpt) == []


def test_progress_bar_only_on_a_terminal(monkeypatch):
    from sparkml_aiaas.engine.progress import progress_bar

    monkeypatch.delenv("SPARKML_AIAAS_PROGRESS", raising=False)
    assert progress_bar("fit", 10) is None  # pytest's stderr is not a terminal
    monkeypatch.setenv("SPARKML_AIAAS_PROGRESS", "1")
    bar = progress_bar("fit", 10)
    bar.update(3)
    assert bar.n == 3 and bar.total == 10
    bar.close()
    monkeypatch.setenv("SPARKML_AIAAS_PROGRESS", "0")
    assert progress_bar("fit", 10) is None
