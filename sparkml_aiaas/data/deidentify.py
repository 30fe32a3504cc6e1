"""PII de-identification applied by ingest, before anything is cached or written.

Spark plumbing over :mod:`sparkml_aiaas.core.pii` (keyed hashing) and
:mod:`sparkml_aiaas.data.masking` (raw text of rejected records).  The key is
captured in the closure of a pandas UDF: it travels to the Python workers in
the pickled function, never as a literal in a SQL plan (plans are logged,
shown in the UI and written to event logs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

import pandas as pd
from pyspark.sql import Column
from pyspark.sql.functions import pandas_udf

from sparkml_aiaas.core.pii import PiiPolicy, keyed_hashes
from sparkml_aiaas.data import masking
from sparkml_aiaas.errors import ConfigError

__all__ = ["Deidentify"]


@dataclass(frozen=True)
class Deidentify:
    """A PII policy with its key loaded, checked against the declared columns."""

    policy: PiiPolicy
    key: Optional[bytes]

    @classmethod
    def from_argument(cls, pii: Any, declared) -> Optional["Deidentify"]:
        """From ``ingest(pii=...)``: None, a :class:`PiiPolicy` or its YAML mapping."""
        if pii is None:
            return None
        policy = pii if isinstance(pii, PiiPolicy) else PiiPolicy.from_config(pii)
        unknown = [c for c in policy.columns if c not in declared.names]
        if unknown:
            raise ConfigError(
                f"PII columns {unknown} are not declared columns; declared: {declared.names}"
            )
        return cls(policy=policy, key=policy.key())

    def hash_column(self, column: Column) -> Column:
        """The keyed hash of ``column`` cast to string (null stays null)."""
        key = self.key

        @pandas_udf("string")
        def keyed_hash_pii(values: pd.Series) -> pd.Series:
            return pd.Series(keyed_hashes(values.tolist(), key), index=values.index, dtype=object)

        return keyed_hash_pii(column.cast("string"))

    def raw_masker(self, spec, layout, declared):
        """A function ``(raw, file, reason code columns) -> masked raw column`` for text sources.

        Records with an uncertain mapping to columns (see
        :data:`~sparkml_aiaas.data.masking.UNCERTAIN_CODES`) are masked whole;
        CSV records are masked field by field only when they split into
        exactly their file's number of fields.
        """
        key = self.key
        if spec.format == "json":
            return self.json_masker(declared.names)
        positions_by_file, default = _pii_positions(self.policy.columns, layout, declared)
        csv_kwargs = spec.csv_kwargs()
        widths, default_width = dict(layout.widths), layout.n_columns

        @pandas_udf("string")
        def mask_csv_raw(raw: pd.Series, files: pd.Series, codes: pd.Series) -> pd.Series:
            out = []
            for text, source_file, code in zip(raw.tolist(), files.tolist(), codes.tolist()):
                positions = positions_by_file.get(source_file, default)
                width = widths.get(source_file, default_width)
                out.append(masking.mask_record(
                    text, code,
                    lambda t: masking.mask_csv_record(t, csv_kwargs, positions, key, width),
                    key,
                ))
            return pd.Series(out, index=raw.index, dtype=object)

        return mask_csv_raw

    def json_masker(self, names=None):
        """The masker for JSON lines, and for Parquet/Delta sources (raw text: the row as JSON).

        ``names``: the declared columns; an object with any other key is masked whole.
        """
        key, columns = self.key, dict(self.policy.columns)
        names = None if names is None else frozenset(names)

        @pandas_udf("string")
        def mask_row_json(raw: pd.Series, files: pd.Series, codes: pd.Series) -> pd.Series:
            out = [
                masking.mask_record(
                    text, code, lambda t: masking.mask_json_record(t, columns, key, names), key
                )
                for text, code in zip(raw.tolist(), codes.tolist())
            ]
            return pd.Series(out, index=raw.index, dtype=object)

        return mask_row_json


def _pii_positions(columns: Mapping[str, str], layout, declared):
    """``({file: {position: action}}, default)``: where the PII fields are in each file."""
    names = declared.names

    def positions(order) -> dict:
        found = {order[names.index(name)]: action for name, action in columns.items()}
        return {p: action for p, action in found.items() if p >= 0}

    by_file = {source_file: positions(order) for source_file, order in layout.orders.items()}
    return by_file, positions(layout.default_order)
