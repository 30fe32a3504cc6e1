"""Physical lines of a file's bytes: where each one is, and its text in the declared encoding.

No pyspark: runs in the Python workers (whole-file mode) and in tests.

Why bytes first and text second: decoding a whole file with
``errors="replace"`` would turn undecodable bytes into U+FFFD and let the
record through with changed data, and the decoded text no longer says where
a record's bytes are.  Here a file is cut into lines at the byte level, each
line is decoded on its own, strictly, and keeps its byte span, so a record
whose bytes are invalid is rejected alone (``invalid_encoding``) and every
record can be found again in the source (``_byte_offset``, ``_byte_length``).

A line ends at LF, CR LF or a lone CR (as Python's universal newlines and
Hadoop's line reader say), written in the file's encoding: one byte for
ASCII-compatible and EBCDIC encodings (whose LF byte is not 0x0A), one 2- or
4-byte code unit for UTF-16 and UTF-32.  A byte-order mark at the start of
the file is not part of the first line.
"""

from __future__ import annotations

import codecs
import io
from dataclasses import dataclass
from typing import Optional

import numpy as np

__all__ = ["Codec", "Lines", "codec_for", "escaped", "split_lines", "unsupported_encoding"]

_WIDE = {"utf-16": 2, "utf-16-le": 2, "utf-16-be": 2, "utf-32": 4, "utf-32-le": 4, "utf-32-be": 4}
_BOMS = {
    "utf-8": codecs.BOM_UTF8,
    2: {codecs.BOM_UTF16_LE: False, codecs.BOM_UTF16_BE: True},
    4: {codecs.BOM_UTF32_LE: False, codecs.BOM_UTF32_BE: True},
}


@dataclass(frozen=True)
class Codec:
    """How to cut and decode one file's lines.

    Attributes
    ----------
    name : str
        The codec each line is decoded with (byte order fixed, no BOM handling).
    unit : int
        Bytes per code unit: 1, 2 or 4.
    big_endian : bool
        Byte order of 2- and 4-byte units.
    lf, cr : int
        The code unit values of LF and CR.
    bom_length : int
        Bytes of byte-order mark at the start of this file (0 when none).
    """

    name: str
    unit: int = 1
    big_endian: bool = False
    lf: int = 0x0A
    cr: int = 0x0D
    bom_length: int = 0


def unsupported_encoding(encoding: str) -> Optional[str]:
    """Why ``encoding`` cannot be read line by line, or None when it can."""
    try:
        info = codecs.lookup(encoding)
    except LookupError:
        return f"unknown encoding {encoding!r}"
    if not getattr(info, "_is_text_encoding", True):
        return f"{encoding!r} is not a text encoding"
    if info.name in _WIDE:
        return None
    try:
        lf, cr = "\n".encode(info.name), "\r".encode(info.name)
    except (UnicodeError, LookupError):
        return f"encoding {encoding!r} cannot encode line breaks"
    if len(lf) != 1 or len(cr) != 1:
        return f"encoding {encoding!r} writes line breaks as several bytes; only UTF-16/32 may"
    return None


def codec_for(encoding: str, start: bytes = b"") -> Codec:
    """The :class:`Codec` for a file in ``encoding`` whose content begins with ``start``."""
    name = codecs.lookup(encoding).name
    unit = _WIDE.get(name, 1)
    if unit == 1:
        if name in ("utf-8", "utf-8-sig"):
            bom = _BOMS["utf-8"]
            return Codec("utf-8", bom_length=len(bom) if start.startswith(bom) else 0)
        return Codec(name, lf="\n".encode(name)[0], cr="\r".encode(name)[0])
    family = "utf-16" if unit == 2 else "utf-32"
    big_endian: Optional[bool] = None
    if name.endswith("-be"):
        big_endian = True
    elif name.endswith("-le"):
        big_endian = False
    bom_length = 0
    for bom, is_big in _BOMS[unit].items():
        # utf-32-le's BOM begins with utf-16-le's: the table is per width, so no confusion.
        if start.startswith(bom) and big_endian in (None, is_big):
            big_endian, bom_length = is_big, len(bom)
            break
    if big_endian is None:
        # No BOM: what Python's own utf-16/utf-32 decoders assume.
        big_endian = _native_big_endian(family)
    suffix = "-be" if big_endian else "-le"
    return Codec(family + suffix, unit=unit, big_endian=big_endian, bom_length=bom_length)


def _native_big_endian(family: str) -> bool:
    probe = "\n".encode(family + "-le")
    return probe.decode(family) != "\n"


@dataclass
class Lines:
    """The physical lines of one file.

    Attributes
    ----------
    texts : list of str
        Each line decoded, with its line break (what a CSV reader consumes).
        An invalid line is decoded with U+FFFD for its bad bytes, only so that
        quoting can still be followed; its record is rejected.
    valid : ndarray of bool
        Whether the line's bytes are valid in the encoding.
    starts, ends : ndarray of int64
        Byte offset of each line in the file, and where its content ends
        (before the line break).
    content : bytes
        The file (decompressed).
    codec : Codec
    """

    texts: list
    valid: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    content: bytes
    codec: Codec

    def __len__(self) -> int:
        return len(self.texts)

    def raw_bytes(self, first: int, last: int) -> bytes:
        """The bytes of lines ``first`` to ``last`` (inclusive), without the final line break."""
        return self.content[int(self.starts[first]):int(self.ends[last])]


def split_lines(content: bytes, encoding: str) -> Lines:
    """Cut ``content`` into physical lines and decode each one strictly."""
    codec = codec_for(encoding, content[:4])
    base = codec.bom_length
    usable = (len(content) - base) // codec.unit * codec.unit
    if codec.unit == 1:
        units = np.frombuffer(content, dtype=np.uint8, offset=base, count=usable)
    else:
        dtype = np.dtype(f"{'>' if codec.big_endian else '<'}u{codec.unit}")
        units = np.frombuffer(content, dtype=dtype, offset=base, count=usable // codec.unit)
    starts, ends, breaks_end = _line_spans(units, codec.lf, codec.cr)
    starts = starts * codec.unit + base
    ends = ends * codec.unit + base
    breaks_end = breaks_end * codec.unit + base
    if len(content) > base + usable:
        # Trailing bytes that do not fill a code unit belong to the last line (and make it invalid).
        if len(starts) and breaks_end[-1] == ends[-1]:
            ends[-1] = breaks_end[-1] = len(content)
        else:
            starts = np.append(starts, base + usable)
            ends = np.append(ends, len(content))
            breaks_end = np.append(breaks_end, len(content))
    texts, valid = _decode(content, codec, starts, ends, breaks_end)
    return Lines(texts=texts, valid=valid, starts=starts, ends=ends, content=content, codec=codec)


def _line_spans(units: np.ndarray, lf: int, cr: int):
    """``(starts, content ends, break ends)`` in code units: LF, CR LF and lone CR end a line."""
    n = len(units)
    is_lf = units == lf
    is_cr = units == cr
    next_is_lf = np.zeros(n, dtype=bool)
    next_is_lf[:-1] = is_lf[1:]
    lf_at = np.flatnonzero(is_lf)
    cr_at = np.flatnonzero(is_cr & ~next_is_lf)  # a CR followed by LF is part of CR LF
    after_cr = np.zeros(len(lf_at), dtype=np.int64)
    inside = lf_at > 0
    after_cr[inside] = is_cr[lf_at[inside] - 1]
    break_start = np.concatenate([lf_at - after_cr, cr_at]).astype(np.int64)
    break_end = np.concatenate([lf_at + 1, cr_at + 1]).astype(np.int64)
    order = np.argsort(break_end, kind="stable")
    break_start, break_end = break_start[order], break_end[order]
    starts = np.concatenate([[0], break_end[:-1]]) if len(break_end) else break_end
    ends = break_start
    tail = int(break_end[-1]) if len(break_end) else 0
    if n > tail:  # a last line without a line break
        starts = np.append(starts, tail)
        ends = np.append(ends, n)
        break_end = np.append(break_end, n)
    return starts.astype(np.int64), ends.astype(np.int64), break_end.astype(np.int64)


def _decode(content: bytes, codec: Codec, starts, ends, breaks_end):
    n = len(starts)
    valid = np.ones(n, dtype=bool)
    if n == 0:
        return [], valid
    body = content[int(starts[0]):int(breaks_end[-1])]
    try:
        whole = body.decode(codec.name)
    except UnicodeDecodeError:
        whole = None
    if whole is not None:
        # Every line is valid: Python's universal newlines cut the text where we cut the bytes.
        texts = list(io.StringIO(whole, newline=""))
        if len(texts) == n:
            return texts, valid
    texts = []
    for i in range(n):
        line = content[int(starts[i]):int(ends[i])]
        line_break = content[int(ends[i]):int(breaks_end[i])].decode(codec.name)
        try:
            texts.append(line.decode(codec.name) + line_break)
        except UnicodeDecodeError:
            valid[i] = False
            texts.append(line.decode(codec.name, errors="replace") + line_break)
    return texts, valid


def escaped(raw: bytes, codec_name: str) -> str:
    """``raw`` decoded, undecodable bytes written as ``\\xNN`` (Python's backslashreplace)."""
    return raw.decode(codec_name, errors="backslashreplace")


def first_invalid_offset(raw: bytes, codec_name: str) -> int:
    """The offset in ``raw`` of its first undecodable byte (``len(raw)`` when it decodes)."""
    try:
        raw.decode(codec_name)
    except UnicodeDecodeError as exc:
        return exc.start
    return len(raw)
