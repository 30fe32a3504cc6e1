"""Batch scoring: any saved model (or registry reference) over Spark, with lineage columns.

    from sparkml_aiaas.scoring import score, spark_udf, read_scores

    report = score(spark, "models/churn", "data/customers", "scores/churn")
    print(report.summary_line())

See docs/scoring.md.
"""

from sparkml_aiaas.scoring.batch import (LINEAGE_COLUMNS, STATE_FILE, ScoreReport,
                                         check_signature, derive_run_id, load_state, score,
                                         score_dataframe)
from sparkml_aiaas.scoring.resolve import ResolvedModel, resolve_model
from sparkml_aiaas.scoring.sink import read_scores, write_parquet_atomically
from sparkml_aiaas.scoring.udf import ModelUDF, spark_udf, transform_with_model

__all__ = ["score", "spark_udf", "read_scores", "ScoreReport", "ResolvedModel", "resolve_model",
           "transform_with_model", "check_signature", "derive_run_id", "load_state",
           "score_dataframe", "write_parquet_atomically", "ModelUDF", "LINEAGE_COLUMNS",
           "STATE_FILE"]
