"""Seed sweep of the torch estimators' *default* params on small scikit-learn data sets.

    python scripts/torch_defaults_sweep.py                    # every case, seeds 0..4
    python scripts/torch_defaults_sweep.py --seeds 0 1 --cases digits-cnn
    python scripts/torch_defaults_sweep.py --set stepSize=0.01 --set batchSize=32

Each case splits its data set 75/25 with ``train_test_split(stratify=y,
random_state=seed)`` (regression: not stratified), fits ``TorchClassifier`` /
``TorchRegressor`` with only what the case needs (architecture, inputShape,
numClasses) plus ``seed`` and any ``--set`` overrides, and prints one row per (case,
seed): test accuracy (R² for regression), epochs, training Spark jobs, why it stopped and
wall seconds of the fit, then the minimum over seeds.  ``--sklearn`` adds scikit-learn's
``MLPClassifier``/``MLPRegressor`` with defaults on standardized features for comparison.
The features are the raw scikit-learn arrays (digits: pixel counts 0…16).

The same sweep runs as a test with ``SPARKML_AIAAS_TORCH_SWEEP=1 pytest
tests/test_torch_defaults.py -k sweep`` (docs/torch.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

#: case -> (data set, estimator params besides the defaults)
CASES = {
    "digits-cnn": ("digits", {"architecture": "cnn", "inputShape": [1, 8, 8], "numClasses": 10}),
    "digits-mlp": ("digits", {"architecture": "mlp"}),
    "breast_cancer-mlp": ("breast_cancer", {"architecture": "mlp"}),
    "diabetes-mlp": ("diabetes", {"architecture": "mlp"}),
    "friedman1-mlp": ("friedman1", {"architecture": "mlp"}),
}
REGRESSION = ("diabetes", "friedman1")


def load(name: str):
    from sklearn import datasets

    if name == "friedman1":  # 2,000 rows, 10 features (5 informative), noise σ = 1
        X, y = datasets.make_friedman1(n_samples=2000, noise=1.0, random_state=0)
        return X, y
    data = getattr(datasets, f"load_{name}")()
    return data.data.astype(np.float64), data.target.astype(np.float64)


def split(name: str, seed: int, digits_divide: float = 1.0):
    from sklearn.model_selection import train_test_split

    X, y = load(name)
    if name == "digits":
        X = X / digits_divide
    stratify = None if name in REGRESSION else y
    return train_test_split(X, y, test_size=0.25, stratify=stratify, random_state=seed)


def frame(spark, X, y):
    return spark.createDataFrame(pd.DataFrame({"features": [r.tolist() for r in X], "label": y}))


def run_case(spark, case: str, seed: int, overrides, digits_divide: float = 1.0) -> dict:
    from sparkml_aiaas.models import TorchClassifier, TorchRegressor

    dataset, params = CASES[case]
    Xtr, Xte, ytr, yte = split(dataset, seed, digits_divide)
    train, test = frame(spark, Xtr, ytr).cache(), frame(spark, Xte, yte)
    train.count()
    cls = TorchRegressor if dataset in REGRESSION else TorchClassifier
    started = time.perf_counter()
    model = cls(**params, seed=seed, **overrides).fit(train)
    seconds = time.perf_counter() - started
    pred = model.transform(test).select("label", "prediction").toPandas()
    train.unpersist()
    if dataset in REGRESSION:
        score = 1 - np.mean((pred["prediction"] - pred["label"]) ** 2) / np.var(pred["label"])
    else:
        score = float((pred["prediction"] == pred["label"]).mean())
    s = model.summary
    return {"case": case, "seed": seed, "score": float(score), "epochs": s.epochs,
            "jobs": s.numJobs, "stop": getattr(s, "stopReason", "-"), "seconds": seconds}


def run_sklearn(case: str, seed: int) -> dict:
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.preprocessing import StandardScaler

    dataset, _ = CASES[case]
    Xtr, Xte, ytr, yte = split(dataset, seed)
    scaler = StandardScaler().fit(Xtr)
    regression = dataset in REGRESSION
    if regression:  # standardized label too (raw labels: R² < 0 on diabetes, not converged)
        from sklearn.compose import TransformedTargetRegressor

        model = TransformedTargetRegressor(MLPRegressor(random_state=seed),
                                           transformer=StandardScaler())
    else:
        model = MLPClassifier(random_state=seed)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(scaler.transform(Xtr), ytr)
    seconds = time.perf_counter() - started
    score = model.score(scaler.transform(Xte), yte)
    model = model.regressor_ if regression else model
    return {"case": f"sklearn {case}", "seed": seed, "score": float(score),
            "epochs": model.n_iter_, "jobs": 0,
            "stop": "maxEpochs" if model.n_iter_ >= model.max_iter else "converged",
            "seconds": seconds}


def parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--set", action="append", default=[], metavar="PARAM=VALUE",
                        help="override a param (JSON value), e.g. --set stepSize=0.01")
    parser.add_argument("--sklearn", action="store_true", help="also run scikit-learn's MLP")
    parser.add_argument("--digits-divide", type=float, default=1.0,
                        help="divide the digits pixels by this (16: values in [0, 1])")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    overrides = dict(item.split("=", 1) for item in args.set)
    overrides = {k: parse_value(v) for k, v in overrides.items()}

    from sparkml_aiaas.session import get_spark

    spark = get_spark("torch-defaults-sweep", master="local[2]")
    spark.sparkContext.setLogLevel("ERROR")
    rows = []
    print(f"{'case':28s} {'seed':>4s} {'score':>7s} {'epochs':>6s} {'jobs':>5s} "
          f"{'stop':>12s} {'seconds':>8s}", flush=True)
    for case in args.cases:
        for seed in args.seeds:
            runs = [run_case(spark, case, seed, overrides, args.digits_divide)]
            if args.sklearn:
                runs.append(run_sklearn(case, seed))
            for r in runs:
                rows.append(r)
                print(f"{r['case']:28s} {r['seed']:4d} {r['score']:7.4f} {r['epochs']:6d} "
                      f"{r['jobs']:5d} {r['stop']:>12s} {r['seconds']:8.2f}", flush=True)
    table = pd.DataFrame(rows)
    print()
    print(table.groupby("case").agg(min_score=("score", "min"), mean_score=("score", "mean"),
                                    mean_epochs=("epochs", "mean"), mean_jobs=("jobs", "mean"),
                                    mean_seconds=("seconds", "mean")).to_string())
    if args.json:
        table.to_json(args.json, orient="records", indent=1)
    spark.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
