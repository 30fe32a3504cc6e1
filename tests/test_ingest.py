"""Ingest: declared schemas, malformed-record detection, reconciliation, sources and errors."""

import datetime
import json
import os

import pytest
from pyspark.sql import types as T

from sparkml_aiaas.data import ingest, parse_schema, records, write_breast_cancer_csv
from sparkml_aiaas.data.ingest import REJECTED_SCHEMA, _reading
from sparkml_aiaas.data.masking import WHOLE_RECORD
from sparkml_aiaas.data.schema import ColumnConstraints
from sparkml_aiaas.errors import ConfigError, DataValidationError, InputNotFoundError

SCHEMA = "id INT NOT NULL, x DOUBLE NOT NULL, name STRING"


def write(folder, name, text, encoding="utf-8"):
    """Write ``text`` byte for byte (no newline translation)."""
    path = folder / name
    path.write_bytes(text.encode(encoding))
    return str(path)


def outcome(result):
    """Collect both sides and check that they reconcile with the counts."""
    accepted = result.accepted.collect()
    rejected = result.rejected.collect()
    counts = result.counts
    assert counts["read"] == counts["accepted"] + counts["rejected"]
    assert (len(accepted), len(rejected)) == (counts["accepted"], counts["rejected"])
    assert sum(result.reasons.values()) == counts["rejected"]
    result.unpersist()
    by_line = {r._line: r for r in rejected}
    assert len(by_line) == len(rejected) or None in by_line
    return accepted, by_line


def reasons_by_line(rejected):
    return {line: row._reason.split(": ")[0] for line, row in rejected.items()}


# ------------------------------------------------------------------ schema


def test_parse_schema_from_ddl():
    declared = parse_schema(
        "id INT NOT NULL, x DOUBLE, `odd name` decimal(10, 2) NOT NULL, s varchar(5)"
    )
    assert declared.struct == T.StructType(
        [
            T.StructField("id", T.IntegerType(), False),
            T.StructField("x", T.DoubleType(), True),
            T.StructField("odd name", T.DecimalType(10, 2), False),
            T.StructField("s", T.StringType(), True),
        ]
    )
    assert declared.constraints == {}


def test_parse_schema_from_yaml_list_with_constraints():
    declared = parse_schema(
        [
            {"name": "id", "type": "int", "nullable": False},
            {"name": "age", "type": "double", "min": 0, "max": 130},
            {"name": "sex", "type": "string", "allowed": ["f", "m"]},
            {"name": "day", "type": "date", "min": datetime.date(2020, 1, 1)},
        ]
    )
    assert declared.names == ["id", "age", "sex", "day"]
    assert [f.nullable for f in declared.struct.fields] == [False, True, True, True]
    assert declared.constraints == {
        "age": ColumnConstraints(min=0, max=130),
        "sex": ColumnConstraints(allowed=("f", "m")),
        "day": ColumnConstraints(min=datetime.date(2020, 1, 1)),
    }


def test_parse_schema_passes_struct_type_through():
    struct = T.StructType([T.StructField("a", T.LongType())])
    assert parse_schema(struct).struct is struct


@pytest.mark.parametrize(
    "schema, message",
    [
        ("id INT, x FLAOT", r"column 2 \('x'\).*unknown or unsupported type 'FLAOT'"),
        ("id INT, x", r"column 2 \('x'\) is not of the form"),
        ("id INT, id DOUBLE", r"declares column 'id' twice"),
        ([{"name": "a", "type": "map<string,int>"}], r"entry 1 \('a'\).*unsupported type"),
        ([{"name": "a", "type": "int"}, {"name": "b"}], r"entry 2 \('b'\) needs a 'type'"),
        (
            [{"name": "a", "type": "int", "nulable": False}],
            r"entry 1 \('a'\) has unknown keys \['nulable'\]",
        ),
        ([{"name": "a", "type": "int", "nullable": "no"}], r"'nullable' must be true or false"),
        ([{"name": "a", "type": "string", "min": 1}], r"'min' applies only to numeric"),
        ([{"name": "a", "type": "int", "min": 5, "max": 1}], r"'min' \(5\) is greater than 'max'"),
        ([{"name": "a", "type": "int", "allowed": []}], r"'allowed' is empty"),
        ([{"name": "a", "type": "int", "allowed": ["x"]}], r"allowed value 'x' does not fit"),
        (["a INT"], r"entry 1 must be a mapping"),
        ([], r"column list is empty"),
        (42, r"schema must be a DDL string"),
    ],
)
def test_parse_schema_errors_name_the_entry(schema, message):
    with pytest.raises(ConfigError, match=message):
        parse_schema(schema)


# -------------------------------------------------- record splitting (no Spark)


def test_whole_file_csv_splitting_keeps_quotes_and_line_starts():
    spec = records.TextSpec(format="csv")
    text = 'a,b\r\n1,"x, y"\r\n\r\n2,"two\r\nlines"\r\n3,"open\n'
    got = list(records.iter_csv_text(text, spec))
    assert got[0] == (0, "a,b", ["a", "b"], None)
    assert got[1] == (1, '1,"x, y"', ["1", "x, y"], None)
    assert got[2][:3] == (2, "", [])  # blank line, dropped by the caller
    assert got[3] == (3, '2,"two\r\nlines"', ["2", "two\r\nlines"], None)
    assert got[4][0:3] == (5, '3,"open', None) and got[4][3].startswith("unclosed quote")


# --------------------------------------------------------------- CSV ingest

MESSY_CSV = (
    "\ufeffid,x,name\r\n"  # BOM and CRLF
    '1,1.5,"Smith, J"\r\n'  # quoted comma: accepted
    "2,2.5\r\n"  # short row
    "\r\n"  # blank: not a record
    "3,3.5,c,extra\r\n"  # long row
    "4,abc,d\r\n"  # unparsable number
    "5,,e\r\n"  # empty value in a NOT NULL column
    "6,6.5,\r\n"  # empty value in a nullable column: accepted as null
    "   \r\n"  # whitespace only: blank
    "x7,7.5,g\r\n"  # unparsable int
    '8,8.5,"say ""hi"""\r\n'  # doubled quotes: accepted
    "9,1e3,i"  # no final line break: accepted
)


@pytest.mark.parametrize("multiline", [False, True], ids=["line-mode", "whole-file-mode"])
def test_csv_rejects_malformed_rows_with_reasons_and_lines(spark, tmp_path, multiline):
    path = write(tmp_path, "messy.csv", MESSY_CSV)
    result = ingest(spark, path, SCHEMA, options={"multiLine": multiline})
    # 12 physical lines = 1 header + 9 records + 2 blank.
    assert result.counts == {"read": 9, "accepted": 4, "rejected": 5, "blank": 2}
    assert result.reasons == {
        "null:x": 1,
        "too_few_fields": 1,
        "too_many_fields": 1,
        "unparsable:id": 1,
        "unparsable:x": 1,
    }
    # Exactly the declared columns, types and nullability.
    assert result.accepted.schema == parse_schema(SCHEMA).struct
    assert result.rejected.schema == REJECTED_SCHEMA
    # Both sides come from the cache: the source is not read again.
    os.remove(path)
    accepted, rejected = outcome(result)
    assert sorted(accepted) == [
        (1, 1.5, "Smith, J"),
        (6, 6.5, None),
        (8, 8.5, 'say "hi"'),
        (9, 1000.0, "i"),
    ]
    assert reasons_by_line(rejected) == {
        3: "too_few_fields",
        5: "too_many_fields",
        6: "unparsable:x",
        7: "null:x",
        10: "unparsable:id",
    }
    assert rejected[3]._reason == "too_few_fields: 2 fields, expected 3"
    assert rejected[3]._raw == "2,2.5"
    # The locator: where the record's bytes are (BOM and line break excluded).
    data = MESSY_CSV.encode("utf-8")
    for row in rejected.values():
        assert data[row._byte_offset:row._byte_offset + row._byte_length].decode() == row._raw
    assert rejected[5]._raw == "3,3.5,c,extra"
    assert rejected[6]._reason == "unparsable:x: 'abc' is not a valid DOUBLE"
    assert rejected[7]._reason == "null:x: missing value in a NOT NULL column"
    assert rejected[10]._source_file.endswith("messy.csv")


def test_csv_quoted_newlines_need_multiline(spark, tmp_path):
    text = 'id,x,name\n1,1.0,"two\nlines"\n2,2.0,b\n3,3.0,"never closed\n4,4.0,d\n'
    path = write(tmp_path, "multi.csv", text)

    accepted, rejected = outcome(ingest(spark, path, SCHEMA, options={"multiLine": True}))
    assert sorted(accepted) == [(1, 1.0, "two\nlines"), (2, 2.0, "b")]
    # The open quote swallows the rest of the file: one malformed record.
    assert list(rejected) == [5]
    assert rejected[5]._reason.startswith("malformed_record: unclosed quote")
    assert rejected[5]._raw == '3,3.0,"never closed\n4,4.0,d'

    # Line mode splits records at every line break and says why; a line inside a quoted
    # value (up to the line that closes it) is not a record of its own.  A quote no line
    # closes is a stray one: the lines after it are records.
    accepted, rejected = outcome(ingest(spark, path, SCHEMA, options={"multiLine": "false"}))
    assert sorted(accepted) == [(2, 2.0, "b"), (4, 4.0, "d")]
    assert reasons_by_line(rejected) == {
        2: "malformed_record",
        3: "malformed_record",
        5: "malformed_record",
    }
    assert "needs the multiLine=true option" in rejected[2]._reason
    assert rejected[3]._reason == (
        "malformed_record: inside a quoted value opened 1 line(s) above (a quoted value "
        "spanning lines needs the multiLine=true option)"
    )


def test_csv_constraints_from_yaml_schema(spark, tmp_path):
    # Quotes and backslashes in names and values must survive the generated SQL.
    schema = [
        {"name": "id", "type": "long", "nullable": False},
        {"name": "age", "type": "double", "nullable": False, "min": 0, "max": 130},
        {"name": "it's \\ kind", "type": "string", "allowed": ["f", "o'k \\"]},
        {"name": "day", "type": "date", "min": "2020-01-01"},
    ]
    text = (
        "id,age,it's \\ kind,day\n"
        "1,30,f,2020-01-01\n"
        "2,-1,f,\n"
        "3,131.5,f,\n"
        "4,40,x,\n"
        "5,50,,2021-06-30\n"
        "6,,f,\n"
        "7,70,o'k \\,2019-12-31\n"
        "8,80,o'k \\,2020-02-30\n"
        "9,90,o'k \\,\n"
    )
    accepted, rejected = outcome(ingest(spark, write(tmp_path, "c.csv", text), schema))
    assert sorted(accepted) == [
        (1, 30.0, "f", datetime.date(2020, 1, 1)),
        (5, 50.0, None, datetime.date(2021, 6, 30)),
        (9, 90.0, "o'k \\", None),
    ]
    assert reasons_by_line(rejected) == {
        3: "out_of_range:age",
        4: "out_of_range:age",
        5: "not_allowed:it's \\ kind",
        7: "null:age",
        8: "out_of_range:day",
        9: "unparsable:day",
    }
    assert rejected[3]._reason == "out_of_range:age: -1.0 is below the minimum 0"
    assert rejected[4]._reason == "out_of_range:age: 131.5 is above the maximum 130"
    assert rejected[5]._reason == "not_allowed:it's \\ kind: 'x' is not one of [f, o'k \\]"
    assert rejected[8]._reason == "out_of_range:day: 2019-12-31 is below the minimum 2020-01-01"
    assert rejected[9]._reason == "unparsable:day: '2020-02-30' is not a valid DATE"


def test_csv_header_maps_columns_by_name_per_file(spark, tmp_path):
    folder = tmp_path / "parts"
    folder.mkdir()
    write(folder, "a.csv", "id,x,name\n1,1.0,a\n")
    write(folder, "b.csv", "name,id,x\nb,2,2.0\nc,3\n")
    write(folder, "empty.csv", "")
    accepted, rejected = outcome(ingest(spark, str(folder), SCHEMA))
    assert sorted(accepted) == [(1, 1.0, "a"), (2, 2.0, "b")]
    assert reasons_by_line(rejected) == {3: "too_few_fields"}
    assert rejected[3]._source_file.endswith("b.csv")


def test_csv_without_header_options_and_glob(spark, tmp_path):
    # Semicolons, single quotes, "NA" for null, Latin-1 (read file by file).
    text = "1;2,5;'caf\u00e9; cr\u00e8me'\n2;NA;NA\n3;NA;x\n"
    write(tmp_path, "data1.txt", text, encoding="latin-1")
    write(tmp_path, "other.csv", "not;matched;by glob\n")
    schema = "id INT NOT NULL, x STRING NOT NULL, name STRING"
    options = {"header": False, "sep": ";", "quote": "'", "nullValue": "NA", "encoding": "latin-1"}
    result = ingest(spark, str(tmp_path / "data*.txt"), schema, options=options)
    accepted, rejected = outcome(result)
    assert sorted(accepted) == [(1, "2,5", "caf\u00e9; cr\u00e8me")]
    assert reasons_by_line(rejected) == {2: "null:x", 3: "null:x"}


def test_csv_line_numbers_across_file_splits(spark, tmp_path):
    lines = ["id,x,name"] + [f"{i},{i}.5,n{i}" for i in range(1, 301)]
    lines[120] = "120,oops,n120"
    lines[250] = "250,250.5"
    lines.insert(200, "")  # a blank line shifts what follows
    path = write(tmp_path, "big.csv", "\n".join(lines) + "\n")
    previous = spark.conf.get("spark.sql.files.maxPartitionBytes")
    spark.conf.set("spark.sql.files.maxPartitionBytes", "1000")
    try:
        splits = spark.read.text(path).rdd.getNumPartitions()  # planning only, no job
        result = ingest(spark, path, SCHEMA)
        assert result.counts == {"read": 300, "accepted": 298, "rejected": 2, "blank": 1}
        rows = result.rejected.collect()
        rejected = {r._line: r._raw for r in rows}
        result.unpersist()
    finally:
        spark.conf.set("spark.sql.files.maxPartitionBytes", previous)
    assert splits >= 3  # the file really was read in several splits
    assert rejected == {121: "120,oops,n120", 252: "250,250.5"}
    data = open(path, "rb").read()
    for r in rows:
        assert data[r._byte_offset:r._byte_offset + r._byte_length].decode() == r._raw


def test_csv_header_mismatch_names_columns(spark, tmp_path):
    path = write(tmp_path, "h.csv", "id,X,name,extra\n1,1.0,a,b\n")
    message = (r"^missing columns \['x'\] and unexpected columns \['X', 'extra'\] in the header "
               r"of file:\S+/h\.csv \(expected 3 columns: id, x, name; "
               r"on_schema_drift='error'\)$")
    with pytest.raises(DataValidationError, match=message):
        ingest(spark, path, SCHEMA)


def test_a_missing_column_is_named_first_then_the_file_then_the_declared_columns(
        spark, tmp_path):
    # The README's quickstart CSV without mean_area, read with conf/train.yaml's schema.
    import csv

    import yaml

    full = str(tmp_path / "full.csv")
    write_breast_cancer_csv(full)
    with open(full, newline="") as f:
        rows = list(csv.reader(f))
    drop = rows[0].index("mean_area")
    path = tmp_path / "x.csv"
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(row[:drop] + row[drop + 1:] for row in rows)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "conf", "train.yaml")) as f:
        declared = yaml.safe_load(f)["input"]["schema"]
    with pytest.raises(DataValidationError) as info:
        ingest(spark, str(path), declared, options={"header": True})
    assert str(info.value) == (
        f"missing columns ['mean_area'] in the header of file:{path} (expected 32 columns: id, "
        "mean_radius, mean_texture, mean_perimeter, mean_area, mean_smoothness, "
        "mean_compactness, mean_concavity, mean_concave_points, mean_symmetry, … (+22 more); "
        "on_schema_drift='error')")


def test_max_reject_fraction_reports_counts_and_top_reasons(spark, tmp_path):
    path = write(tmp_path, "messy.csv", MESSY_CSV)
    quarantine = str(tmp_path / "quarantine")
    message = (
        r"rejected 5 of 9 records \(55\.56%\), more than max_reject_fraction=0\.5; accepted 4; "
        r"top reasons: null:x \(1\), too_few_fields \(1\), too_many_fields \(1\); "
        r"rejected rows written to .*quarantine"
    )
    with pytest.raises(DataValidationError, match=message):
        ingest(spark, path, SCHEMA, quarantine_path=quarantine, max_reject_fraction=0.5)
    # Written before failing, so the rejects can be inspected.
    quarantined = spark.read.parquet(quarantine)
    assert quarantined.schema == REJECTED_SCHEMA
    assert quarantined.count() == 5

    result = ingest(spark, path, SCHEMA, max_reject_fraction=0.6)
    assert result.counts["rejected"] == 5
    outcome(result)


def test_bundled_breast_cancer_round_trips(spark, tmp_path):
    dataset = write_breast_cancer_csv(str(tmp_path / "new" / "dir" / "bc.csv"))
    assert os.path.isfile(dataset.path) and dataset.n_rows == 569
    assert dataset.feature_cols[0] == "mean_radius" and len(dataset.feature_cols) == 30
    assert "worst_concave_points" in dataset.feature_cols
    assert dataset.schema_ddl.startswith("id INT NOT NULL, mean_radius DOUBLE NOT NULL")
    result = ingest(spark, dataset.path, dataset.schema_ddl)
    assert result.counts == {"read": 569, "accepted": 569, "rejected": 0, "blank": 0}
    assert result.accepted.columns == ["id", *dataset.feature_cols, "label"]
    assert result.accepted.where("label = 1").count() == 357  # benign
    result.unpersist()


# ---------------------------------------------------------- JSON and Parquet


def test_json_lines(spark, tmp_path):
    text = (
        '{"id": 1, "x": 1.5, "name": "a", "ignored": [1]}\n'
        '{"id": 2, "x": "2.5"}\n'  # numbers as strings parse; absent name is null
        "\n"
        '{"id": 3, "name": "c"}\n'  # x absent in a NOT NULL column
        '{"id": 4, "x": "four"}\n'
        '{"id": 5, "x": 5.0, "name": {"nested": true}}\n'  # objects stay JSON text in a string
        "{not json}\n"
        "[6, 6.0]\n"
        '{"id": 7.5, "x": 7}\n'
    )
    path = write(tmp_path, "r.jsonl", text)
    accepted, rejected = outcome(ingest(spark, path, SCHEMA, format="json"))
    assert sorted(accepted) == [(1, 1.5, "a"), (2, 2.5, None), (5, 5.0, '{"nested": true}')]
    assert reasons_by_line(rejected) == {
        4: "null:x",
        5: "unparsable:x",
        7: "malformed_record",
        8: "malformed_record",
        9: "unparsable:id",
    }
    assert rejected[8]._reason == (
        "malformed_record: a JSON lines record must be an object, not list"
    )


def test_parquet_source(spark, tmp_path):
    folder = str(tmp_path / "pq")
    rows = [(1, "1.5", "a", 0), (None, "2.5", "b", 0), (3, "three", "c", 0)]
    spark.createDataFrame(rows, "id int, x string, name string, unused int").write.parquet(folder)
    # An unexpected column is schema drift: an error by default, ignored on request.
    with pytest.raises(DataValidationError, match=r"^unexpected columns \['unused'\] in Parquet "
                       r"data at \S+ \(expected 3 columns: id, x, name; on_schema_drift='error'; "
                       r"it has 4: id, name, unused, x\)$"):
        ingest(spark, folder, SCHEMA, format="parquet")
    result = ingest(spark, folder, SCHEMA, format="parquet", on_schema_drift="ignore_extra")
    assert result.counts == {"read": 3, "accepted": 1, "rejected": 2, "blank": 0}
    assert result.accepted.collect() == [(1, 1.5, "a")]
    rejected = sorted(result.rejected.collect())
    assert [(r._raw, r._reason) for r in rejected] == [
        ('{"id":3,"x":"three","name":"c"}', "unparsable:x: 'three' is not a valid DOUBLE"),
        ('{"x":"2.5","name":"b"}', "null:id: missing value in a NOT NULL column"),
    ]
    assert all(r._byte_offset is None and r._byte_length is None for r in rejected)
    assert all(r._source_file.endswith(".parquet") for r in rejected)
    # For Parquet, _line is the row's 1-based number in its file.
    for r in rejected:
        in_file = spark.read.parquet(r._source_file).collect()
        assert in_file[r._line - 1].x == json.loads(r._raw)["x"]
    result.unpersist()

    with pytest.raises(DataValidationError, match=r"^missing columns \['z'\] in Parquet data"):
        ingest(spark, folder, "id INT, z DOUBLE", format="parquet", on_schema_drift="ignore_extra")
    # "allow": a missing nullable column reads as null; a missing NOT NULL one is still an error.
    result = ingest(spark, folder, "id INT NOT NULL, z DOUBLE", format="parquet", on_schema_drift="allow")
    assert sorted(result.accepted.collect()) == [(1, None), (3, None)]
    assert result.counts == {"read": 3, "accepted": 2, "rejected": 1, "blank": 0}
    result.unpersist()
    with pytest.raises(DataValidationError, match=r"^missing columns \['z'\] in Parquet data"):
        ingest(spark, folder, "id INT, z DOUBLE NOT NULL", format="parquet", on_schema_drift="allow")


# ------------------------------------------------------------------ errors


def test_missing_paths_raise_input_not_found(spark, tmp_path):
    missing = str(tmp_path / "nope.csv")
    with pytest.raises(InputNotFoundError, match=r"nope\.csv.*does not exist"):
        ingest(spark, missing, SCHEMA)
    with pytest.raises(InputNotFoundError, match=r"\*\.csv' matches no files"):
        ingest(spark, str(tmp_path / "*.csv"), SCHEMA)
    # Paths Spark itself finds missing (e.g. remote ones) are translated too.
    with pytest.raises(InputNotFoundError, match=r"nope\.csv"):
        _reading(lambda: spark.read.text(missing), [missing])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"format": "xml"}, r"unknown ingest format 'xml'"),
        ({"options": {"headr": True}}, r"unsupported csv option\(s\) \['headr'\]"),
        ({"options": {"sep": ";;"}}, r"sep must be a single character"),
        ({"options": {"header": "yes"}}, r"header must be true or false"),
        ({"options": {"encoding": "klingon"}}, r"unknown encoding 'klingon'"),
        ({"format": "json", "options": {"multiLine": True}}, r"JSON lines"),
        ({"max_reject_fraction": 1.5}, r"max_reject_fraction must be a number between 0 and 1"),
    ],
)
def test_bad_arguments_raise_config_error(spark, tmp_path, kwargs, message):
    path = write(tmp_path, "ok.csv", "id,x,name\n1,1.0,a\n")
    with pytest.raises(ConfigError, match=message):
        ingest(spark, path, SCHEMA, **kwargs)


# ------------------------------------------------------------- schema drift


def test_csv_schema_drift_policies(spark, tmp_path):
    folder = tmp_path / "drift"
    folder.mkdir()
    write(folder, "a.csv", "id,x,name\n1,1.0,a\n")
    write(folder, "b.csv", "id,x,name,added\n2,2.0,b,new\n3,3.0,c\n")  # an added column
    write(folder, "c.csv", "x,id\n4.0,4\n")  # the nullable name column is missing
    with pytest.raises(DataValidationError,
                       match=r"unexpected columns \['added'\] in the header of \S+b\.csv"):
        ingest(spark, str(folder), SCHEMA)
    with pytest.raises(DataValidationError,
                       match=r"^missing columns \['name'\] in the header of \S+c\.csv"):
        ingest(spark, str(folder), SCHEMA, on_schema_drift="ignore_extra")

    accepted, rejected = outcome(ingest(spark, str(folder), SCHEMA, on_schema_drift="allow"))
    assert sorted(accepted) == [(1, 1.0, "a"), (2, 2.0, "b"), (4, 4.0, None)]
    # Field counts are checked against each file's own header.
    assert reasons_by_line(rejected) == {3: "too_few_fields"}
    assert rejected[3]._reason == "too_few_fields: 3 fields, expected 4"

    with pytest.raises(DataValidationError, match=r"missing columns \['x'\] \(NOT NULL\)"):
        write(folder, "d.csv", "id,name\n5,e\n")
        ingest(spark, str(folder), SCHEMA, on_schema_drift="allow")
    with pytest.raises(ConfigError, match="on_schema_drift must be one of"):
        ingest(spark, str(folder), SCHEMA, on_schema_drift="lenient")


# ---------------------------------------------------------------------- PII

PII_KEY = "k" * 16 + "-test-key-0123456789"
PII_CSV = (
    "id,email,ssn,x\n"
    "1,ann@example.com,111-22-3333,1.5\n"
    "2,bob@example.com,444-55-6666,oops\n"  # rejected: unparsable x
    '3,"carl@example.com",777-88-9999,3.5,extra\n'  # rejected: too many fields
    '4,"dora@example.com,777-00-1234,4.5\n'  # rejected: unclosed quote (cannot be split)
    "5,,123-45-6789,5.5\n"
)
PII_SCHEMA = "id INT NOT NULL, email STRING, ssn STRING, x DOUBLE"


def _hmac(value):
    import hashlib
    import hmac

    return hmac.new(PII_KEY.encode(), value.encode(), hashlib.sha256).hexdigest()


def _whole(raw):
    """What a record masked as a whole looks like."""
    return f"{WHOLE_RECORD} hmac-sha256:{_hmac(raw)}"


def test_pii_is_hashed_or_dropped_before_anything_is_written(spark, tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_PII_KEY", PII_KEY)
    path = write(tmp_path, "people.csv", PII_CSV)
    pii = {"columns": {"email": "hash", "ssn": "drop"}, "key_env": "TEST_PII_KEY"}
    quarantine = str(tmp_path / "quarantine")
    result = ingest(spark, path, PII_SCHEMA, pii=pii, quarantine_path=quarantine)
    assert result.counts == {"read": 5, "accepted": 2, "rejected": 3, "blank": 0}
    assert result.accepted.columns == ["id", "email", "x"]
    accepted = sorted(result.accepted.collect())
    assert accepted == [(1, _hmac("ann@example.com"), 1.5), (5, None, 5.5)]
    out = str(tmp_path / "accepted")
    result.accepted.write.parquet(out)
    rejected = {r._line: r for r in result.rejected.collect()}
    result.unpersist()
    # PII fields inside the raw text are masked the same way, the rest kept as read.
    assert rejected[3]._raw == f"2,{_hmac('bob@example.com')},[redacted],oops"
    assert rejected[3]._reason == "unparsable:x: 'oops' is not a valid DOUBLE"
    # A record without exactly the file's fields is masked whole (its fields may be shifted)...
    assert rejected[4]._raw == _whole('3,"carl@example.com",777-88-9999,3.5,extra')
    assert rejected[5]._raw == _whole('4,"dora@example.com,777-00-1234,4.5')
    # ... and found again in the source through its locator.
    data = PII_CSV.encode()
    found = data[rejected[4]._byte_offset:rejected[4]._byte_offset + rejected[4]._byte_length]
    assert found == b'3,"carl@example.com",777-88-9999,3.5,extra'

    secrets = [b"example.com", b"111-22", b"444-55", b"777-88", b"777-00", b"123-45", PII_KEY.encode()]
    written = 0
    for folder in (out, quarantine):
        for root, _, files in os.walk(folder):
            for name in files:
                data = open(os.path.join(root, name), "rb").read()
                written += len(data)
                leaked = [s for s in secrets if s in data]
                assert not leaked, f"{name} contains {leaked}"
    assert written > 0


def test_pii_reasons_do_not_quote_values_and_json_is_masked(spark, tmp_path, monkeypatch):
    monkeypatch.setenv("SPARKML_AIAAS_PII_KEY", PII_KEY)
    text = '{"id": 1, "email": "ann@example.com"}\n{"id": 2, "email": 7, "x": 1}\n'
    path = write(tmp_path, "people.jsonl", text)
    schema = [
        {"name": "id", "type": "int", "nullable": False},
        {"name": "email", "type": "string", "allowed": ["nobody"]},
    ]
    result = ingest(spark, path, schema, format="json", pii={"columns": {"email": "hash"}})
    rejected = sorted(result.rejected.collect(), key=lambda r: r._line)
    result.unpersist()
    assert [r._reason for r in rejected] == [
        "not_allowed:email: '[redacted]' is not one of [nobody]",
        "not_allowed:email: '[redacted]' is not one of [nobody]",
    ]
    assert rejected[0]._raw == '{"id": 1, "email": "%s"}' % _hmac("ann@example.com")
    # An undeclared key may hold anything: the object is masked whole.
    assert rejected[1]._raw == _whole('{"id": 2, "email": 7, "x": 1}')


def test_pii_configuration_errors(spark, tmp_path, monkeypatch):
    path = write(tmp_path, "people.csv", PII_CSV)
    monkeypatch.delenv("SPARKML_AIAAS_PII_KEY", raising=False)
    with pytest.raises(ConfigError, match="set the environment variable SPARKML_AIAAS_PII_KEY"):
        ingest(spark, path, PII_SCHEMA, pii={"columns": {"email": "hash"}})
    with pytest.raises(ConfigError, match="pii.key is not allowed"):
        ingest(spark, path, PII_SCHEMA, pii={"columns": {"email": "hash"}, "key": PII_KEY})
    with pytest.raises(ConfigError, match=r"PII columns \['phone'\] are not declared"):
        ingest(spark, path, PII_SCHEMA, pii={"columns": {"phone": "drop"}})
    monkeypatch.setenv("SPARKML_AIAAS_PII_KEY", "short")
    with pytest.raises(ConfigError, match="is 5 bytes; at least 16") as info:
        ingest(spark, path, PII_SCHEMA, pii={"columns": {"email": "hash"}})
    assert "short" not in str(info.value)
    key_file = tmp_path / "key"
    key_file.write_text(PII_KEY + "\n")
    result = ingest(spark, path, PII_SCHEMA, pii={"columns": {"email": "hash"}, "key_file": str(key_file)})
    assert sorted(result.accepted.collect())[0].email == _hmac("ann@example.com")
    result.unpersist()


def test_batched_csv_parsing_equals_line_by_line():
    # One reader over many lines must give exactly what a reader per line gives,
    # including open quotes (which a shared reader would carry into the next line).
    import random

    spec = records.TextSpec(format="csv")
    cases = ['a,b', '"a,b",c', '"open,x', 'y,z', '"ab"c,d', '"x""y",1', 'q,"multi', 'line",w',
             '"a"', 'a"b,c', '"unterminated', ',,', '" spaced "']
    rng = random.Random(1)
    for _ in range(2000):
        lines = [rng.choice(cases) for _ in range(rng.randint(0, 12))]
        fields, errors = records.parse_csv_lines(lines, spec)
        expected = [records.parse_csv_line(line, spec) for line in lines]
        assert list(zip(fields, errors)) == expected, lines


def test_delta_source_with_time_travel(spark, tmp_path):
    from sparkml_aiaas.data import write_table

    table = str(tmp_path / "people_table")
    write_table(spark.createDataFrame([(1, "1.5"), (2, "bad")], "id int, x string"), table)
    write_table(spark.createDataFrame([(3, "3.5")], "id int, x string"), table)
    schema = "id INT NOT NULL, x DOUBLE"
    result = ingest(spark, table, schema, format="delta")
    accepted, rejected = outcome(result)
    assert sorted(accepted) == [(1, 1.5), (3, 3.5)]
    assert [r._reason for r in rejected.values()] == ["unparsable:x: 'bad' is not a valid DOUBLE"]
    assert [r._raw for r in rejected.values()] == ['{"id":2,"x":"bad"}']

    accepted, _ = outcome(ingest(spark, table, schema, format="delta", options={"version": 0}))
    assert sorted(accepted) == [(1, 1.5)]
    with pytest.raises(ConfigError, match="option version must be a non-negative integer"):
        ingest(spark, table, schema, format="delta", options={"version": -1})


def test_header_found_past_the_first_read(spark, tmp_path):
    # 80 KB of blank lines before the header: more than the first 64 KiB read of each file.
    blank = "   \n" * 20_000
    path = write(tmp_path, "late_header.csv", blank + "name,id,x\nb,2,2.0\n")
    accepted, rejected = outcome(ingest(spark, path, SCHEMA))
    assert accepted == [(2, 2.0, "b")] and not rejected
    accepted, _ = outcome(ingest(spark, path, SCHEMA, options={"multiLine": True}))
    assert accepted == [(2, 2.0, "b")]


def test_first_record_reports_truncation():
    spec = records.TextSpec(format="csv", header=True)
    assert records.first_record(b"a,b\n1,2\n", spec, False, truncated=True) == (["a", "b"], None)
    with pytest.raises(records.Truncated):
        records.first_record(b"a,b", spec, False, truncated=True)
    assert records.first_record(b"a,b", spec, False, truncated=False) == (["a", "b"], None)
    with pytest.raises(records.Truncated):
        records.first_record(b'"a\nstill a",b', spec, True, truncated=True)
    assert records.first_record(b'"a\nb",c\n1,2\n', spec, True, truncated=True) == (["a\nb", "c"], None)
