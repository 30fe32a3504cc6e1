"""Speed on the DataFrames users pass: fit from vector columns (cached or not) and Parquet,
``model.transform`` for every linear family, each beside pyspark.ml (and scikit-learn), with
the floor each figure cannot go below.

    python bench/bench_user_paths.py                      # the issue's sizes (~25 min)
    python bench/bench_user_paths.py --quick              # small sizes, a smoke run
    python bench/bench_user_paths.py --fit-rows 8000000 --skip-transform

What a pyspark.ml user does: assemble a vector column (often cached), ``fit``, then
``model.transform``.  Both sides get the same DataFrame and the same params (L2 logistic,
tol 1e-9, no standardization); the final objectives are compared on one formula in numpy.

Every timing is the median of ``--repeats`` runs after one untimed warm-up run of the
same call, which warms the JVM's JIT, the Python workers and, on this VM, the memory pages:
the first touch of a page the guest never used costs ~3 ms per MB here (400 MB of blocks:
~1.2 s), a cost that belongs to the machine, not to either library.  The warm-up's time is
printed too ("cold").

The floor printed beside each fit: reading the training set once from the JVM into Python
through Arrow (a ``mapInArrow`` that only counts rows), plus passes × the cost of a trivial
Spark job.  Beside each transform: a scan of the input into the noop sink.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench_training import SEED, logistic_objective, numpy_data, spark_data  # noqa: E402


def timed(fn, repeats: int):
    """(cold seconds, median warm seconds, last result)."""
    start = time.perf_counter()
    result = fn()
    cold = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return cold, statistics.median(times), result


def _count_rows(batches):
    import pyarrow as pa

    rows = 0
    for batch in batches:
        rows += batch.num_rows
    yield pa.RecordBatch.from_pydict({"rows": [rows]})


def read_once_seconds(frame, repeats: int) -> float:
    """The JVM → Arrow → Python cost of reading ``frame`` once (what any build pays)."""
    return timed(lambda: frame.mapInArrow(_count_rows, "rows long").collect(), repeats)[1]


def trivial_job_seconds(spark, partitions: int) -> float:
    rdd = spark.sparkContext.parallelize(range(partitions), partitions)
    rdd.count()
    return timed(lambda: rdd.map(lambda x: x).collect(), 10)[1]


def assembled(df, columns):
    from pyspark.ml.feature import VectorAssembler

    return VectorAssembler(inputCols=columns, outputCol="features").transform(df).select(
        "features", "label")


# ---------------------------------------------------------------------------------- fit


INPUTS = ("cached", "uncached", "parquet", "delta")


def delta_frame(spark, n, d, partitions, data_dir):
    """The same rows as a Delta table (written once with delta-rs, outside every timing),
    read as the package reads Delta (``data.delta.read_table``)."""
    import pyarrow.dataset as ds
    from deltalake import write_deltalake

    from sparkml_aiaas.data.delta import read_table

    source = os.path.join(data_dir, f"logistic_{n}x{d}_{partitions}p_seed{SEED}.parquet")
    path = source.replace(".parquet", ".delta")
    if not os.path.exists(os.path.join(path, "_delta_log")):
        write_deltalake(path, ds.dataset(source, format="parquet").to_table())
    return read_table(spark, path)


def bench_fit(spark, n, d, partitions, reg, repeats, data_dir, optimizers, mllib, sklearn,
              which=INPUTS):
    from pyspark.ml.classification import LogisticRegression as SparkLR
    from pyspark.ml.functions import vector_to_array

    from sparkml_aiaas.models import LogisticRegression

    df, columns = spark_data(spark, n, d, partitions, data_dir)
    X, y = numpy_data(n, d, partitions)  # the objectives are compared in numpy
    job = trivial_job_seconds(spark, partitions)
    print(f"\n## fit: L2 logistic, {n:,}×{d}, regParam {reg}, tol 1e-9, local[{partitions}]"
          f"  (a trivial Spark job: {job * 1000:.0f} ms)", flush=True)

    if sklearn:
        from sklearn.linear_model import LogisticRegression as SkLR

        def sk_fit():
            return SkLR(C=1.0 / (n * reg), tol=1e-9, max_iter=10_000).fit(X, y)

        cold, warm, sk = timed(sk_fit, repeats)
        sk_objective = logistic_objective(X, y, sk.coef_[0], sk.intercept_[0], reg)
        print(f"scikit-learn lbfgs (numpy in memory)   {warm:7.2f} s   objective "
              f"{sk_objective:.10f}", flush=True)

    cached = assembled(df, columns).cache()
    cached.count()
    inputs = {
        "cached vector DataFrame": (cached, {"featuresCol": "features"}),
        "uncached vector DataFrame (VectorAssembler over Parquet)":
            (assembled(df, columns), {"featuresCol": "features"}),
        "Parquet numeric columns (featuresCols)": (df, {"featuresCols": columns}),
    }
    if "delta" in which:
        inputs["Delta table numeric columns (featuresCols)"] = (
            delta_frame(spark, n, d, partitions, data_dir), {"featuresCols": columns})
    inputs = {label: value for key, (label, value) in zip(INPUTS, inputs.items())
              if key in which}
    rows = []
    for label, (frame, feature_params) in inputs.items():
        print(f"### {label}", flush=True)
        if "featuresCol" in feature_params:
            read = frame.select(vector_to_array("features").alias("f"), "label")
        else:
            read = frame.select(*columns, "label")
        floor_read = read_once_seconds(read, repeats)
        for optimizer in optimizers:
            def ours():
                return LogisticRegression(regParam=reg, standardization=False, tol=1e-9,
                                          maxIter=1000, optimizer=optimizer,
                                          **feature_params).fit(frame)

            cold, warm, model = timed(ours, repeats)
            s = model.summary
            objective = logistic_objective(X, y, model.coefficients, model.intercept, reg)
            floor = floor_read + s.numPasses * job
            print(f"ours {optimizer:7s} {warm:7.2f} s (cold {cold:5.2f})  build "
                  f"{s.blockBuildSeconds:5.2f} s from {s.blockSource}, {s.numPasses} passes;"
                  f" floor {floor:5.2f} s (read {floor_read:.2f} + {s.numPasses} jobs)  "
                  f"objective {objective:.10f}", flush=True)
            rows.append((label, f"ours {optimizer}", warm, cold, floor, objective))
        if mllib and "featuresCol" in feature_params:
            def theirs():
                return SparkLR(regParam=reg, standardization=False, tol=1e-9,
                               maxIter=1000).fit(frame)

            cold, warm, fitted = timed(theirs, repeats)
            objective = logistic_objective(X, y, fitted.coefficients.toArray(),
                                           fitted.intercept, reg)
            print(f"pyspark.ml      {warm:7.2f} s (cold {cold:5.2f})  "
                  f"{fitted.summary.totalIterations} iterations  objective {objective:.10f}",
                  flush=True)
            rows.append((label, "pyspark.ml", warm, cold, float("nan"), objective))
    cached.unpersist()
    print("\n| input | fitter | warm s | cold s | floor s | objective |")
    print("|---|---|---:|---:|---:|---:|")
    for label, who, warm, cold, floor, objective in rows:
        print(f"| {label} | {who} | {warm:.2f} | {cold:.2f} | {floor:.2f} | {objective:.10f} |")
    return rows


# ---------------------------------------------------------------------------- transform


def bench_transform(spark, n, d, partitions, repeats, data_dir, mllib):
    from pyspark.ml import classification as mc
    from pyspark.ml import regression as mr

    from sparkml_aiaas.models import LinearRegression, LinearSVC, LogisticRegression

    df, columns = spark_data(spark, n, d, partitions, data_dir)
    # Labels for every family from the same features (only the speed matters here).
    df = df.selectExpr("*", "CAST(CASE WHEN x0 + x1 < -0.5 THEN 0 WHEN x0 + x1 < 0.5 THEN 1 "
                       "ELSE 2 END AS DOUBLE) AS label3", "2 * x0 - x1 + x2 AS target")
    from pyspark.ml.feature import VectorAssembler

    vectors = VectorAssembler(inputCols=columns, outputCol="features").transform(df)
    sample = vectors.limit(50_000).cache()
    sample.count()

    def noop(frame):
        frame.write.format("noop").mode("overwrite").save()

    scan = timed(lambda: noop(df), repeats)[1]
    scan_vectors = timed(lambda: noop(vectors), repeats)[1]
    print(f"\n## transform: {n:,}×{d} Parquet → noop sink, local[{partitions}]  (floor: the "
          f"scan into the sink, {scan:.2f} s; with VectorAssembler {scan_vectors:.2f} s)",
          flush=True)
    families = {
        "binomial logistic": (LogisticRegression, mc.LogisticRegression, {"labelCol": "label"}),
        "multinomial logistic (3 classes)": (LogisticRegression, mc.LogisticRegression,
                                             {"labelCol": "label3"}),
        "linear regression": (LinearRegression, mr.LinearRegression, {"labelCol": "target"}),
        "linear SVC": (LinearSVC, mc.LinearSVC, {"labelCol": "label"}),
    }
    rows = []
    for family, (ours_cls, theirs_cls, params) in families.items():
        keep = [c for c in df.columns if c not in ("label", "label3", "target")]
        vector_input = vectors.select("features", *keep)
        ours_vector = ours_cls(maxIter=5, featuresCol="features", **params).fit(sample)
        ours_numeric = ours_cls(maxIter=5, featuresCols=columns, **params).fit(sample)
        cells = {
            "ours, numeric columns": lambda: noop(ours_numeric.transform(df.select(*keep))),
            "ours, vector column": lambda: noop(ours_vector.transform(vector_input)),
        }
        if mllib:
            theirs = theirs_cls(maxIter=5, **params).fit(sample)
            cells["pyspark.ml, vector column"] = lambda: noop(theirs.transform(vector_input))
        for who, fn in cells.items():
            cold, warm, _ = timed(fn, repeats)
            print(f"{family:34s} {who:28s} {warm:6.2f} s (cold {cold:5.2f})", flush=True)
            rows.append((family, who, warm, cold))
    sample.unpersist()
    print("\n| family | scorer | warm s | cold s |")
    print("|---|---|---:|---:|")
    for family, who, warm, cold in rows:
        print(f"| {family} | {who} | {warm:.2f} | {cold:.2f} |")
    return rows


# ------------------------------------------------------------------------------- tuning


def bench_tuning(spark, n, d, partitions, data_dir, folds=3, seed=11,
                 regs=(1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)):
    """Model selection, 3 folds × 6 regParam over ``n``×``d`` Parquet: pyspark.ml's
    CrossValidator over MLlib's LogisticRegression and over ours (whose ``fitMultiple``
    shares blocks and passes per fold), and ``sparkml_aiaas.tuning.CrossValidator`` (one
    block build for all folds, every fit in shared passes, one evaluation job)."""
    from pyspark.ml.classification import LogisticRegression as SparkLR
    from pyspark.ml.evaluation import BinaryClassificationEvaluator
    from pyspark.ml.tuning import CrossValidator as SparkCV
    from pyspark.ml.tuning import ParamGridBuilder

    from sparkml_aiaas.models import LogisticRegression
    from sparkml_aiaas.tuning import CrossValidator

    df, columns = spark_data(spark, n, d, partitions, data_dir)
    regs = list(regs)
    evaluator = BinaryClassificationEvaluator()
    print(f"\n## tuning: {folds} folds × {len(regs)} regParam, areaUnderROC, {n:,}×{d} Parquet, "
          f"local[{partitions}], maxIter 100, tol 1e-6", flush=True)
    runs = (
        ("pyspark.ml CV over MLlib LogisticRegression", SparkCV, SparkLR(), assembled(df, columns)),
        ("pyspark.ml CV over ours (fitMultiple)", SparkCV,
         LogisticRegression(featuresCols=columns), df),
        ("sparkml_aiaas.tuning CV, lbfgs", CrossValidator,
         LogisticRegression(featuresCols=columns), df),
        ("sparkml_aiaas.tuning CV, newton", CrossValidator,
         LogisticRegression(featuresCols=columns, optimizer="newton"), df),
    )
    results = {}
    for who, validator, estimator, data in runs:
        grid = ParamGridBuilder().addGrid(estimator.regParam, regs).build()
        cv = validator(estimator=estimator, estimatorParamMaps=grid, evaluator=evaluator,
                       numFolds=folds, seed=seed)
        start = time.perf_counter()
        fitted = cv.fit(data)
        elapsed = time.perf_counter() - start
        best = int(np.argmax(fitted.avgMetrics))
        results[who] = (elapsed, regs[best], fitted.avgMetrics)
        base = results[runs[0][0]]
        print(f"{who:46s} {elapsed:6.2f} s ({base[0] / elapsed:4.1f}x)  best regParam "
              f"{regs[best]:g}  max |avgMetrics - MLlib's| "
              f"{np.max(np.abs(np.subtract(fitted.avgMetrics, base[2]))):.1e}  avgMetrics "
              + " ".join(f"{m:.5f}" for m in fitted.avgMetrics), flush=True)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--partitions", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--fit-rows", type=int, default=1_000_000)
    parser.add_argument("--fit-features", type=int, default=50)
    parser.add_argument("--transform-rows", type=int, default=4_000_000)
    parser.add_argument("--transform-features", type=int, default=20)
    parser.add_argument("--reg", type=float, default=1e-4)
    parser.add_argument("--optimizers", nargs="+", default=["newton", "lbfgs"])
    parser.add_argument("--driver-memory", default="12g")
    parser.add_argument("--fit-inputs", nargs="+", choices=INPUTS, default=list(INPUTS))
    parser.add_argument("--skip-fit", action="store_true")
    parser.add_argument("--skip-transform", action="store_true")
    parser.add_argument("--skip-mllib", action="store_true")
    parser.add_argument("--tuning", action="store_true",
                        help="also pyspark.ml's CrossValidator over MLlib's and our estimator")
    parser.add_argument("--tuning-rows", type=int, default=300_000)
    parser.add_argument("--tuning-regs", type=float, nargs="+",
                        default=[1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2])
    parser.add_argument("--skip-sklearn", action="store_true")
    parser.add_argument("--data-dir", default=os.path.join(tempfile.gettempdir(),
                                                           "sparkml_aiaas_bench"))
    args = parser.parse_args(argv)
    if args.quick:
        args.fit_rows, args.transform_rows, args.repeats = 50_000, 100_000, 1

    from sparkml_aiaas.session import get_spark

    spark = get_spark("bench_user_paths", master=args.master,
                      conf={"spark.driver.memory": args.driver_memory})
    os.makedirs(args.data_dir, exist_ok=True)
    if not args.skip_fit:
        bench_fit(spark, args.fit_rows, args.fit_features, args.partitions, args.reg,
                  args.repeats, args.data_dir, args.optimizers, not args.skip_mllib,
                  not args.skip_sklearn, args.fit_inputs)
    if not args.skip_transform:
        bench_transform(spark, args.transform_rows, args.transform_features, args.partitions,
                        args.repeats, args.data_dir, not args.skip_mllib)
    if args.tuning:
        bench_tuning(spark, 20_000 if args.quick else args.tuning_rows, 20, args.partitions,
                     args.data_dir, regs=args.tuning_regs)
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
