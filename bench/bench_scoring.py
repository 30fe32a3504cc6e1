"""Scoring benchmark: our score path vs pyspark.ml vs a bare scan vs plain mapInPandas.

    python bench/bench_scoring.py                 # 4M rows × 20 features
    python bench/bench_scoring.py --rows 200000   # a smoke run

A logistic model (20 features) scores a Parquet table into Spark's no-op sink
(``df.write.format("noop")``), so only reading and scoring are timed:

  scan          the same Parquet read into the noop sink (the floor)
  ours          sparkml_aiaas.scoring.transform_with_model (mapInArrow, model broadcast and
                cached per worker) + lineage columns, as sparkml_aiaas.scoring.score runs it
  pyspark.ml    VectorAssembler + pyspark.ml LogisticRegressionModel.transform
  mapInPandas   a plain mapInPandas calling the same predictor on pandas frames
  mlflow        mlflow.pyfunc.spark_udf, only if mlflow is importable

Everything runs in one process and one Spark session; each timing is the best of
``--repeats`` runs.  Targets: ours ≥ 2× pyspark.ml's rows/s, ours ≤ 2× the scan's time.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def make_data(spark, rows: int, d: int, path: str) -> str:
    from pyspark.sql import functions as F

    if os.path.isdir(path) and os.path.exists(os.path.join(path, "_SUCCESS")):
        return path
    cols = [F.randn(seed=j).alias(f"x{j}") for j in range(d)]
    frame = spark.range(rows, numPartitions=8).select(F.col("id"), *cols)
    margin = sum(F.col(f"x{j}") * (1.0 if j % 2 else -0.5) for j in range(d))
    frame = frame.withColumn("label", (margin + F.randn(seed=99) > 0).cast("double"))
    frame.write.mode("overwrite").parquet(path)
    return path


def timed(label, action, repeats):
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - started)
    print(f"  {label:<12} {best:8.2f} s", flush=True)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4_000_000)
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=10_000,
                        help="rows per Arrow batch (all Arrow paths)")
    parser.add_argument("--data-dir", default=os.path.join(tempfile.gettempdir(),
                                                           "sparkml_aiaas_bench"))
    args = parser.parse_args()

    from pyspark.ml.classification import LogisticRegression as MLlibLR
    from pyspark.ml.feature import VectorAssembler
    from pyspark.sql import functions as F

    from sparkml_aiaas.models import LogisticRegression
    from sparkml_aiaas.scoring import resolve_model, transform_with_model
    from sparkml_aiaas.scoring.batch import with_lineage
    from sparkml_aiaas.session import get_spark

    spark = get_spark("sparkml_aiaas-bench-scoring", master=args.master, conf={
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(args.batch_size),
        "spark.ui.enabled": "false",
    })
    d = args.features
    cols = [f"x{j}" for j in range(d)]
    path = make_data(spark, args.rows, d,
                     os.path.join(args.data_dir, f"scoring_{args.rows}x{d}.parquet"))
    df = spark.read.parquet(path)

    sample = df.limit(50_000).cache()
    sample.count()
    model_dir = os.path.join(args.data_dir, f"scoring_model_{d}")
    LogisticRegression(featuresCols=cols, maxIter=20).fit(sample).write().overwrite() \
        .save(model_dir)
    assembler = VectorAssembler(inputCols=cols, outputCol="features")
    mllib_model = MLlibLR(maxIter=20).fit(assembler.transform(sample))
    sample.unpersist()
    resolved = resolve_model(model_dir)
    predictor = resolved.predictor

    def noop(frame):
        frame.write.format("noop").mode("overwrite").save()

    def ours():
        # Exactly what score() runs, minus the sink: the model's outputs + lineage literals.
        scored_at = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
        noop(with_lineage(transform_with_model(df, resolved), resolved.name, resolved.version,
                          "bench", scored_at))

    def mllib():
        noop(mllib_model.transform(assembler.transform(df)))

    from pyspark.sql import types as T

    out_schema = T.StructType(df.schema.fields + [
        T.StructField("rawPrediction", T.DoubleType()),
        T.StructField("probability", T.ArrayType(T.DoubleType())),
        T.StructField("prediction", T.DoubleType())])

    def plain_pandas():
        def run(frames):
            for frame in frames:
                out = predictor.predict(frame[cols])
                yield frame.assign(**{c: out[c] for c in out.columns})
        noop(df.mapInPandas(run, out_schema))

    print(f"scoring {args.rows:,} rows × {d} features, {args.master}, "
          f"Arrow batch {args.batch_size:,}, best of {args.repeats}")
    noop(df)  # warm the file cache and the JVM
    results = {"scan": timed("scan", lambda: noop(df), args.repeats),
               "ours": timed("ours", ours, args.repeats),
               "pyspark.ml": timed("pyspark.ml", mllib, args.repeats),
               "mapInPandas": timed("mapInPandas", plain_pandas, args.repeats)}
    try:
        import mlflow.pyfunc
    except ImportError:
        print("  mlflow       not installed (pip install 'sparkml_aiaas[mlflow]'): skipped")
    else:
        # MLflow's own way: export as a pyfunc model, score with mlflow.pyfunc.spark_udf.
        from sparkml_aiaas.registry import ModelRegistry

        registry_root = tempfile.mkdtemp(prefix="bench_registry_", dir=args.data_dir)
        registry = ModelRegistry(registry_root)
        version = registry.register(model_dir, "bench")
        exported = registry.export_mlflow(f"bench/{version}", os.path.join(registry_root, "pyfunc"))
        mlflow_udf = mlflow.pyfunc.spark_udf(spark, exported, env_manager="local")

        def mlflow_spark_udf():
            noop(df.withColumn("prediction", mlflow_udf(*[F.col(c) for c in cols])))

        results["mlflow"] = timed("mlflow", mlflow_spark_udf, args.repeats)
    print()
    for name, seconds in results.items():
        print(f"  {name:<12} {args.rows / seconds:>14,.0f} rows/s")
    print()
    speedup = results["pyspark.ml"] / results["ours"]
    over_scan = results["ours"] / results["scan"]
    print(f"  ours vs pyspark.ml   {speedup:.2f}× the throughput (target ≥ 2×)")
    print(f"  ours vs bare scan    {over_scan:.2f}× the time (target ≤ 2×)")
    print(f"  ours vs mapInPandas  {results['mapInPandas'] / results['ours']:.2f}× the throughput")
    if "mlflow" in results:
        print(f"  ours vs MLflow       {results['mlflow'] / results['ours']:.2f}× the throughput")
    spark.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
