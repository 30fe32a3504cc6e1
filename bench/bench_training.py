"""Training benchmark: our engine vs single-process numpy vs pyspark.ml (and scikit-learn).

    python bench/bench_training.py            # the issue's sizes: 8M×50 and 2M×50 passes, 1M×50 solve
    python bench/bench_training.py --quick    # small sizes, a smoke run
    python bench/bench_training.py --connect  # + a Spark Connect column, in the same run

(a) One gradient pass of dense logistic regression, float64: our pass (broadcast →
    resident blocks → ordered tree reduce) vs numpy computing the same gradient in one
    process over the whole array vs one pyspark.ml LogisticRegression iteration.
(b) Time to solution of L2 logistic regression (tol 1e-9): our fit vs pyspark.ml vs
    scikit-learn, with the final objectives compared on the same formula.

Everything runs in one process and one Spark session (local[2] by default) so the ratios
compare like with like on a noisy machine.  Timings are medians of repeated runs.

With ``--connect`` a Spark Connect server (pip's pyspark, the same master) starts beside the
classic session, and (a) and (b) also run from a Connect client over the same Parquet files;
(c) times a pass over a few rows on both, i.e. a pass's overhead without its compute.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

SEED = 7


def block_data(partition: int, rows: int, d: int):
    """Rows of partition ``partition``: the same numbers in numpy and in Spark."""
    rng = np.random.default_rng([SEED, partition])
    X = rng.standard_normal((rows, d))
    true_coef = np.random.default_rng(SEED).standard_normal(d) / np.sqrt(d)
    p = 1.0 / (1.0 + np.exp(-(X @ true_coef)))
    y = (rng.random(rows) < p).astype(np.float64)
    return X, y


def partition_rows(n: int, partitions: int):
    base, extra = divmod(n, partitions)
    return [base + (1 if i < extra else 0) for i in range(partitions)]


def numpy_data(n: int, d: int, partitions: int):
    parts = [block_data(i, r, d) for i, r in enumerate(partition_rows(n, partitions))]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def spark_data(spark, n: int, d: int, partitions: int, data_dir: str):
    """The same rows as a Parquet-backed DataFrame (x0..x{d-1}, label), as training data
    usually arrives: generated on the executors and written once, outside every timing."""
    import pyarrow as pa

    sizes = partition_rows(n, partitions)
    columns = [f"x{j}" for j in range(d)]
    path = os.path.join(data_dir, f"logistic_{n}x{d}_{partitions}p_seed{SEED}.parquet")
    if not os.path.exists(os.path.join(path, "_SUCCESS")):
        # The generator below is this module's: ship it, or a worker imported as
        # bench_training (from bench_user_paths) cannot unpickle it.
        spark.sparkContext.addPyFile(os.path.abspath(__file__))

        def generate(batches):
            for batch in batches:
                for partition in batch.column(0).to_pylist():
                    X, y = block_data(partition, sizes[partition], d)
                    for start in range(0, X.shape[0], 100_000):
                        stop = start + 100_000
                        arrays = [pa.array(X[start:stop, j]) for j in range(d)]
                        arrays.append(pa.array(y[start:stop]))
                        yield pa.RecordBatch.from_arrays(arrays, names=columns + ["label"])

        schema = ", ".join(f"{c} double" for c in columns) + ", label double"
        seeds = spark.range(0, partitions, numPartitions=partitions).selectExpr("cast(id as int) p")
        seeds.mapInArrow(generate, schema).write.mode("overwrite").parquet(path)
    return spark.read.parquet(path), columns


def vectors(df, columns):
    """pyspark.ml's input: one vector column over the same (uncached) Parquet data.

    Uncached on purpose: MLlib then persists its own instances once.  On a
    cached input it persists nothing and re-runs its per-row validation (an
    interpreted ``exists`` over every element in pyspark 4.2) in every
    iteration, which would be unfair to it.  ``array_to_vector`` rather than
    ``VectorAssembler`` for the same reason (our estimators read the numeric
    columns directly).
    """
    from pyspark.ml.functions import array_to_vector
    from pyspark.sql import functions as F

    return df.select(array_to_vector(F.array(*columns)).alias("features"), "label")


def spark_job_seconds(spark, group: str, name_contains: str):
    """Durations of the finished jobs of ``group`` whose name contains ``name_contains``,
    in job order, from the Spark UI's REST API (submission to completion)."""
    import json
    from datetime import datetime
    from urllib.request import urlopen

    sc = spark.sparkContext
    url = f"{sc.uiWebUrl}/api/v1/applications/{sc.applicationId}/jobs?status=succeeded"
    with urlopen(url) as response:
        jobs = json.load(response)

    def parse(stamp: str) -> datetime:
        return datetime.strptime(stamp.replace("GMT", "+0000"), "%Y-%m-%dT%H:%M:%S.%f%z")

    chosen = sorted((j for j in jobs if j.get("jobGroup") == group
                     and name_contains in j.get("name", "")), key=lambda j: j["jobId"])
    return [(parse(j["completionTime"]) - parse(j["submissionTime"])).total_seconds()
            for j in chosen]


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_our_pass(session, df, columns, partitions: int, repeats: int, coef, intercept,
                  dtype: str = "float64"):
    """Median seconds of our pass over ``df``'s blocks, and one pass's sums."""
    from sparkml_aiaas.engine import DistributedDataPass, FeatureSpec, ResidentBlocks

    with ResidentBlocks.build(df, FeatureSpec(columns=columns), "label",
                              num_partitions=partitions, block_dtype=dtype) as blocks:
        data_pass = DistributedDataPass(blocks, "logistic")
        data_pass(coef, intercept)  # warm up: Python workers, page cache
        seconds = median_time(lambda: data_pass(coef, intercept), repeats)
        return seconds, data_pass(coef, intercept)


class ConnectSide:
    """A Spark Connect server and a client session on it, for the Connect column."""

    def __init__(self, master: str, partitions: int, log_dir: str):
        from sparkml_aiaas.cluster.connect_server import ConnectServer

        self.server = ConnectServer(log_dir, master=master, driver_memory="6g", conf={
            "spark.sql.shuffle.partitions": str(partitions),
            "spark.default.parallelism": str(partitions),
            "spark.sql.execution.arrow.maxRecordsPerBatch": "100000"}).start()
        from pyspark.sql.connect.session import SparkSession as RemoteSparkSession

        self.session = RemoteSparkSession.builder.remote(self.server.url).getOrCreate()

    def __enter__(self):
        # Connect mode only while measuring: the classic session shares this process.
        os.environ["SPARK_CONNECT_MODE_ENABLED"] = "1"
        return self.session

    def __exit__(self, *exc):
        os.environ.pop("SPARK_CONNECT_MODE_ENABLED", None)

    def stop(self):
        self.session.stop()
        self.server.stop()


def bench_connect_pass(side, spark, n, d, partitions, repeats, data_dir):
    """Our pass from the classic session and from the Connect client over the same Parquet
    rows, interleaved (pass for pass, so that both see the same machine): the two medians
    and the Connect pass's sums."""
    from sparkml_aiaas.engine import DistributedDataPass, FeatureSpec, ResidentBlocks

    _, columns = spark_data(spark, n, d, partitions, data_dir)  # written by the classic side
    path = os.path.join(data_dir, f"logistic_{n}x{d}_{partitions}p_seed{SEED}.parquet")
    coef, intercept = np.full((d, 1), 0.01), np.zeros(1)
    spec = FeatureSpec(columns=columns)
    with ResidentBlocks.build(spark.read.parquet(path), spec, "label",
                              num_partitions=partitions) as classic_blocks:
        with side as session:
            remote_blocks = ResidentBlocks.build(session.read.parquet(path), spec, "label",
                                                 num_partitions=partitions)
        try:
            classic_pass = DistributedDataPass(classic_blocks, "logistic")
            remote_pass = DistributedDataPass(remote_blocks, "logistic")
            times = {"classic": [], "connect": []}
            for i in range(repeats * 2 + 1):  # the first round warms both up
                start = time.perf_counter()
                classic_pass(coef, intercept)
                if i:
                    times["classic"].append(time.perf_counter() - start)
                with side:
                    start = time.perf_counter()
                    sums = remote_pass(coef, intercept)
                    if i:
                        times["connect"].append(time.perf_counter() - start)
        finally:
            with side:
                remote_blocks.cleanup()
    return float(np.median(times["classic"])), float(np.median(times["connect"])), sums


def bench_overhead(spark, side, partitions: int, repeats: int):
    """A pass over 2,000 rows × 5 (its compute is microseconds): classic and Connect seconds."""
    import pandas as pd

    rng = np.random.default_rng(0)
    pdf = pd.DataFrame(rng.normal(size=(2000, 5)), columns=[f"x{j}" for j in range(5)])
    pdf["label"] = (pdf.x0 > 0).astype(float)
    columns = [f"x{j}" for j in range(5)]
    coef, intercept = np.full((5, 1), 0.01), np.zeros(1)
    classic = time_our_pass(spark, spark.createDataFrame(pdf).cache(), columns, partitions,
                            repeats * 4, coef, intercept)[0]
    with side as session:
        connect = time_our_pass(session, session.createDataFrame(pdf), columns, partitions,
                                repeats * 4, coef, intercept)[0]
    return classic, connect


def bench_pass(spark, n: int, d: int, partitions: int, repeats: int, mllib: bool, data_dir: str):
    from pyspark.ml.classification import LogisticRegression as SparkLR

    coef = np.full((d, 1), 0.01)
    intercept = np.zeros(1)

    def numpy_gradient(X, y):
        """The peer: the same loss and gradient in one process, plain numpy on the whole array."""
        margin = X @ coef[:, 0] + intercept[0]
        loss = float(np.sum(np.logaddexp(0.0, margin) - y * margin))
        residual = 1.0 / (1.0 + np.exp(-margin)) - y
        return loss, np.append(X.T @ residual, residual.sum())

    def time_numpy():
        data = numpy_data(n, d, partitions)
        numpy_gradient(*data)  # warm up
        return median_time(lambda: numpy_gradient(*data), repeats), numpy_gradient(*data)

    t_numpy, reference = time_numpy()  # the array is freed before Spark's turn
    gc.collect()

    df, columns = spark_data(spark, n, d, partitions, data_dir)
    t_ours, ours = time_our_pass(spark, df, columns, partitions, repeats, coef, intercept)
    assert np.allclose(ours.grad, reference[1], rtol=1e-9, atol=1e-6), "gradients differ"
    assert np.isclose(ours.loss, reference[0], rtol=1e-9), "losses differ"
    # The same pass over float32 blocks (half the bytes per pass; arithmetic still float64).
    t_ours_f32, ours = time_our_pass(spark, df, columns, partitions, repeats, coef, intercept,
                                     "float32")
    assert np.allclose(ours.grad, reference[1], rtol=1e-4, atol=1e-2), "float32 gradients differ"

    t_mllib = float("nan")
    if mllib:
        # One MLlib pass = one treeAggregate job.  Its first job also extracts, validates
        # and caches the instances (minutes at 8M rows), so subtracting whole-fit times
        # would drown the passes in that noise; the UI's REST API times each job instead.
        sc = spark.sparkContext
        group = f"bench-mllib-pass-{n}"
        sc.setJobGroup(group, "pyspark.ml passes")
        try:
            SparkLR(maxIter=6, tol=0.0, regParam=0.0, standardization=False).fit(
                vectors(df, columns))
        finally:
            sc.setJobGroup(None, None)  # type: ignore[arg-type]
        durations = spark_job_seconds(spark, group, "treeAggregate")
        t_mllib = statistics.median(durations[1:]) if len(durations) > 1 else float("nan")
    return t_ours, t_ours_f32, t_numpy, t_mllib


def logistic_objective(X, y, coef, intercept, reg):
    margin = X @ coef + intercept
    return float(np.mean(np.logaddexp(0.0, margin) - y * margin) + 0.5 * reg * coef @ coef)


def our_fit(session, df, columns, reg, optimizer, partitions):
    from sparkml_aiaas.models import LogisticRegression

    start = time.perf_counter()
    model = LogisticRegression(featuresCols=columns, regParam=reg, standardization=False,
                               tol=1e-9, maxIter=1000, optimizer=optimizer,
                               numPartitions=partitions).fit(df)
    return time.perf_counter() - start, model


def bench_solve(spark, n: int, d: int, partitions: int, reg: float, optimizers, data_dir: str,
                mllib=True, side=None, repeats: int = 1):
    from pyspark.ml.classification import LogisticRegression as SparkLR
    from sklearn.linear_model import LogisticRegression as SkLR

    X, y = numpy_data(n, d, partitions)
    results = {}

    start = time.perf_counter()
    sk = SkLR(C=1.0 / (n * reg), tol=1e-9, max_iter=10_000).fit(X, y)
    results["scikit-learn lbfgs"] = (time.perf_counter() - start,
                                     logistic_objective(X, y, sk.coef_[0], sk.intercept_[0], reg))

    df, columns = spark_data(spark, n, d, partitions, data_dir)
    path = os.path.join(data_dir, f"logistic_{n}x{d}_{partitions}p_seed{SEED}.parquet")
    runs = [("ours", spark, lambda session: df)]
    if side is not None:
        # Like the classic side's DataFrame, created (and its schema analyzed) once, outside
        # the timings: a fresh read's file listing and footer are not the fit's.
        with side as session:
            connect_df = session.read.parquet(path)
            connect_df.schema
        runs.append(("Connect", side, lambda session: connect_df))
    times: dict = {}
    # Classic and Connect fits interleaved, `repeats` rounds, the median of each: on two
    # shared cores one run of either drifts by ±20%.
    for _ in range(repeats):
        for label, where, frame in runs:
            for optimizer in optimizers:
                if label == "Connect":
                    with where as session:
                        elapsed, model = our_fit(session, frame(session), columns, reg,
                                                 optimizer, partitions)
                else:
                    elapsed, model = our_fit(where, frame(where), columns, reg, optimizer,
                                             partitions)
                key = f"{label} {optimizer}"
                times.setdefault(key, []).append(elapsed)
                summary = model.summary
                if len(times[key]) == 1:
                    print(f"  {label} {optimizer}: blocks from {summary.blockSource} in "
                          f"{summary.blockBuildSeconds:.2f} s, then {summary.totalIterations} "
                          f"iterations, {summary.numPasses} passes", flush=True)
                results[key] = (float(np.median(times[key])), logistic_objective(
                    X, y, model.coefficients, model.intercept, reg))

    if mllib:
        assembled = vectors(df, columns)
        start = time.perf_counter()
        fitted = SparkLR(regParam=reg, standardization=False, tol=1e-9, maxIter=1000).fit(assembled)
        print(f"  pyspark.ml: {fitted.summary.totalIterations} iterations", flush=True)
        results["pyspark.ml"] = (time.perf_counter() - start, logistic_objective(
            X, y, fitted.coefficients.toArray(), fitted.intercept, reg))
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--partitions", type=int, default=2, help="partitions = tasks per pass")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--features", type=int, default=50)
    parser.add_argument("--pass-rows", type=int, nargs="+", default=[8_000_000, 2_000_000])
    parser.add_argument("--solve-rows", type=int, default=1_000_000)
    parser.add_argument("--reg", type=float, default=1e-4)
    parser.add_argument("--optimizers", nargs="+", default=["lbfgs"])
    parser.add_argument("--data-dir", default=os.path.join(tempfile.gettempdir(),
                                                           "sparkml_aiaas-bench-data"),
                        help="where the generated Parquet inputs are kept between runs")
    parser.add_argument("--connect", action="store_true",
                        help="also measure from a Spark Connect client (a server started here)")
    parser.add_argument("--skip-mllib", action="store_true",
                        help="leave pyspark.ml out of both measurements")
    args = parser.parse_args(argv)
    if args.quick:
        args.pass_rows, args.solve_rows, args.repeats = [200_000], 100_000, 3

    from sparkml_aiaas.session import get_spark

    spark = get_spark("sparkml_aiaas-bench", master=args.master, conf={
        "spark.driver.memory": "16g", "spark.sql.shuffle.partitions": str(args.partitions),
        "spark.sql.execution.arrow.maxRecordsPerBatch": "100000",
        "spark.ui.enabled": "true",  # its REST API times pyspark.ml's passes
    })
    d = args.features
    side = None
    if args.connect:
        side = ConnectSide(args.master, args.partitions,
                           tempfile.mkdtemp(prefix="bench-connect-"))
    print(f"# bench_training  master={args.master} partitions={args.partitions} "
          f"features={d} repeats={args.repeats}")
    print("\n## (a) one gradient pass, dense logistic, float64 (median seconds)")
    print(f"{'rows':>10} {'ours':>8} {'ours f32':>9} {'numpy':>8} {'pyspark.ml':>11} "
          f"{'ours/numpy':>11} {'pyspark.ml/ours':>16} {'pyspark.ml/ours f32':>20}")
    for n in args.pass_rows:
        t_ours, t_f32, t_numpy, t_mllib = bench_pass(spark, n, d, args.partitions, args.repeats,
                                              mllib=not args.skip_mllib, data_dir=args.data_dir)
        print(f"{n:>10,} {t_ours:8.3f} {t_f32:9.3f} {t_numpy:8.3f} {t_mllib:11.3f} "
              f"{t_ours / t_numpy:11.2f} {t_mllib / t_ours:16.1f} {t_mllib / t_f32:20.1f}",
              flush=True)
        if side is not None:
            t_classic, t_connect, sums = bench_connect_pass(side, spark, n, d, args.partitions,
                                                            args.repeats, args.data_dir)
            print(f"{'':>10} Connect pass {t_connect:.3f} s = {t_connect / t_classic:.2f}x "
                  f"classic ({t_classic:.3f} s, interleaved with it)", flush=True)

    print(f"\n## (b) time to solution, L2 logistic (regParam {args.reg:g}, tol 1e-9), "
          f"{args.solve_rows:,}×{d}")
    results = bench_solve(spark, args.solve_rows, d, args.partitions, args.reg, args.optimizers,
                          args.data_dir, mllib=not args.skip_mllib, side=side,
                          repeats=args.repeats)
    best_ours = min(v[0] for k, v in results.items() if k.startswith("ours"))
    t_sk = results["scikit-learn lbfgs"][0]
    t_ml = results.get("pyspark.ml", (float("nan"),))[0]
    print(f"{'solver':<22} {'seconds':>8} {'final objective':>18}")
    for name, (seconds, objective) in results.items():
        print(f"{name:<22} {seconds:8.2f} {objective:18.12f}")
    print(f"pyspark.ml / ours (best) = {t_ml / best_ours:.1f}x;  "
          f"ours (best) / scikit-learn = {best_ours / t_sk:.2f}x")
    if side is not None:
        for optimizer in args.optimizers:
            ratio = results[f"Connect {optimizer}"][0] / results[f"ours {optimizer}"][0]
            print(f"Connect / classic ({optimizer}) = {ratio:.2f}x")
        classic, connect = bench_overhead(spark, side, args.partitions, args.repeats)
        print(f"\n## (c) pass overhead (2,000×5 rows): classic {classic * 1000:.0f} ms, "
              f"Connect {connect * 1000:.0f} ms, difference {(connect - classic) * 1000:+.0f} ms")
        side.stop()
    spark.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
