"""Checksums: Flyway's CRC32 (so an existing flyway_schema_history validates) and sha256.

Flyway reads a script line by line (``BufferedReader.readLine``), strips a leading BOM and feeds
each line *without its terminator* to CRC32, returning the value as a signed 32-bit int. Feeding
the lines one after another is the same as one CRC over their concatenation, so line endings
(LF, CRLF, CR) and blank lines never change the checksum.
"""

from __future__ import annotations

import hashlib
import zlib

BOM = "\ufeff"


def flyway_checksum(text: str) -> int:
    if text.startswith(BOM):
        text = text[1:]
    joined = text.replace("\r", "").replace("\n", "")
    value = zlib.crc32(joined.encode("utf-8")) & 0xFFFFFFFF
    return value - (1 << 32) if value >= (1 << 31) else value


def sha256(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hashlib.sha256(data).hexdigest()
