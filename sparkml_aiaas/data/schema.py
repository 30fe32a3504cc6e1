"""Declared input schemas: column names, types, nullability and value constraints.

A schema arrives in one of three shapes and leaves as a :class:`DeclaredSchema`:

* a :class:`pyspark.sql.types.StructType` (no value constraints);
* a DDL string, ``"id INT NOT NULL, x DOUBLE, name STRING"``;
* a list of mappings as written in YAML, one per column::

      - {name: id, type: int, nullable: false}
      - {name: age, type: double, min: 0, max: 130}
      - {name: sex, type: string, allowed: [f, m]}

The DDL parser is our own (atomic types only) rather than Spark's, so that a
config can be validated without a running SparkSession.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

from pyspark.sql import types as T

from sparkml_aiaas.columns import quoted
from sparkml_aiaas.errors import ConfigError

__all__ = ["ColumnConstraints", "DeclaredSchema", "parse_schema", "parse_type", "to_ddl"]

#: Type names accepted in DDL and YAML (case-insensitive), with their aliases.
_SIMPLE_TYPES: dict[str, T.DataType] = {
    "boolean": T.BooleanType(),
    "bool": T.BooleanType(),
    "tinyint": T.ByteType(),
    "byte": T.ByteType(),
    "smallint": T.ShortType(),
    "short": T.ShortType(),
    "int": T.IntegerType(),
    "integer": T.IntegerType(),
    "bigint": T.LongType(),
    "long": T.LongType(),
    "float": T.FloatType(),
    "real": T.FloatType(),
    "double": T.DoubleType(),
    "string": T.StringType(),
    "date": T.DateType(),
    "timestamp": T.TimestampType(),
    "timestamp_ltz": T.TimestampType(),
    "timestamp_ntz": T.TimestampNTZType(),
}
_DECIMAL_RE = re.compile(r"(?:decimal|dec|numeric)\s*(?:\(\s*([0-9]+)\s*(?:,\s*([0-9]+)\s*)?\))?", re.I)
# VARCHAR(n) / CHAR(n) are read as plain strings: no length is enforced.
_CHAR_RE = re.compile(r"(?:var)?char\s*\(\s*[0-9]+\s*\)", re.I)

NUMERIC_TYPES = (
    T.ByteType, T.ShortType, T.IntegerType, T.LongType, T.FloatType, T.DoubleType, T.DecimalType,
)
ORDERED_TYPES = NUMERIC_TYPES + (T.DateType, T.TimestampType, T.TimestampNTZType)
_YAML_KEYS = {"name", "type", "nullable", "min", "max", "allowed"}


@dataclass(frozen=True)
class ColumnConstraints:
    """Value constraints of one column; ``None`` means unconstrained.

    Attributes
    ----------
    min, max : number, date, datetime or str, optional
        Inclusive bounds.  Only for numeric, date and timestamp columns (dates
        and timestamps may be given as ISO strings).
    allowed : tuple, optional
        The only values the column may hold (nulls are governed by ``nullable``).
    """

    min: Any = None
    max: Any = None
    allowed: Optional[tuple] = None

    @property
    def is_empty(self) -> bool:
        return self.min is None and self.max is None and self.allowed is None


@dataclass(frozen=True)
class DeclaredSchema:
    """A Spark schema plus per-column value constraints.

    Attributes
    ----------
    struct : StructType
        Column names, types and nullability, in declared order.
    constraints : dict of str to ColumnConstraints
        Only the columns that have constraints.
    """

    struct: T.StructType
    constraints: Mapping[str, ColumnConstraints] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.struct.fields]

    def constraints_for(self, name: str) -> ColumnConstraints:
        return self.constraints.get(name, ColumnConstraints())


SchemaLike = Union[DeclaredSchema, T.StructType, str, Sequence[Mapping[str, Any]]]


def parse_schema(schema: SchemaLike) -> DeclaredSchema:
    """Turn a StructType, a DDL string or a YAML-style column list into a :class:`DeclaredSchema`.

    Parameters
    ----------
    schema : DeclaredSchema, StructType, str or list of dict
        A DDL string such as ``"id INT, x DOUBLE NOT NULL"``, or a list of
        mappings with keys ``name``, ``type``, ``nullable`` (default true),
        ``min``, ``max`` and ``allowed``.

    Returns
    -------
    DeclaredSchema

    Raises
    ------
    ConfigError
        On an unknown type, a malformed entry, a duplicate or empty column
        name, or a constraint that does not fit its column; the message names
        the offending entry.
    """
    if isinstance(schema, DeclaredSchema):
        return schema
    if isinstance(schema, T.StructType):
        declared = DeclaredSchema(schema, {})
    elif isinstance(schema, str):
        declared = DeclaredSchema(_parse_ddl(schema), {})
    elif isinstance(schema, Sequence) and not isinstance(schema, (bytes, bytearray)):
        declared = _parse_column_list(schema)
    else:
        raise ConfigError(
            f"schema must be a DDL string, a list of column mappings or a StructType, "
            f"not {type(schema).__name__}"
        )
    _check_names(declared.struct)
    return declared


def parse_type(type_name: str) -> T.DataType:
    """Parse one atomic type name (``int``, ``DOUBLE``, ``decimal(10,2)``...).

    Raises
    ------
    ConfigError
        When the type is unknown or not atomic.
    """
    if not isinstance(type_name, str) or not type_name.strip():
        raise ConfigError(f"type must be a non-empty string, not {type_name!r}")
    text = type_name.strip()
    simple = _SIMPLE_TYPES.get(text.lower())
    if simple is not None:
        return simple
    decimal = _DECIMAL_RE.fullmatch(text)
    if decimal:
        precision = int(decimal.group(1) or 10)
        scale = int(decimal.group(2) or 0)
        if not 1 <= precision <= 38 or scale > precision:
            raise ConfigError(
                f"invalid decimal type {text!r}: need 1 <= precision <= 38 and scale <= precision"
            )
        return T.DecimalType(precision, scale)
    if _CHAR_RE.fullmatch(text):
        return T.StringType()
    known = ", ".join(sorted(set(_SIMPLE_TYPES)) + ["decimal(p,s)", "varchar(n)"])
    raise ConfigError(f"unknown or unsupported type {text!r}; supported: {known}")


def to_ddl(struct: T.StructType) -> str:
    """Render a StructType as the DDL this module parses (``id INT NOT NULL, x DOUBLE``)."""
    parts = []
    for f in struct.fields:
        name = f.name if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", f.name) else quoted(f.name)
        not_null = "" if f.nullable else " NOT NULL"
        parts.append(f"{name} {f.dataType.simpleString().upper()}{not_null}")
    return ", ".join(parts)


# --------------------------------------------------------------------- DDL


def _parse_ddl(ddl: str) -> T.StructType:
    if not ddl.strip():
        raise ConfigError("schema DDL string is empty")
    fields = [_parse_ddl_column(part, i) for i, part in enumerate(_split_top_level(ddl), start=1)]
    return T.StructType(fields)


def _split_top_level(ddl: str) -> list[str]:
    """Split on commas outside parentheses and backquotes (``decimal(10,2)`` has one)."""
    parts, depth, in_quote, current = [], 0, False, []
    for ch in ddl:
        if ch == "`":
            in_quote = not in_quote
        elif not in_quote and ch == "(":
            depth += 1
        elif not in_quote and ch == ")":
            depth -= 1
        if ch == "," and depth == 0 and not in_quote:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


_DDL_COLUMN_RE = re.compile(
    r"^\s*(?P<name>`(?:[^`]|``)+`|[^\s`:]+)\s*:?\s+"
    r"(?P<type>.+?)(?P<notnull>\s+NOT\s+NULL)?\s*",
    re.I | re.S,
)


def _parse_ddl_column(text: str, position: int) -> T.StructField:
    match = _DDL_COLUMN_RE.fullmatch(text)
    if not match:
        raise ConfigError(
            f"schema DDL column {position} ({text.strip()!r}) "
            "is not of the form 'name TYPE [NOT NULL]'"
        )
    name = match.group("name")
    if name.startswith("`"):
        name = name[1:-1].replace("``", "`")
    try:
        data_type = parse_type(match.group("type"))
    except ConfigError as exc:
        raise ConfigError(f"schema DDL column {position} ({name!r}): {exc}") from None
    return T.StructField(name, data_type, nullable=match.group("notnull") is None)


# ----------------------------------------------------------- YAML entries


def _parse_column_list(entries: Sequence[Mapping[str, Any]]) -> DeclaredSchema:
    if not entries:
        raise ConfigError("schema column list is empty")
    fields, constraints = [], {}
    for position, entry in enumerate(entries, start=1):
        struct_field, column_constraints = _parse_column_entry(entry, position)
        fields.append(struct_field)
        if not column_constraints.is_empty:
            constraints[struct_field.name] = column_constraints
    return DeclaredSchema(T.StructType(fields), constraints)


def _parse_column_entry(entry: Any, position: int) -> tuple[T.StructField, ColumnConstraints]:
    label = f"schema entry {position}"
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{label} must be a mapping with 'name' and 'type', not {entry!r}")
    name = entry.get("name")
    if isinstance(name, str) and name:
        label = f"schema entry {position} ({name!r})"
    unknown = sorted(set(map(str, entry)) - _YAML_KEYS)
    if unknown:
        raise ConfigError(f"{label} has unknown keys {unknown}; allowed keys: {sorted(_YAML_KEYS)}")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{label} needs a non-empty string 'name'")
    if "type" not in entry:
        raise ConfigError(f"{label} needs a 'type'")
    try:
        data_type = parse_type(entry["type"])
    except ConfigError as exc:
        raise ConfigError(f"{label}: {exc}") from None
    nullable = entry.get("nullable", True)
    if not isinstance(nullable, bool):
        raise ConfigError(f"{label}: 'nullable' must be true or false, not {nullable!r}")
    column_constraints = _parse_constraints(entry, data_type, label)
    return T.StructField(name, data_type, nullable=nullable), column_constraints


def _parse_constraints(
    entry: Mapping[str, Any], data_type: T.DataType, label: str
) -> ColumnConstraints:
    low, high = entry.get("min"), entry.get("max")
    for key, bound in (("min", low), ("max", high)):
        if bound is not None:
            _check_bound(bound, data_type, f"{label}: '{key}'")
    if low is not None and high is not None and _comparable(low) > _comparable(high):
        raise ConfigError(f"{label}: 'min' ({low!r}) is greater than 'max' ({high!r})")
    allowed = entry.get("allowed")
    if allowed is not None:
        allowed = _check_allowed(allowed, data_type, label)
    return ColumnConstraints(min=low, max=high, allowed=allowed)


def _check_bound(bound: Any, data_type: T.DataType, label: str) -> None:
    if not isinstance(data_type, ORDERED_TYPES):
        raise ConfigError(
            f"{label} applies only to numeric, date or timestamp columns, "
            f"not {data_type.simpleString()}"
        )
    if isinstance(data_type, NUMERIC_TYPES):
        if isinstance(bound, bool) or not isinstance(bound, (int, float)):
            raise ConfigError(f"{label} must be a number, not {bound!r}")
    else:
        if not isinstance(bound, (_dt.date, str)):
            raise ConfigError(f"{label} must be a date/timestamp or an ISO string, not {bound!r}")
        if isinstance(bound, str):
            try:
                _dt.datetime.fromisoformat(bound)
            except ValueError:
                raise ConfigError(f"{label} {bound!r} is not an ISO date or timestamp") from None


def _comparable(bound: Any) -> Any:
    # Mixed date / datetime / ISO string bounds compare as ISO text.
    if isinstance(bound, (int, float)):
        return bound
    return bound.isoformat() if isinstance(bound, _dt.date) else str(bound)


def _check_allowed(allowed: Any, data_type: T.DataType, label: str) -> tuple:
    if isinstance(allowed, (str, bytes)) or not isinstance(allowed, Iterable):
        raise ConfigError(f"{label}: 'allowed' must be a list of values, not {allowed!r}")
    values = tuple(allowed)
    if not values:
        raise ConfigError(f"{label}: 'allowed' is empty")
    for value in values:
        if not _fits(value, data_type):
            raise ConfigError(
                f"{label}: allowed value {value!r} does not fit type {data_type.simpleString()}"
            )
    return values


def _fits(value: Any, data_type: T.DataType) -> bool:
    if isinstance(data_type, T.StringType):
        return isinstance(value, str)
    if isinstance(data_type, T.BooleanType):
        return isinstance(value, bool)
    if isinstance(data_type, NUMERIC_TYPES):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, (_dt.date, str))


def _check_names(struct: T.StructType) -> None:
    if not struct.fields:
        raise ConfigError("schema has no columns")
    seen: set[str] = set()
    for f in struct.fields:
        if not f.name.strip():
            raise ConfigError("schema has a column with an empty name")
        if f.name in seen:
            raise ConfigError(f"schema declares column {f.name!r} twice")
        seen.add(f.name)

