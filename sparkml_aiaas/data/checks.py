"""SQL text that types declared columns and finds the first problem of each record.

Expressions are built as SQL text, not as ``Column`` trees: every Column
operation is a py4j round trip (about half a millisecond), and a 30-column
schema needs some 10,000 of them as Column trees but about 100 as text.

Each :class:`Check` is a condition, a reason code and a message (a fixed
prefix and suffix around the offending value).  :func:`first_check` chains
the conditions into one ``CASE`` giving the index of the first failing check
(in the order given); :func:`check_value` picks the value its message quotes,
and :func:`reason_sql` writes ``"<code>: <message>"`` from the two.

Why an index and not the message itself: Spark fuses the whole per-record
projection into one generated Java method, and the JVM does not compile a
method above 8000 bytes of bytecode to machine code (``-XX:-DontCompileHugeMethods``),
so one struct and one string concatenation per check made that method
several times slower past a dozen columns.  The index and the value are small
per check; messages are written only for rejected records, after the cache.
"""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from pyspark.sql import types as T

from sparkml_aiaas.columns import quoted as quote_identifier
from sparkml_aiaas.data.schema import NUMERIC_TYPES, ColumnConstraints

__all__ = [
    "Check",
    "FLOATING_TYPES",
    "cast_to",
    "check_value",
    "code_sql",
    "field_count_checks",
    "first_check",
    "non_finite_sql",
    "non_null_placeholder",
    "quote_identifier",
    "reason_sql",
    "sql_string",
    "value_checks",
]

#: Longest piece of an offending value quoted in a message.
MAX_VALUE_CHARS = 100

#: Column types that hold NaN and infinities.
FLOATING_TYPES = (T.FloatType, T.DoubleType)
_INFINITY = "CAST('Infinity' AS DOUBLE)"


@dataclass(frozen=True)
class Check:
    """When ``condition`` (SQL) holds, the record is rejected with ``code``.

    The message is ``prefix + value + suffix``, where ``value`` is SQL giving
    the offending value as text (None: the message quotes no value).

    Checks that cannot both fail may share one ``WHEN`` (fewer conditions per
    record): the first carries the shared ``condition`` and ``then``, SQL
    for the offset of the check that failed (0: itself, 1: the next, ...);
    the others have ``shared=True`` and are only there for their code and
    message.
    """

    condition: str
    code: str
    prefix: str = ""
    value: Optional[str] = None
    suffix: str = ""
    then: Optional[str] = None
    shared: bool = False
    #: Cut the value to MAX_VALUE_CHARS (it is data, maybe long).
    truncate: bool = True



def sql_string(text: str) -> str:
    """A SQL string literal holding ``text`` exactly."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def first_check(checks: Sequence[Check]) -> str:
    """SQL: the index of the first failing check, or null when all pass."""
    if not checks:
        return "CAST(NULL AS INT)"
    branches = " ".join(
        f"WHEN {c.condition} THEN {i if c.then is None else f'{i} + {c.then}'}"
        for i, c in enumerate(checks)
        if not c.shared
    )
    return f"CASE {branches} END"


def check_value(checks: Sequence[Check], index_sql: str) -> str:
    """SQL: the value the message of check ``index_sql`` quotes (null when none).

    Not yet cut to :data:`MAX_VALUE_CHARS` (:func:`reason_sql` does it); one
    branch per distinct value, however many checks quote it.
    """
    by_value: dict = {}
    for i, c in enumerate(checks):
        if c.value is not None:
            by_value.setdefault(c.value, []).append(str(i))
    branches = " ".join(
        f"WHEN {index_sql} IN ({', '.join(indices)}) THEN {value}"
        for value, indices in by_value.items()
    )
    return f"CASE {branches} END" if branches else "CAST(NULL AS STRING)"


def code_sql(checks: Sequence[Check], index_sql: str) -> str:
    """SQL: the reason code of check ``index_sql``."""
    return f"{_pick([c.code for c in checks], index_sql)}"


def reason_sql(checks: Sequence[Check], index_sql: str, value_sql: str) -> str:
    """SQL: ``"<code>: <message>"`` of check ``index_sql`` quoting ``value_sql``."""
    cut = [str(i) for i, c in enumerate(checks) if c.truncate]
    shown = value_sql
    if cut:
        shown = (
            f"CASE WHEN {index_sql} IN ({', '.join(cut)}) "
            f"THEN substring({value_sql}, 1, {MAX_VALUE_CHARS}) ELSE {value_sql} END"
        )
    return (
        f"concat({code_sql(checks, index_sql)}, ': ', "
        f"{_pick([c.prefix for c in checks], index_sql)}, coalesce({shown}, ''), "
        f"{_pick([c.suffix for c in checks], index_sql)})"
    )


def _pick(texts: Sequence[str], index_sql: str) -> str:
    if not texts:
        return "CAST(NULL AS STRING)"
    return f"element_at(array({', '.join(sql_string(t) for t in texts)}), {index_sql} + 1)"


def cast_to(column_sql: str, data_type: T.DataType) -> str:
    """Convert to ``data_type``; a value that does not convert becomes null.

    ``try_cast`` behaves so whatever ``spark.sql.ansi.enabled`` says.
    """
    if isinstance(data_type, T.StringType):
        return column_sql
    return f"try_cast({column_sql} AS {data_type.simpleString()})"


def field_count_checks(n_fields_sql: str, expected) -> list[Check]:
    """Too few / too many fields; ``expected`` is a number or a SQL expression (per-file widths)."""
    expected_sql = str(expected)
    counts = (
        f"concat(CAST({n_fields_sql} AS STRING), ' fields, expected ', "
        f"CAST({expected_sql} AS STRING))"
    )
    return [
        Check(f"{n_fields_sql} < {expected_sql}", "too_few_fields", value=counts, truncate=False),
        Check(f"{n_fields_sql} > {expected_sql}", "too_many_fields", value=counts, truncate=False),
    ]


def non_finite_sql(value_sql: str) -> str:
    """True when a FLOAT/DOUBLE value is NaN or infinite (null stays null).

    One comparison: Spark orders NaN above +infinity, so only finite values
    are below it.
    """
    return f"(NOT (abs({value_sql}) < {_INFINITY}))"


def value_checks(
    field: T.StructField,
    constraints: ColumnConstraints,
    source_sql: str,
    typed_sql: str,
    redact: bool = False,
    non_finite: str = "reject",
    source_is_text: bool = True,
) -> list[Check]:
    """Checks for one column, in reporting order.

    Parameters
    ----------
    field : StructField
        The declared column.
    constraints : ColumnConstraints
    source_sql : str
        The value as read (null when empty).
    typed_sql : str
        The value converted to the declared type (null when it did not convert).
    redact : bool
        Messages do not quote the value (PII: reasons are written to the quarantine).
    non_finite : {"reject", "null", "keep"}
        FLOAT/DOUBLE columns: what a NaN or infinity read as such does (see
        :func:`sparkml_aiaas.data.ingest`).  An infinity that came from a
        finite number too large for the type is always ``out_of_range``.
    source_is_text : bool
        Whether ``source_sql`` is text (CSV, JSON, a Parquet string column) or
        a value of its own type (Parquet).
    """
    name = field.name
    type_name = field.dataType.simpleString().upper()
    hidden = sql_string("[redacted]")
    shown_source = hidden if redact else _shown(source_sql)
    shown_typed = hidden if redact else _shown(typed_sql)
    floating = isinstance(field.dataType, FLOATING_TYPES)
    unparsable = dict(code=f"unparsable:{name}", prefix="'", value=shown_source,
                      suffix=f"' is not a valid {type_name}")
    missing = dict(code=f"null:{name}", prefix="missing value in a NOT NULL column")
    checks = []
    if field.nullable:
        checks.append(Check(f"{source_sql} IS NOT NULL AND {typed_sql} IS NULL", **unparsable))
    else:
        # One condition for both: no value, or one that did not convert.
        checks += [
            Check(f"{typed_sql} IS NULL", then=f"CASE WHEN {source_sql} IS NULL THEN 1 ELSE 0 END",
                  **unparsable),
            Check("", shared=True, **missing),
        ]
    if floating:
        # An infinity read from text was written as one (Spark's cast reads inf,
        # +Infinity, -INF, ...: all contain "inf", and nothing else containing it
        # parses); any other text that became infinite overflowed.
        if source_is_text:
            infinity_read = f"contains(lower({source_sql}), 'inf')"
        else:
            # Parquet: the source value was already infinite (any type that converts).
            infinity_read = f"abs(try_cast({source_sql} AS DOUBLE)) = {_INFINITY}"
        overflow = dict(code=f"out_of_range:{name}", prefix="'", value=shown_source,
                        suffix=f"' is too large for {type_name} (it would become infinite)")
        if non_finite == "reject":
            checks += [
                Check(non_finite_sql(typed_sql),
                      then=f"CASE WHEN isnan({typed_sql}) OR {infinity_read} THEN 1 ELSE 0 END",
                      **overflow),
                Check("", f"non_finite:{name}", "'", shown_source,
                      f"' is not a finite {type_name} (non_finite policy 'reject')", shared=True),
            ]
        else:
            checks.append(Check(
                f"abs({typed_sql}) = {_INFINITY} AND NOT {infinity_read}", **overflow))
        if non_finite == "null":
            # The value becomes null; the range and allowed checks see the null.
            finite = f"CASE WHEN NOT {non_finite_sql(typed_sql)} THEN {typed_sql} END"
            if not field.nullable:
                checks.append(Check(
                    f"{finite} IS NULL", f"null:{name}", "'", shown_source,
                    "' becomes null (non_finite policy 'null') in a NOT NULL column",
                ))
            typed_sql = finite
            shown_typed = hidden if redact else _shown(typed_sql)
    if constraints.min is not None:
        low = sql_literal(constraints.min, field.dataType)
        checks.append(Check(f"{typed_sql} < {low}", f"out_of_range:{name}",
                            "", shown_typed, f" is below the minimum {constraints.min}"))
    if constraints.max is not None:
        high = sql_literal(constraints.max, field.dataType)
        checks.append(Check(f"{typed_sql} > {high}", f"out_of_range:{name}",
                            "", shown_typed, f" is above the maximum {constraints.max}"))
    if constraints.allowed is not None:
        allowed = ", ".join(sql_literal(v, field.dataType) for v in constraints.allowed)
        listed = ", ".join(str(v) for v in constraints.allowed)
        checks.append(Check(f"NOT ({typed_sql} IN ({allowed}))", f"not_allowed:{name}",
                            "'", shown_typed, f"' is not one of [{listed}]"))
    return checks


def sql_literal(value: Any, data_type: T.DataType) -> str:
    """A literal for a bound or an allowed value, comparable with a ``data_type`` column."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        # Via a string so that inf, nan and exponents need no SQL spelling;
        # a double keeps an INT column from rounding a bound such as 0.5.
        text = repr(value) if math.isfinite(value) else str(value)
        return f"CAST({sql_string(text)} AS DOUBLE)"
    if isinstance(value, (_dt.date, _dt.datetime)):
        value = value.isoformat()
    if isinstance(data_type, T.StringType):
        return sql_string(str(value))
    return f"CAST({sql_string(str(value))} AS {data_type.simpleString()})"


def non_null_placeholder(data_type: T.DataType) -> Optional[str]:
    """A non-null literal of ``data_type``, or None when there is no simple one.

    ``coalesce(column, placeholder)`` is how Spark learns that a column holds
    no nulls, so that a schema can say nullable=false.
    """
    if isinstance(data_type, T.StringType):
        return "''"
    if isinstance(data_type, T.BooleanType):
        return "false"
    if isinstance(data_type, T.DateType):
        return "DATE '1970-01-01'"
    if isinstance(data_type, T.TimestampNTZType):
        return "TIMESTAMP_NTZ '1970-01-01 00:00:00'"
    if isinstance(data_type, T.TimestampType):
        return "TIMESTAMP '1970-01-01 00:00:00'"
    if isinstance(data_type, NUMERIC_TYPES):
        return f"CAST(0 AS {data_type.simpleString()})"
    return None


def _shown(value_sql: str) -> str:
    return f"CAST({value_sql} AS STRING)"
