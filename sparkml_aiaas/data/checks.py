"""SQL text that types declared columns and finds the first problem of each record.

Expressions are built as SQL text, not as ``Column`` trees: every Column
operation is a py4j round trip (about half a millisecond), and a 30-column
schema needs some 10,000 of them as Column trees but about 100 as text.

Each check is a ``(condition, problem)`` pair; a problem is a
``struct<code: string, message: string>``.  :func:`first_problem` chains the
checks into one ``CASE``, so the first failing check (in the order given) is
the one reported.
"""

from __future__ import annotations

import datetime as _dt
import math
from typing import Any, Optional, Sequence

from pyspark.sql import types as T

from sparkml_aiaas.data.schema import NUMERIC_TYPES, ColumnConstraints

__all__ = [
    "Check",
    "cast_to",
    "field_count_checks",
    "first_problem",
    "non_null_placeholder",
    "problem",
    "quote_identifier",
    "sql_string",
    "value_checks",
]

#: Longest piece of an offending value quoted in a message.
MAX_VALUE_CHARS = 100

Check = tuple[str, str]  # (SQL condition, SQL problem struct)


def quote_identifier(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def sql_string(text: str) -> str:
    """A SQL string literal holding ``text`` exactly."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def problem(code: str, message_sql: str) -> str:
    return f"named_struct('code', {sql_string(code)}, 'message', {message_sql})"


def first_problem(checks: Sequence[Check]) -> str:
    """One expression giving the first failing check's problem, or null."""
    if not checks:
        return "CAST(NULL AS STRUCT<code: STRING, message: STRING>)"
    branches = " ".join(f"WHEN {condition} THEN {found}" for condition, found in checks)
    return f"CASE {branches} END"


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
    expectation = _concat(sql_string(" fields, expected "), f"CAST({expected_sql} AS STRING)")
    message = _concat(f"CAST({n_fields_sql} AS STRING)", expectation)
    return [
        (f"{n_fields_sql} < {expected_sql}", problem("too_few_fields", message)),
        (f"{n_fields_sql} > {expected_sql}", problem("too_many_fields", message)),
    ]


def value_checks(
    field: T.StructField,
    constraints: ColumnConstraints,
    source_sql: str,
    typed_sql: str,
    redact: bool = False,
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
    """
    name = field.name
    type_name = field.dataType.simpleString().upper()
    hidden = sql_string("[redacted]")
    shown_source = hidden if redact else source_sql
    shown_typed = hidden if redact else typed_sql
    checks = [
        (
            f"{source_sql} IS NOT NULL AND {typed_sql} IS NULL",
            problem(
                f"unparsable:{name}", _quoted_value(shown_source, f" is not a valid {type_name}")
            ),
        )
    ]
    if not field.nullable:
        missing = problem(f"null:{name}", sql_string("missing value in a NOT NULL column"))
        checks.append((f"{source_sql} IS NULL", missing))
    if constraints.min is not None:
        low = sql_literal(constraints.min, field.dataType)
        message = _concat(_shown(shown_typed), sql_string(f" is below the minimum {constraints.min}"))
        checks.append((f"{typed_sql} < {low}", problem(f"out_of_range:{name}", message)))
    if constraints.max is not None:
        high = sql_literal(constraints.max, field.dataType)
        message = _concat(_shown(shown_typed), sql_string(f" is above the maximum {constraints.max}"))
        checks.append((f"{typed_sql} > {high}", problem(f"out_of_range:{name}", message)))
    if constraints.allowed is not None:
        allowed = ", ".join(sql_literal(v, field.dataType) for v in constraints.allowed)
        listed = ", ".join(str(v) for v in constraints.allowed)
        message = _quoted_value(shown_typed, f" is not one of [{listed}]")
        not_allowed = problem(f"not_allowed:{name}", message)
        checks.append((f"NOT ({typed_sql} IN ({allowed}))", not_allowed))
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
    return f"substring(CAST({value_sql} AS STRING), 1, {MAX_VALUE_CHARS})"


def _quoted_value(value_sql: str, suffix: str) -> str:
    return _concat(sql_string("'"), _shown(value_sql), sql_string("'" + suffix))


def _concat(*parts_sql: str) -> str:
    return f"concat({', '.join(parts_sql)})"
