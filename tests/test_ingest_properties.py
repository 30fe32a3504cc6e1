"""Property-based tests of ingest's trust boundaries (hypothesis).

The pure parts (cutting bytes into lines, splitting records, masking) run
without Spark at hundreds of examples; the whole ingest runs on batches of
generated files at a few examples, so the file stays well under 90 s in CI.
For a longer hunt, by hand:

    SPARKML_AIAAS_FUZZ_EXAMPLES=2000 pytest -q tests/test_ingest_properties.py

(the Spark properties then run that many examples, the pure ones ten times more).
Properties: no exception but the documented ones; every line is a header, a
record or blank; ``read == accepted + rejected``; every rejected record is
found again at its byte offset; no PII needle in the rejected rows, the
accepted rows or any byte of the quarantine files.
"""

import csv
import io
import json
import os
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparkml_aiaas.data import byte_lines, ingest
from sparkml_aiaas.data import masking as M
from sparkml_aiaas.data import record_batches as B
from sparkml_aiaas.data import records as R

FUZZ = int(os.environ.get("SPARKML_AIAAS_FUZZ_EXAMPLES", "0"))
SPARK_EXAMPLES = FUZZ or 12
PURE_EXAMPLES = FUZZ * 10 or 300
COMMON = dict(
    deadline=None, derandomize=not FUZZ, database=None if not FUZZ else settings.default.database,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much],
)
pure = settings(max_examples=PURE_EXAMPLES, **COMMON)
spark_settings = settings(max_examples=SPARK_EXAMPLES, **COMMON)

KEY = b"property-test-key-0123456789abcdef"
NEEDLE = b"needle"  # every PII value generated holds it; hex digests and markers cannot
COLUMNS = ["id", "email", "ssn", "age", "score", "city"]
PII_POSITIONS = {1: "hash", 2: "drop"}
ENCODINGS = ["utf-8", "latin-1", "cp1252", "utf-16", "utf-16-be", "utf-32", "ascii", "cp037"]

# ------------------------------------------------------------------ strategies

_alphabet = st.sampled_from(
    list('ab,;"\'\\ \t\r\n\x00') + ["\u00fc", "\u20ac", "\ufeff", "\U0001f600"])
_text = st.text(_alphabet, max_size=30)
_noise_bytes = st.binary(max_size=40)


@st.composite
def _byte_soup(draw):
    """Bytes that look like CSV text, with line breaks, quotes and some invalid bytes."""
    parts = draw(st.lists(st.one_of(
        _text.map(lambda t: t.encode("utf-8")),
        st.sampled_from([b"\n", b"\r\n", b"\r", b"\xef\xbb\xbf", b'"', b"\xff", b"\xc3", b"\x00"]),
        _noise_bytes,
    ), max_size=12))
    return b"".join(parts)


def _needle(draw_id: int) -> str:
    return f"needle{draw_id}@example.com"


# ------------------------------------------------------------- cutting lines


@pure
@given(content=_byte_soup(), encoding=st.sampled_from(ENCODINGS))
def test_lines_cover_the_bytes_and_decode_strictly(content, encoding):
    lines = byte_lines.split_lines(content, encoding)
    codec = lines.codec
    assert len(lines.texts) == len(lines.valid) == len(lines.starts) == len(lines.ends)
    assert list(lines.starts) == sorted(lines.starts)
    previous_end = codec.bom_length
    for i in range(len(lines)):
        start, end = int(lines.starts[i]), int(lines.ends[i])
        assert previous_end <= start <= end <= len(content)
        raw = content[start:end]
        try:
            text = raw.decode(codec.name)
        except UnicodeDecodeError:
            assert not lines.valid[i]
        else:
            assert lines.valid[i]
            assert R.strip_line_break(lines.texts[i]) == text
        previous_end = end
    if codec.unit == 1 and codec.lf == 0x0A:
        # One-byte codecs with ASCII line breaks: exactly bytes.splitlines().
        expected = content[codec.bom_length:].splitlines()
        assert [lines.raw_bytes(i, i) for i in range(len(lines))] == expected


def _simulate_spark_lines(content: bytes):
    """What Spark's text source with lineSep=LF hands to Python, and whether it dropped a BOM."""
    pieces = content.split(b"\n")
    if content.endswith(b"\n"):
        pieces.pop()
    if not content:
        pieces = []
    bom = bool(pieces) and pieces[0].startswith(b"\xef\xbb\xbf")
    if bom:
        pieces[0] = pieces[0][3:]
    return pieces, bom


def _run_split_lines(content: bytes, spec, width, cut):
    pieces, bom = _simulate_spark_lines(content)
    layout = B.Layout(n_columns=width, bom_files=frozenset({"f"} if bom else ()))
    batches = []
    for lo in range(0, len(pieces), cut):
        chunk = pieces[lo:lo + cut]
        batches.append(pa.RecordBatch.from_arrays(
            [pa.array(chunk, pa.binary()), pa.array(["f"] * len(chunk)),
             pa.array([0] * len(chunk), pa.int64())], ["value", "source_file", "block_start"]))
    rows = []
    for batch in B.split_lines(iter(batches), spec, layout):
        rows += batch.to_pylist()
    return rows


@pure
@given(content=_byte_soup(), header=st.booleans(), cut=st.integers(1, 6),
       fmt=st.sampled_from(["csv", "json"]))
def test_line_mode_accounts_for_every_line_and_byte(content, header, cut, fmt):
    spec = R.TextSpec(format=fmt, header=header and fmt == "csv", names=("a", "b"))
    rows = _run_split_lines(content, spec, 2, cut)
    summary = [r for r in rows if r["kind"] == R.SPLIT]
    records = [r for r in rows if r["kind"] == R.RECORD]
    physical = content.splitlines()
    if not physical:
        assert not records
        return
    (split,) = summary
    if content.startswith(b"\xef\xbb\xbf"):
        physical[0] = physical[0][3:]  # not part of the first line

    def blank(line: bytes) -> bool:  # empty or Unicode whitespace only (str.isspace)
        try:
            return not line.decode("utf-8").strip()
        except UnicodeDecodeError:
            return False

    headers = 1 if spec.header and not all(blank(line) for line in physical) else 0
    assert split["split_blank"] == sum(blank(line) for line in physical)
    assert split["split_lines"] == len(physical)
    assert split["split_lines"] == headers + split["split_records"] + split["split_blank"]
    assert len(records) == split["split_records"]
    for r in records:
        original = content[r["byte_in_block"]:r["byte_in_block"] + r["byte_length"]]
        assert original == physical[r["line_in_block"]]
        assert r["raw"] == original.decode("utf-8", "backslashreplace")
        try:
            original.decode("utf-8")
        except UnicodeDecodeError:
            assert r["bad_encoding"] is not None
        else:
            assert r["bad_encoding"] is None


def _records_by_line(rows):
    return sorted(
        (r["line_in_block"], r["byte_in_block"], r["raw"], r["malformed"], r["bad_encoding"],
         r["n_fields"], r["f0"], r["f1"])
        for r in rows if r["kind"] == R.RECORD
    )


@pure
@given(content=_byte_soup(), cut=st.integers(1, 4))
def test_line_mode_does_not_depend_on_batch_boundaries(content, cut):
    # A quote left open at the end of a batch is read on with the next batch.
    spec = R.TextSpec(format="csv", header=True, names=("a", "b"))
    whole = _run_split_lines(content, spec, 2, 10**6)
    assert _records_by_line(_run_split_lines(content, spec, 2, cut)) == _records_by_line(whole)


@pure
@given(content=_byte_soup(), encoding=st.sampled_from(ENCODINGS), header=st.booleans())
def test_whole_file_mode_accounts_for_every_line_and_byte(content, encoding, header):
    spec = R.TextSpec(format="csv", header=header, encoding=encoding, names=("a", "b"))
    batch = pa.RecordBatch.from_arrays([pa.array(["f"]), pa.array([content], pa.binary())],
                                       ["path", "content"])
    rows = [r for b in B.split_files(iter([batch]), spec, B.Layout(2)) for r in b.to_pylist()]
    (split,) = [r for r in rows if r["kind"] == R.SPLIT]
    records = [r for r in rows if r["kind"] == R.RECORD]
    lines = byte_lines.split_lines(content, encoding)
    assert split["split_lines"] == len(lines)
    assert split["split_records"] == len(records)
    codec = lines.codec.name
    for r in records:
        original = content[r["byte_in_block"]:r["byte_in_block"] + r["byte_length"]]
        if r["bad_encoding"] is None:
            assert r["raw"] == original.decode(codec)
        else:
            assert r["raw"] == original.decode(codec, "backslashreplace")


# ------------------------------------------------------------- records and masking

_dialect = st.fixed_dictionaries({
    "delimiter": st.sampled_from([",", ";", "\t"]),
    "quotechar": st.sampled_from(['"', "'", None]),
    "escapechar": st.sampled_from([None, "\\"]),
})


@pure
@given(lines=st.lists(_text.map(lambda t: t.replace("\r", "").replace("\n", "")), max_size=12),
       dialect=_dialect)
def test_batched_csv_parsing_equals_line_by_line(lines, dialect):
    spec = R.TextSpec(format="csv", **dialect)
    fields, errors = R.parse_csv_lines(lines, spec)
    assert list(zip(fields, errors)) == [R.parse_csv_line(line, spec) for line in lines]


@pure
@given(text=_text, dialect=_dialect)
def test_whole_file_records_partition_the_lines(text, dialect):
    spec = R.TextSpec(format="csv", **dialect)
    lines = list(io.StringIO(text, newline=""))
    spans = list(R.iter_csv_lines(lines, spec))
    covered = [i for first, end, _, _ in spans for i in range(first, end)]
    assert covered == list(range(len(lines)))


@st.composite
def _csv_record(draw):
    """``(raw, fields)``: a record with needles in PII fields, maybe shifted or broken."""
    n = draw(st.integers(0, 10**6))
    fields = [str(n), _needle(n), f"{n}-needle-ssn", str(draw(st.integers(-5, 300))),
              draw(st.sampled_from(["1.5", "1e400", "NaN", "-inf", "x"])),
              draw(st.sampled_from(["paris", "a,b", 'say "hi"', "Z\u00fcrich", "x\ny", ""]))]
    if draw(st.booleans()):
        fields[1] = draw(st.sampled_from(["", "plain", f"a\n{_needle(n)}", f'{_needle(n)}"']))
    mutation = draw(st.sampled_from(["none", "extra", "missing", "stray_quote", "truncate"]))
    if mutation == "extra":
        fields.insert(draw(st.integers(0, len(fields))), draw(st.sampled_from(["x", "", "1"])))
    elif mutation == "missing":
        del fields[draw(st.integers(0, len(fields) - 1))]
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(fields)
    raw = out.getvalue()
    if mutation == "stray_quote":
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + '"' + raw[at:]
    elif mutation == "truncate":
        raw = raw[:draw(st.integers(0, len(raw)))]
    return raw


def _undetectable(raw: str, kwargs, width, needle: bytes) -> bool:
    """The documented hole: exactly one record of ``width`` fields with the needle outside PII."""
    try:
        rows = list(csv.reader(io.StringIO(raw, newline=""), **kwargs))
    except csv.Error:
        return False
    if len(rows) != 1 or len(rows[0]) != width:
        return False
    return any(needle in v.encode() for i, v in enumerate(rows[0]) if i not in PII_POSITIONS)


@pure
@given(raw=st.one_of(_csv_record(), _text), code=st.sampled_from(
    [None, "unparsable:age", *sorted(M.UNCERTAIN_CODES)]), key=st.sampled_from([KEY, None]))
def test_masked_csv_never_shows_a_needle_outside_the_documented_hole(raw, code, key):
    spec = R.TextSpec(format="csv")
    kwargs = spec.csv_kwargs()
    # Without a key nothing is hashed (a policy that only drops needs none).
    positions = PII_POSITIONS if key else {i: "drop" for i in PII_POSITIONS}
    masked = M.mask_record(
        raw, code, lambda t: M.mask_csv_record(t, kwargs, positions, key, len(COLUMNS)), key)
    if code in M.UNCERTAIN_CODES:
        assert masked.startswith(M.WHOLE_RECORD) and NEEDLE not in masked.encode()
    elif NEEDLE in masked.encode():
        assert _undetectable(raw, kwargs, len(COLUMNS), NEEDLE)


@pure
@given(obj=st.dictionaries(st.sampled_from(COLUMNS + ["extra"]), st.one_of(
    st.none(), st.integers(), st.text(max_size=5), st.just("needle@example.com"),
    st.lists(st.just("needle"), max_size=2))), spaces=st.sampled_from(["", " ", "\n"]),
    tail=st.sampled_from(["", " x", "}", ',"email": "needle"']))
def test_masked_json_never_shows_a_needle_in_a_pii_key_or_an_uncertain_object(obj, spaces, tail):
    raw = json.dumps(obj, separators=("," + spaces, ":" + spaces))
    raw = raw[:-1] + tail + "}" if tail.startswith(",") and raw != "{}" else raw + tail
    masked = M.mask_json_record(raw, {"email": "hash", "ssn": "drop"}, KEY, names=COLUMNS)
    if NEEDLE in masked.encode():
        # Only as read in a declared non-PII key of one well-formed object.
        parsed = json.loads(masked)
        assert set(parsed) <= set(COLUMNS)
        assert all(NEEDLE not in json.dumps(parsed.get(k)).encode() for k in ("email", "ssn"))


# ------------------------------------------------------------------- Spark

_SCORES = ["1.5", "-2", "1e400", "-1e400", "9" * 400, "NaN", "nan", "Infinity", "-Inf", "inf", ""]
_CITIES = ["paris", "a,b", 'say "hi"', "two\nlines", "Z\u00fcrich", "\x00", "", "w" * 5000]


@st.composite
def _file(draw, encoding: str, multiline: bool):
    """One CSV file's bytes: header, records (some broken), blank lines, mixed line breaks."""
    breaks = draw(st.lists(st.sampled_from(["\n", "\r\n", "\r"]), min_size=1, max_size=3))
    lines = [",".join(COLUMNS)]
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(["ok", "ok", "blank", "extra", "missing", "stray_quote",
                                     "invalid_bytes", "pii_newline"]))
        if kind == "blank":
            lines.append(draw(st.sampled_from(["", " ", "\t "])))
            continue
        n = draw(st.integers(0, 10**6))
        fields = [str(n), _needle(n), f"{n}-needle-ssn", str(draw(st.integers(-5, 300))),
                  draw(st.sampled_from(_SCORES)), draw(st.sampled_from(_CITIES))]
        if kind == "pii_newline":
            fields[1] = f"x,\n{_needle(n)},y"
        if kind == "extra":
            fields.insert(draw(st.integers(0, len(fields))), draw(st.sampled_from(["x", "1"])))
        elif kind == "missing":
            del fields[draw(st.integers(0, len(fields) - 1))]
        out = io.StringIO()
        csv.writer(out, lineterminator="").writerow(fields)
        line = out.getvalue()
        if kind == "stray_quote":
            at = draw(st.integers(0, len(line)))
            line = line[:at] + '"' + line[at:]
        if kind == "invalid_bytes":
            line += "\udcff"  # becomes the byte 0xff (or an unencodable unit, below)
        lines.append(line)
    text = "".join(line + draw(st.sampled_from(breaks)) for line in lines)
    if draw(st.booleans()):
        text = text.rstrip("\r\n")
    if encoding == "utf-8":
        data = text.encode("utf-8", "surrogateescape")
        return (b"\xef\xbb\xbf" if draw(st.booleans()) else b"") + data
    if encoding == "latin-1":
        return text.encode("latin-1", "surrogateescape")  # every byte is valid latin-1
    # UTF-16: a lone surrogate where the bad byte was is invalid.
    return text.replace("\udcff", "\ud800").encode("utf-16", "surrogatepass")


def _quarantine_values(folder):
    for root, _, files in os.walk(folder):
        for name in files:
            if name.endswith(".parquet"):
                for column in pq.read_table(os.path.join(root, name)).columns:
                    for value in column.to_pylist():
                        yield value


@spark_settings
@given(data=st.data(), mode=st.sampled_from([("utf-8", False), ("utf-8", True),
                                             ("latin-1", False), ("utf-16", False)]))
def test_ingest_of_generated_files_keeps_its_promises(spark, tmp_path_factory, monkeypatch,
                                                     data, mode):
    encoding, multiline = mode
    monkeypatch.setenv("PROPERTY_PII_KEY", KEY.decode())
    folder = tmp_path_factory.mktemp("fuzz")
    contents = [data.draw(_file(encoding, multiline)) for _ in range(data.draw(st.integers(1, 3)))]
    for i, content in enumerate(contents):
        (folder / f"part-{i}.csv").write_bytes(content)
    quarantine = str(tmp_path_factory.mktemp("quarantine") / uuid.uuid4().hex)
    previous = spark.conf.get("spark.sql.parquet.compression.codec")
    spark.conf.set("spark.sql.parquet.compression.codec", "uncompressed")  # bytes scannable
    try:
        result = ingest(
            spark, str(folder), "id INT NOT NULL, email STRING, ssn STRING, age INT, "
            "score DOUBLE, city STRING",
            options={"encoding": encoding, "multiLine": multiline},
            pii={"columns": {"email": "hash", "ssn": "drop"}, "key_env": "PROPERTY_PII_KEY"},
            non_finite=data.draw(st.sampled_from(["reject", "null", "keep"])),
            quarantine_path=quarantine,
        )
    finally:
        spark.conf.set("spark.sql.parquet.compression.codec", previous)
    try:
        counts = result.counts
        rejected = result.rejected.collect()
        accepted = result.accepted.collect()
    finally:
        result.unpersist()
    assert counts["read"] == counts["accepted"] + counts["rejected"]
    assert (len(accepted), len(rejected)) == (counts["accepted"], counts["rejected"])
    if encoding == "utf-8" and not multiline:
        lines = sum(len(c.splitlines()) for c in contents)
        headers = sum(1 for c in contents if c.strip(b"\xef\xbb\xbf \t\r\n"))
        assert lines == headers + counts["read"] + counts["blank"]
    by_file = {f"part-{i}.csv": c for i, c in enumerate(contents)}
    for row in rejected:
        for value in (row._raw, row._reason):
            assert NEEDLE not in value.encode(), row
        content = by_file[os.path.basename(row._source_file)]
        original = content[row._byte_offset:row._byte_offset + row._byte_length]
        assert original and not original.endswith((b"\n", b"\r")), row
    for row in accepted:
        assert NEEDLE not in json.dumps(row.asDict()).encode()
    for value in _quarantine_values(quarantine):
        assert value is None or NEEDLE not in str(value).encode()
    for root, _, files in os.walk(quarantine):
        for name in files:
            with open(os.path.join(root, name), "rb") as handle:
                assert NEEDLE not in handle.read(), name
