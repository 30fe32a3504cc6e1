"""In-process cost of one prediction call: predict_columns (the serving fast path) vs
predict(pandas frame), for a 30-feature binary logistic regression.

    python bench/bench_serving_predictor.py              # 10 000 calls per figure
    python bench/bench_serving_predictor.py --calls 2000

Prints µs per call and per record for batches of 1, 10, 100 and 1000 records (the median
of ``--repeats`` timeit runs), and for the multinomial kind (4 classes).  Target: one
record of the binary model ≤ 50 µs through predict_columns.  No Spark.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import timeit

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from sparkml_aiaas.models.predictor import LinearPredictor  # noqa: E402

FEATURES = 30


def per_call(fn, calls: int, repeats: int) -> float:
    """Median seconds per call over ``repeats`` runs of ``calls`` calls."""
    return statistics.median(t / calls for t in timeit.repeat(fn, number=calls, repeat=repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    cols = [f"f{i}" for i in range(FEATURES)]
    models = {
        "binary": LinearPredictor("binary_logistic", rng.normal(size=FEATURES), 0.1,
                                  feature_cols=cols),
        "multinomial(4)": LinearPredictor("multinomial_logistic",
                                          rng.normal(size=(FEATURES, 4)), rng.normal(size=4),
                                          feature_cols=cols),
    }
    print(f"{'model':<16}{'records':>8}{'path':>18}{'µs/call':>12}{'µs/record':>12}")
    for label, predictor in models.items():
        for n in (1, 10, 100, 1000):
            columns = {c: rng.normal(size=n) for c in cols}
            frame = pd.DataFrame(columns)
            calls = max(10, args.calls // max(1, n // 10))
            paths = {"predict_columns": lambda: predictor.predict_columns(columns),
                     "predict(frame)": lambda: predictor.predict(frame)}
            for path, fn in paths.items():
                fn()
                seconds = per_call(fn, calls if path == "predict_columns" else calls // 10,
                                   args.repeats)
                print(f"{label:<16}{n:>8}{path:>18}{seconds * 1e6:>12.1f}"
                      f"{seconds * 1e6 / n:>12.2f}")


if __name__ == "__main__":
    main()
