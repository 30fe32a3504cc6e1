"""Coverage-guided fuzzing (atheris) of ingest's pure-Python record splitting and PII masking.

    pip install atheris          # a manylinux wheel for CPython 3.11: nothing to compile
    python scripts/fuzz_record_splitter.py -max_total_time=120 [-jobs=1] [corpus_dir]

No Spark: the fuzzer drives the very functions the Python workers run.  From
one input it derives a file's bytes (with a PII needle spliced in), an
encoding and a CSV dialect, then checks:

- ``byte_lines.split_lines``, ``record_batches.split_lines`` (line mode, fed
  the lines Spark's text source would hand over) and
  ``record_batches.split_files`` (whole-file mode) raise nothing, and account
  for every line: header + records + blank = lines, each record found again at
  its byte offset;
- ``masking.mask_record`` of every record raises nothing, an uncertain record
  (``invalid_encoding``, ``malformed_record``, wrong field count) never shows
  the needle, and a record masked field by field shows it only in the
  documented hole (exactly the right field count, needle outside the PII
  columns).

Any other exception, or a broken property, stops the run with the input saved
as ``crash-<hash>`` (libFuzzer's behaviour).
"""

from __future__ import annotations

import csv
import io
import os
import sys

import atheris

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

with atheris.instrument_imports():
    import pyarrow as pa

    from sparkml_aiaas.data import byte_lines
    from sparkml_aiaas.data import masking as M
    from sparkml_aiaas.data import record_batches as B
    from sparkml_aiaas.data import records as R

KEY = b"fuzz-key-0123456789abcdef"
NEEDLE = "needle7@example.com"
WIDTH = 4
PII = {1: "hash", 2: "drop"}
ENCODINGS = ["utf-8", "ascii", "latin-1", "cp1252", "utf-16", "utf-16-be", "utf-32", "cp037"]
DIALECTS = [(",", '"', None), (";", "'", None), ("\t", None, None), (",", '"', "\\")]


def _spark_lines(content: bytes):
    """What Spark's text source with lineSep=LF hands over, and whether it dropped a BOM."""
    pieces = content.split(b"\n") if content else []
    if content.endswith(b"\n"):
        pieces.pop()
    bom = bool(pieces) and pieces[0].startswith(b"\xef\xbb\xbf")
    if bom:
        pieces[0] = pieces[0][3:]
    return pieces, bom


def _check_records(rows, content: bytes, codec: str, lines: int, header: bool, line_mode: bool):
    split = [r for r in rows if r["kind"] == R.SPLIT]
    records = [r for r in rows if r["kind"] == R.RECORD]
    if not split:
        assert not records and lines == 0, (lines, records)
        return records
    (summary,) = split
    assert summary["split_lines"] == lines, (summary, lines)
    headers = summary["split_lines"] - summary["split_records"] - summary["split_blank"]
    if line_mode:  # whole-file mode: a quoted value may span lines, so records <= lines
        assert headers in ((0, 1) if header else (0,)), summary
    else:
        assert headers >= 0, summary
    assert len(records) == summary["split_records"]
    for r in records:
        original = content[r["byte_in_block"]:r["byte_in_block"] + r["byte_length"]]
        shown = original.decode(codec, "backslashreplace")
        assert r["raw"] == shown, (r, original)
    return records


def _undetectable(raw: str, kwargs) -> bool:
    try:
        rows = list(csv.reader(io.StringIO(raw, newline=""), **kwargs))
    except csv.Error:
        return False
    return (len(rows) == 1 and len(rows[0]) == WIDTH
            and any(NEEDLE in v for i, v in enumerate(rows[0]) if i not in PII))


def _check_masking(records, spec):
    kwargs = spec.csv_kwargs()
    for r in records:
        code = (
            "invalid_encoding" if r["bad_encoding"] else
            "malformed_record" if r["malformed"] else
            "too_few_fields" if r["n_fields"] is not None and r["n_fields"] < WIDTH else
            "too_many_fields" if r["n_fields"] is not None and r["n_fields"] > WIDTH else
            "unparsable:x"
        )
        masked = M.mask_record(
            r["raw"], code, lambda t: M.mask_csv_record(t, kwargs, PII, KEY, WIDTH), KEY)
        if code in M.UNCERTAIN_CODES:
            assert masked.startswith(M.WHOLE_RECORD) and NEEDLE not in masked, (r, masked)
        elif NEEDLE in masked:
            assert _undetectable(r["raw"], kwargs), (r, masked)


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    encoding = ENCODINGS[fdp.ConsumeIntInRange(0, len(ENCODINGS) - 1)]
    delimiter, quotechar, escapechar = DIALECTS[fdp.ConsumeIntInRange(0, len(DIALECTS) - 1)]
    header = fdp.ConsumeBool()
    body = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 512))
    at = fdp.ConsumeIntInRange(0, len(body))
    content = body[:at] + NEEDLE.encode() + body[at:]
    spec = R.TextSpec(format="csv", header=header, delimiter=delimiter, quotechar=quotechar,
                      escapechar=escapechar, encoding=encoding, names=("a", "b", "c", "d"))

    lines = byte_lines.split_lines(content, encoding)
    batch = pa.RecordBatch.from_arrays([pa.array(["f"]), pa.array([content], pa.binary())],
                                       ["path", "content"])
    rows = [r for b in B.split_files(iter([batch]), spec, B.Layout(WIDTH)) for r in b.to_pylist()]
    records = _check_records(rows, content, lines.codec.name, len(lines), header, False)
    _check_masking(records, spec)

    if encoding in ("utf-8", "ascii"):  # what line mode reads
        pieces, bom = _spark_lines(content)
        cut = fdp.ConsumeIntInRange(1, 8)
        batches = [
            pa.RecordBatch.from_arrays(
                [pa.array(pieces[lo:lo + cut], pa.binary()),
                 pa.array(["f"] * len(pieces[lo:lo + cut])),
                 pa.array([0] * len(pieces[lo:lo + cut]), pa.int64())],
                ["value", "source_file", "block_start"])
            for lo in range(0, len(pieces), cut)
        ]
        layout = B.Layout(WIDTH, bom_files=frozenset({"f"} if bom else ()))
        rows = [r for b in B.split_lines(iter(batches), spec, layout) for r in b.to_pylist()]
        records = _check_records(rows, content, encoding, len(content.splitlines()), header, True)
        _check_masking(records, spec)


def main() -> None:
    R._allow_large_fields()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
