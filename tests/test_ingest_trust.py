"""Ingest trust boundaries: PII in uncertain records, encodings, non-finite numbers, blank lines,
and the locator that finds every rejected record in its source."""

import glob
import hashlib
import hmac
import json
import os

import pytest

from sparkml_aiaas.cli import main
from sparkml_aiaas.config import IngestJobConfig, validate_config
from sparkml_aiaas.data import ingest
from sparkml_aiaas.data.ingest import non_finite_policies
from sparkml_aiaas.data.masking import WHOLE_RECORD
from sparkml_aiaas.data.schema import parse_schema
from sparkml_aiaas.errors import ConfigError

KEY = "trust-boundary-test-key-0123456789"
PII = {"columns": {"email": "hash", "ssn": "drop"}, "key_env": "TRUST_TEST_PII_KEY"}
SCHEMA = [
    {"name": "id", "type": "int", "nullable": False},
    {"name": "email", "type": "string"},
    {"name": "ssn", "type": "string"},
    {"name": "age", "type": "int", "min": 0, "max": 130},
    {"name": "score", "type": "double"},
    {"name": "city", "type": "string", "allowed": ["paris", "lyon", "zurich"]},
]
HEADER = b"id,email,ssn,age,score,city\n"


def _hmac(text):
    return hmac.new(KEY.encode(), text.encode(), hashlib.sha256).hexdigest()


def _needle(i):
    return f"needle{i:02d}@example.com"


def _ssn(i):
    return f"9{i:02d}-55-{i:04d}"


# One record per reason code, each with its own PII needles (email, ssn).  In the records
# that do not split into exactly six fields the PII sits in non-PII positions.
CASES = {
    "accepted": lambda i: f"{i},{_needle(i)},{_ssn(i)},30,1.5,paris",
    "too_many_fields": lambda i: f"{i},x,y,{_needle(i)},{_ssn(i)},1.0,paris",  # the probe's shift
    "too_few_fields": lambda i: f"{i},{_needle(i)},{_ssn(i)},paris",
    "invalid_encoding": lambda i: f"{i},{_needle(i)},{_ssn(i)},30,1.5,Z\udcfcrich",
    "unparsable:age": lambda i: f"{i},{_needle(i)},{_ssn(i)},thirty,1.5,paris",
    "null:id": lambda i: f",{_needle(i)},{_ssn(i)},30,1.5,paris",
    "out_of_range:age": lambda i: f"{i},{_needle(i)},{_ssn(i)},200,1.5,paris",
    "out_of_range:score": lambda i: f"{i},{_needle(i)},{_ssn(i)},30,1e400,paris",
    "non_finite:score": lambda i: f"{i},{_needle(i)},{_ssn(i)},30,NaN,paris",
    "not_allowed:city": lambda i: f"{i},{_needle(i)},{_ssn(i)},30,1.5,berlin",
    # Last: in multiLine mode an open quote runs to the end of the file.
    "malformed_record": lambda i: f'{i},"{_needle(i)},{_ssn(i)},30,1.5,paris',
}


def _pii_csv():
    lines = [CASES[code](i + 1) for i, code in enumerate(CASES)]
    # surrogateescape turns \udcfc back into the single byte 0xfc (invalid UTF-8).
    return HEADER + b"\n".join(line.encode("utf-8", "surrogateescape") for line in lines) + b"\n"


def _needles(data: bytes):
    found = {n.encode() for i in range(1, len(CASES) + 1) for n in (_needle(i), _ssn(i))}
    return sorted(n for n in found if n in data)


def _files_bytes(folder):
    for path in glob.glob(os.path.join(folder, "**", "*"), recursive=True):
        if os.path.isfile(path):
            with open(path, "rb") as handle:
                yield path, handle.read()


@pytest.fixture
def pii_key(monkeypatch):
    monkeypatch.setenv("TRUST_TEST_PII_KEY", KEY)


@pytest.mark.parametrize("multiline", [False, True], ids=["line-mode", "whole-file-mode"])
def test_pii_never_reaches_the_quarantine_for_any_reason_code(spark, tmp_path, pii_key, multiline):
    data = _pii_csv()
    path = tmp_path / "people.csv"
    path.write_bytes(data)
    assert len(_needles(data)) == 2 * len(CASES)  # every needle is in the source
    quarantine = str(tmp_path / "quarantine")
    result = ingest(spark, str(path), SCHEMA, options={"multiLine": multiline}, pii=PII,
                    quarantine_path=quarantine)
    expected = {code: 1 for code in CASES if code != "accepted"}
    assert result.reasons == dict(sorted(expected.items()))
    assert result.counts == {"read": len(CASES), "accepted": 1, "rejected": len(CASES) - 1,
                             "blank": 0}
    rows = {r._reason.split(": ")[0]: r for r in result.rejected.collect()}
    accepted = result.accepted.collect()
    result.unpersist()

    # Not in the DataFrame, not in any written byte.
    for row in rows.values():
        assert not _needles(row._raw.encode()), row
        assert not _needles(row._reason.encode()), row
    assert not _needles(json.dumps([r.asDict() for r in accepted]).encode())
    written = list(_files_bytes(quarantine))
    assert written
    for name, content in written:
        assert not _needles(content), name

    # Uncertain records are masked whole; the others field by field.
    for code in ("too_many_fields", "too_few_fields", "malformed_record", "invalid_encoding"):
        assert rows[code]._raw.startswith(WHOLE_RECORD + " hmac-sha256:"), code
    i = list(CASES).index("unparsable:age") + 1
    assert rows["unparsable:age"]._raw == f"{i},{_hmac(_needle(i))},[redacted],thirty,1.5,paris"
    # Nothing is lost: the locator finds the original bytes in the source.
    for code, row in rows.items():
        original = data[row._byte_offset:row._byte_offset + row._byte_length]
        i = list(CASES).index(code) + 1
        assert original == CASES[code](i).encode("utf-8", "surrogateescape"), code
        assert row._line == i + 1 and row._source_file.endswith("people.csv")


def test_pii_through_the_cli_with_a_delta_quarantine(spark, tmp_path, pii_key, capsys):
    data = _pii_csv()
    (tmp_path / "people.csv").write_bytes(data)
    schema = "id INT NOT NULL, email STRING, ssn STRING, age INT, score DOUBLE, city STRING"
    config = tmp_path / "ingest.yaml"
    config.write_text(f"""
input: {{path: {tmp_path / 'people.csv'}, schema: "{schema}", non_finite: {{score: keep}}}}
pii: {{columns: {{email: hash, ssn: drop}}, key_env: TRUST_TEST_PII_KEY}}
output: {{path: {tmp_path / 'out'}, format: delta}}
quarantine: {{path: {tmp_path / 'q'}, format: delta}}
report_path: {tmp_path / 'report.json'}
""")
    assert main(["ingest", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "rejected=7 blank=0" in out
    for folder in ("out", "q"):
        for name, content in _files_bytes(str(tmp_path / folder)):
            assert not _needles(content), name  # data files and the Delta log's stats alike
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["non_finite"] == {"score": "keep"}
    assert report["reasons"]["invalid_encoding"] == 1


@pytest.mark.parametrize("multiline", [False, True], ids=["line-mode", "whole-file-mode"])
def test_invalid_utf8_is_one_rejected_record(spark, tmp_path, multiline):
    data = b"id,city\n1,paris\n2,Z\xfcrich\n3,Z\xc3\xbcrich\n4,\xff\xfe\n"
    path = tmp_path / "cities.csv"
    path.write_bytes(data)
    result = ingest(spark, str(path), "id INT, city STRING", options={"multiLine": multiline})
    assert result.counts == {"read": 4, "accepted": 2, "rejected": 2, "blank": 0}
    assert sorted(result.accepted.collect()) == [(1, "paris"), (3, "Z\u00fcrich")]
    rows = sorted(result.rejected.collect(), key=lambda r: r._line)
    result.unpersist()
    assert [r._raw for r in rows] == ["2,Z\\xfcrich", "4,\\xff\\xfe"]
    assert rows[0]._reason == (
        "invalid_encoding: bytes not valid utf-8 (first undecodable byte at offset 3 of the "
        "record; _raw shows undecodable bytes as \\xNN)"
    )
    assert [data[r._byte_offset:r._byte_offset + r._byte_length] for r in rows] == [
        b"2,Z\xfcrich", b"4,\xff\xfe"]


def test_invalid_bytes_through_the_cli_are_quarantined_not_a_traceback(spark, tmp_path, capsys):
    (tmp_path / "in.csv").write_bytes(b"id,x\n1,Z\xfcrich\n2,ok\n")
    config = tmp_path / "ingest.yaml"
    config.write_text(f"""
input: {{path: {tmp_path / 'in.csv'}, schema: "id INT, x STRING"}}
output: {{path: {tmp_path / 'out'}}}
quarantine: {{path: {tmp_path / 'q'}}}
""")
    assert main(["ingest", "--config", str(config)]) == 0
    captured = capsys.readouterr()
    assert "read=2 accepted=1 rejected=1 blank=0 top_reasons=invalid_encoding:1" in captured.out
    assert "Traceback" not in captured.err
    q = spark.read.parquet(str(tmp_path / "q")).collect()
    assert [(r._raw, r._line, r._byte_offset, r._byte_length) for r in q] == [
        ("1,Z\\xfcrich", 2, 5, 8)]


def test_declared_encodings_are_honoured(spark, tmp_path):
    # Latin-1: every byte is a character; cp1252 leaves 0x81 undefined.
    (tmp_path / "latin1.csv").write_bytes("id,city\n1,Z\u00fcrich\n".encode("latin-1"))
    result = ingest(spark, str(tmp_path / "latin1.csv"), "id INT, city STRING",
                    options={"encoding": "latin-1"})
    assert result.accepted.collect() == [(1, "Z\u00fcrich")]
    result.unpersist()
    (tmp_path / "cp1252.csv").write_bytes(b"id,city\n1,\x80uro\n2,\x81\n")
    result = ingest(spark, str(tmp_path / "cp1252.csv"), "id INT, city STRING",
                    options={"encoding": "cp1252"})
    assert result.accepted.collect() == [(1, "\u20acuro")]
    assert [(r._raw, r._reason.split(":")[0]) for r in result.rejected.collect()] == [
        ("2,\\x81", "invalid_encoding")]
    result.unpersist()
    # ASCII (read line by line) refuses bytes above 0x7f, even valid UTF-8 ones.
    (tmp_path / "ascii.csv").write_bytes("id,city\n1,Z\u00fcrich\n2,Zurich\n".encode("utf-8"))
    result = ingest(spark, str(tmp_path / "ascii.csv"), "id INT, city STRING",
                    options={"encoding": "ascii"})
    assert result.accepted.collect() == [(2, "Zurich")]
    assert result.reasons == {"invalid_encoding": 1}
    result.unpersist()
    # UTF-16 with a BOM and CRLF; a lone surrogate is invalid.  Offsets count bytes.
    text = "id,city\r\n1,Z\u00fcrich\r\n2,X\r\n".encode("utf-16")
    bad = text.replace("X".encode("utf-16-le"), b"\x00\xd8")
    (tmp_path / "utf16.csv").write_bytes(bad)
    result = ingest(spark, str(tmp_path / "utf16.csv"), "id INT, city STRING",
                    options={"encoding": "utf-16"})
    assert result.accepted.collect() == [(1, "Z\u00fcrich")]
    (row,) = result.rejected.collect()
    result.unpersist()
    assert row._reason.startswith("invalid_encoding") and row._line == 3
    found = bad[row._byte_offset:row._byte_offset + row._byte_length]
    assert found == "2,".encode("utf-16-le") + b"\x00\xd8"
    with pytest.raises(ConfigError, match="'base64' is not a text encoding"):
        ingest(spark, str(tmp_path / "ascii.csv"), "id INT, city STRING",
               options={"encoding": "base64"})


# ------------------------------------------------------------- non-finite numbers

NUMBERS = ["1.5", "1e400", "-1e400", "9" * 400, "1e39", "NaN", "nan", "Infinity", "-Inf", "inf",
           "-1e-400"]


def _numbers_csv(tmp_path):
    lines = ["id,d,f"] + [f"{i},{v},{v}" for i, v in enumerate(NUMBERS)]
    path = tmp_path / "numbers.csv"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _reasons_by_id(result):
    """``{id: reason code}`` of the rejected CSV rows."""
    return {int(r._raw.split(",")[0]): r._reason.split(": ")[0] for r in result.rejected.collect()}


def _json_reasons_by_id(result):
    return {json.loads(r._raw)["id"]: r._reason.split(": ")[0] for r in result.rejected.collect()}


def test_overflow_is_out_of_range_and_literal_non_finite_follows_the_policy(spark, tmp_path):
    path = _numbers_csv(tmp_path)
    schema = "id INT, d DOUBLE, f FLOAT"
    overflow = {1: "out_of_range:d", 2: "out_of_range:d", 3: "out_of_range:d", 4: "out_of_range:f"}
    result = ingest(spark, path, schema)  # default: reject
    assert _reasons_by_id(result) == {**overflow, **{i: "non_finite:d" for i in range(5, 10)}}
    assert sorted(result.accepted.collect()) == [(0, 1.5, 1.5), (10, -0.0, -0.0)]
    (row,) = [r for r in result.rejected.collect() if r._raw.startswith("1,")]
    assert row._reason == (
        "out_of_range:d: '1e400' is too large for DOUBLE (it would become infinite)")
    result.unpersist()

    result = ingest(spark, path, schema, non_finite="null")
    assert _reasons_by_id(result) == overflow
    accepted = dict((r.id, (r.d, r.f)) for r in result.accepted.collect())
    assert all(accepted[i] == (None, None) for i in range(5, 10))
    result.unpersist()

    result = ingest(spark, path, schema, non_finite={"d": "keep", "*": None})
    assert _reasons_by_id(result) == overflow
    accepted = dict((r.id, (r.d, r.f)) for r in result.accepted.collect())
    assert accepted[7] == (float("inf"), None) and accepted[8] == (float("-inf"), None)
    assert accepted[5][0] != accepted[5][0] and accepted[5][1] is None  # NaN kept in d only
    result.unpersist()


def test_non_finite_null_in_a_not_null_column_and_with_bounds(spark, tmp_path):
    (tmp_path / "n.csv").write_text("id,d\n1,NaN\n2,inf\n3,5\n")
    schema = [{"name": "id", "type": "int"}, {"name": "d", "type": "double", "nullable": False,
                                              "max": 10}]
    result = ingest(spark, str(tmp_path / "n.csv"), schema, non_finite="null")
    assert _reasons_by_id(result) == {1: "null:d", 2: "null:d"}
    assert result.rejected.where("_line = 2").first()._reason == (
        "null:d: 'NaN' becomes null (non_finite policy 'null') in a NOT NULL column")
    result.unpersist()
    result = ingest(spark, str(tmp_path / "n.csv"), schema, non_finite="keep")
    assert _reasons_by_id(result) == {1: "out_of_range:d", 2: "out_of_range:d"}  # above the max
    result.unpersist()


def test_non_finite_policy_is_the_same_for_json_lines_and_parquet(spark, tmp_path):
    (tmp_path / "n.jsonl").write_text(
        '{"id": 0, "d": 1.5}\n{"id": 1, "d": 1e400}\n{"id": 2, "d": NaN}\n'
        '{"id": 3, "d": "-Infinity"}\n{"id": 4, "d": -Infinity}\n')
    result = ingest(spark, str(tmp_path / "n.jsonl"), "id INT, d DOUBLE", format="json")
    assert _json_reasons_by_id(result) == {1: "out_of_range:d", 2: "non_finite:d", 3: "non_finite:d",
                                      4: "non_finite:d"}
    result.unpersist()

    folder = str(tmp_path / "pq")
    rows = [(0, 1.5, "1.5", 1.0), (1, float("nan"), "1e400", 1e39), (2, float("inf"), "nan", 2.0)]
    frame = spark.createDataFrame(rows, "id int, d double, s string, g double")
    frame.coalesce(1).write.parquet(folder)
    schema = "id INT, d DOUBLE, s DOUBLE, g FLOAT"
    result = ingest(spark, folder, schema, format="parquet")
    # The first problem of each row.
    assert _json_reasons_by_id(result) == {1: "non_finite:d", 2: "non_finite:d"}
    result.unpersist()
    result = ingest(spark, folder, schema, format="parquet", non_finite="null")
    # "1e400" read from a string column overflows.
    assert _json_reasons_by_id(result) == {1: "out_of_range:s"}
    assert sorted(result.accepted.collect()) == [(0, 1.5, 1.5, 1.0), (2, None, None, 2.0)]
    result.unpersist()
    result = ingest(spark, folder, "id INT, d DOUBLE, g FLOAT", format="parquet",
                    on_schema_drift="ignore_extra", non_finite="keep")
    assert [r._reason for r in result.rejected.collect()] == [
        "out_of_range:g: '1.0E39' is too large for FLOAT (it would become infinite)"]
    result.unpersist()


def test_non_finite_argument_errors():
    declared = parse_schema("id INT, d DOUBLE, f FLOAT")
    assert non_finite_policies(None, declared) == {"d": "reject", "f": "reject"}
    assert non_finite_policies({"f": "KEEP"}, declared) == {"d": "reject", "f": "keep"}
    with pytest.raises(ConfigError, match=r"must be one of \['reject', 'null', 'keep'\]"):
        non_finite_policies("drop", declared)
    with pytest.raises(ConfigError, match=r"not declared"):
        non_finite_policies({"z": "keep"}, declared)
    with pytest.raises(ConfigError, match=r"FLOAT and DOUBLE columns only, not \['id \(INT\)'\]"):
        non_finite_policies({"id": "keep"}, declared)
    base = {"input": {"path": "in.csv", "schema": "id INT, d DOUBLE"}, "output": {"path": "o"}}
    config = validate_config(IngestJobConfig, {**base, "input": {**base["input"],
                                                                 "non_finite": {"d": None}}})
    assert config.input.non_finite == {"d": None}
    with pytest.raises(ConfigError, match="input.non_finite"):
        validate_config(IngestJobConfig, {**base, "input": {**base["input"], "non_finite": "drop"}})


# ------------------------------------------------------------- lines and the locator


def _line_mode_lines(data: bytes) -> int:
    """Physical lines as the docs define them: LF, CR LF and lone CR end a line."""
    return len(data.splitlines())


@pytest.mark.parametrize("split_bytes", [None, "64"], ids=["one-split", "many-splits"])
def test_lines_reconcile_and_every_rejected_record_is_found_by_its_locator(spark, tmp_path,
                                                                            split_bytes):
    kinds = [
        lambda i: f"{i},{i}.5", lambda i: f"{i},bad", lambda i: "", lambda i: "  \t",
        lambda i: f"{i},{i}.5,extra", lambda i: f"{i},Z\udcfc",  # \udcfc: the byte 0xfc
    ]
    body = [kinds[i % len(kinds)](i) for i in range(1, 80)]
    breaks = ["\n", "\r\n", "\r"]
    lines = "".join(line + breaks[i % 3] for i, line in enumerate(body))
    text = "\ufeffid,x\r\n" + lines + "99,1.0"
    data = text.encode("utf-8", "surrogateescape")
    path = tmp_path / "mixed.csv"
    path.write_bytes(data)
    previous = spark.conf.get("spark.sql.files.maxPartitionBytes")
    if split_bytes:
        spark.conf.set("spark.sql.files.maxPartitionBytes", split_bytes)
    try:
        result = ingest(spark, str(path), "id INT, x DOUBLE")
        rows = result.rejected.collect()
        counts = result.counts
        result.unpersist()
    finally:
        spark.conf.set("spark.sql.files.maxPartitionBytes", previous)
    assert _line_mode_lines(data) == 1 + counts["read"] + counts["blank"]
    assert counts["blank"] == sum(1 for line in body if not line.strip())
    lines = data.splitlines()
    for row in rows:
        original = data[row._byte_offset:row._byte_offset + row._byte_length]
        assert original == lines[row._line - 1], row
        shown = original.decode("utf-8", "backslashreplace")
        assert row._raw == shown, row


def test_json_lines_with_a_duplicate_key_are_malformed(spark, tmp_path):
    (tmp_path / "d.jsonl").write_text('{"id": 1, "id": 2}\n{"id": 3, "other": 1, "other": 2}\n\n')
    result = ingest(spark, str(tmp_path / "d.jsonl"), "id INT", format="json")
    assert result.counts == {"read": 2, "accepted": 0, "rejected": 2, "blank": 1}
    assert sorted(r._reason for r in result.rejected.collect()) == [
        "malformed_record: invalid JSON (duplicate key: 'id')",
        "malformed_record: invalid JSON (duplicate key: an undeclared key)",
    ]
    result.unpersist()


@pytest.mark.parametrize("multiline", [False, True], ids=["line-mode", "whole-file-mode"])
def test_a_line_inside_a_quoted_value_is_never_masked_by_position(spark, tmp_path, pii_key,
                                                                  multiline):
    # Found by the property test: line 4 opens a quoted value (after bad quoting in
    # whole-file mode) that line 5 closes; line 5 alone has six fields, the e-mail under id.
    data = (b'id,email,ssn,age,score,city\n"0,needle1@example.com,900-55-0001,0,1.5,paris\n'
            b'0,needle2@example.com,900-55-0002,0,1.5,paris\n0,"x,\n'
            b'needle3@example.com,y",900-55-0003,0,1.5,paris\n')
    (tmp_path / "q.csv").write_bytes(data)
    result = ingest(spark, str(tmp_path / "q.csv"), SCHEMA, options={"multiLine": multiline},
                    pii=PII)
    rows = result.rejected.collect()
    result.unpersist()
    line5 = [r for r in rows if r._line == 5]
    assert line5 and line5[0]._reason.startswith("malformed_record: inside a quoted value")
    assert line5[0]._raw.startswith(WHOLE_RECORD)
    for row in rows:
        assert b"needle" not in (row._raw + row._reason).encode(), row
