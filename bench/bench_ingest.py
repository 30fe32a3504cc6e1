"""Ingest benchmark: checked CSV → typed Parquet (+ quarantine) vs Spark's plain CSV reader.

    python bench/bench_ingest.py                 # 3M rows × 10 columns (~300 MB of CSV)
    python bench/bench_ingest.py --rows 200000   # a smoke run

Peer: ``spark.read.csv(path, schema=<same schema>, header=True).write.parquet(out)`` — what
a team writes when it does not check anything (Spark's PERMISSIVE mode nulls short rows and
drops extra fields without a trace).  Ours: ``ingest(spark, path, schema,
quarantine_path=...)`` then ``result.accepted.write.parquet(out)``, which reads every
record, types and checks it, reconciles the counts and writes the rejected rows with
reasons.  0.1 % of the generated rows are malformed (short, long, unparsable, out of
range), so the quarantine is exercised.

Both run in one process and one Spark session (local[2] by default), alternating, so the
ratio compares like with like on a noisy machine; the figure is the ratio of medians.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

SCHEMA_DDL = (
    "id BIGINT NOT NULL, age INT, income DOUBLE, score DOUBLE, visits INT, "
    "city STRING, segment STRING, signup DATE, active BOOLEAN, note STRING"
)
SCHEMA_YAML = [
    {"name": "id", "type": "bigint", "nullable": False},
    {"name": "age", "type": "int", "min": 0, "max": 130},
    {"name": "income", "type": "double"},
    {"name": "score", "type": "double"},
    {"name": "visits", "type": "int"},
    {"name": "city", "type": "string"},
    {"name": "segment", "type": "string", "allowed": ["a", "b", "c", "d"]},
    {"name": "signup", "type": "date"},
    {"name": "active", "type": "boolean"},
    {"name": "note", "type": "string"},
]


def write_csv(path: str, rows: int, seed: int = 3, chunk: int = 500_000) -> int:
    """Write ``rows`` records (0.1 % malformed); returns the number of malformed ones."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    cities = np.array(["Paris", "Lyon", "New York", "São Paulo", "Zürich", "Oslo"])
    bad_total = 0
    with open(path, "w", encoding="utf-8", newline="") as out:
        out.write("id,age,income,score,visits,city,segment,signup,active,note\n")
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            days = rng.integers(0, 3650, n)
            frame = pd.DataFrame(
                {
                    "id": np.arange(start, start + n),
                    "age": rng.integers(18, 90, n),
                    "income": np.round(rng.lognormal(10, 1, n), 2),
                    "score": np.round(rng.standard_normal(n), 6),
                    "visits": rng.integers(0, 500, n),
                    "city": cities[rng.integers(0, len(cities), n)],
                    "segment": np.array(list("abcd"))[rng.integers(0, 4, n)],
                    "signup": (np.datetime64("2015-01-01") + days).astype(str),
                    "active": rng.random(n) < 0.5,
                    "note": np.where(rng.random(n) < 0.1, "said \"hi\", twice", "ok"),
                }
            )
            text = frame.to_csv(index=False, header=False).splitlines()
            bad = rng.choice(n, size=max(1, n // 1000), replace=False)
            for k, i in enumerate(bad):
                kind = k % 4
                fields = text[i].split(",")
                if kind == 0:
                    text[i] = ",".join(fields[:5])  # too few fields
                elif kind == 1:
                    text[i] = text[i] + ",extra"  # too many fields
                elif kind == 2:
                    text[i] = text[i].replace(",", ",x", 1)  # age unparsable
                else:
                    fields[1] = "200"  # age out of range
                    text[i] = ",".join(fields)
            bad_total += len(bad)
            out.write("\n".join(text) + "\n")
    return bad_total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=3_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--data-dir", default=os.path.join(tempfile.gettempdir(), "sparkml_bench"))
    args = parser.parse_args()

    from sparkml_aiaas.data import ingest
    from sparkml_aiaas.session import get_spark

    os.makedirs(args.data_dir, exist_ok=True)
    csv_path = os.path.join(args.data_dir, f"ingest_{args.rows}.csv")
    if not os.path.exists(csv_path):
        t = time.perf_counter()
        bad = write_csv(csv_path + ".tmp", args.rows)
        os.replace(csv_path + ".tmp", csv_path)
        print(f"wrote {csv_path} ({bad} malformed rows) in {time.perf_counter() - t:.1f} s")
    size_mb = os.path.getsize(csv_path) / 1e6
    spark = get_spark(master=args.master, app_name="bench_ingest")
    work = tempfile.mkdtemp(prefix="bench_ingest_", dir=args.data_dir)

    def plain() -> float:
        out = os.path.join(work, "plain")
        t = time.perf_counter()
        spark.read.csv(csv_path, schema=SCHEMA_DDL, header=True).write.mode("overwrite").parquet(out)
        return time.perf_counter() - t

    counts = {}

    def ours() -> float:
        out, quarantine = os.path.join(work, "ours"), os.path.join(work, "quarantine")
        t = time.perf_counter()
        result = ingest(spark, csv_path, SCHEMA_YAML, quarantine_path=quarantine)
        result.accepted.write.mode("overwrite").parquet(out)
        elapsed = time.perf_counter() - t
        result.unpersist()
        counts.update(result.counts, reasons=result.reasons)
        return elapsed

    plain(), ours()  # warm-up: JIT, Python workers, file cache
    times = {"plain": [], "ours": []}
    for _ in range(args.repeats):
        times["plain"].append(plain())
        times["ours"].append(ours())
    p, o = statistics.median(times["plain"]), statistics.median(times["ours"])
    print(f"rows {args.rows:,}, CSV {size_mb:.0f} MB, master {args.master}")
    print(f"counts: {counts}")
    print(f"spark.read.csv(schema).write.parquet: {p:.2f} s  (runs {[round(x, 2) for x in times['plain']]})")
    print(f"ingest + quarantine + write.parquet:   {o:.2f} s  (runs {[round(x, 2) for x in times['ours']]})")
    print(f"ratio ours / plain: {o / p:.2f}x  (target <= 1.3x)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
