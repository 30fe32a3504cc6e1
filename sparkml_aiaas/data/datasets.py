"""Small bundled datasets written as files, for quickstarts, examples and tests.

They come from scikit-learn's bundled copies, so no download is needed.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass

from sparkml_aiaas.atomic import atomic_file

__all__ = ["BundledDataset", "write_breast_cancer_csv"]


@dataclass(frozen=True)
class BundledDataset:
    """A dataset written to disk and what is needed to ingest it.

    Attributes
    ----------
    path : str
        Absolute path of the CSV file (with a header row).
    schema_ddl : str
        Its schema as DDL, for :func:`sparkml_aiaas.data.ingest`.
    feature_cols : list of str
    label_col, id_col : str
    n_rows : int
    """

    path: str
    schema_ddl: str
    feature_cols: list
    label_col: str
    id_col: str
    n_rows: int


def write_breast_cancer_csv(path: str) -> BundledDataset:
    """Write scikit-learn's breast cancer data (569 rows, 30 features) as CSV.

    Columns: ``id`` (0..568), the 30 features in snake_case (``mean_radius``,
    ``radius_error``, ``worst_concave_points``...), and ``label`` (scikit-learn's
    target: 1 = benign, 0 = malignant).  The file appears atomically (written
    to a temporary file, then renamed), and parent folders are created.

    Parameters
    ----------
    path : str
        The CSV file to write (replaced if it exists).

    Returns
    -------
    BundledDataset
    """
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    feature_cols = [_snake_case(name) for name in bunch.feature_names]
    header = ["id", *feature_cols, "label"]
    rows = (
        # repr() of a float round-trips exactly.
        [str(i), *(repr(float(v)) for v in features), str(int(target))]
        for i, (features, target) in enumerate(zip(bunch.data, bunch.target))
    )
    target_path = os.path.abspath(os.fspath(path))
    _write_csv_atomically(target_path, header, rows)
    features_ddl = [f"{c} DOUBLE NOT NULL" for c in feature_cols]
    columns = ["id INT NOT NULL", *features_ddl, "label INT NOT NULL"]
    return BundledDataset(
        path=target_path,
        schema_ddl=", ".join(columns),
        feature_cols=feature_cols,
        label_col="label",
        id_col="id",
        n_rows=len(bunch.target),
    )


def _snake_case(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", name.strip().lower()).strip("_")


def _write_csv_atomically(path: str, header, rows) -> None:
    with atomic_file(path, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
