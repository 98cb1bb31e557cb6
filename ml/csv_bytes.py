"""Reading uploaded bytes safely: one streaming pass that hashes, sizes and checks a file is UTF-8 text."""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO

CHUNK_SIZE = 1024 * 1024

_MAGIC_NUMBERS = [
    (b"PK\x03\x04", "a ZIP archive (an .xlsx workbook or a .zip file)"),
    (b"\x1f\x8b", "a gzip-compressed file"),
    (b"%PDF", "a PDF document"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\xd0\xcf\x11\xe0", "an old Excel/Office document (.xls)"),
    (b"PAR1", "a Parquet file"),
    (b"SQLite format 3", "an SQLite database"),
]
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


@dataclass
class ByteScan:
    """What one streaming pass over the raw bytes found."""

    sha256: str
    size_bytes: int
    problems: list[str] = field(default_factory=list)

    @property
    def is_readable_text(self) -> bool:
        return not self.problems


@contextlib.contextmanager
def seekable(file: IO[bytes]) -> Iterator[IO[bytes]]:
    """Yield `file` itself when it can be re-read, otherwise a spooled temporary copy that is closed after."""
    try:
        can_seek = file.seekable()
    except (AttributeError, OSError):
        can_seek = False
    if can_seek:
        file.seek(0)
        yield file
        return
    with tempfile.SpooledTemporaryFile(max_size=CHUNK_SIZE * 8) as copy:
        shutil.copyfileobj(file, copy, CHUNK_SIZE)
        copy.seek(0)
        yield copy


def scan_bytes(file: IO[bytes], *, max_bytes: int) -> ByteScan:
    """Hash and size the file in one streaming pass, checking it is UTF-8 text without NUL bytes.

    Reading stops once the file is larger than `max_bytes`: its hash is then meaningless and left empty.
    """
    file.seek(0)
    digest = hashlib.sha256()
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    size = 0
    first_bad_byte: tuple[int, int] | None = None
    nul_offset: int | None = None
    head = b""
    while chunk := file.read(CHUNK_SIZE):
        if size + len(chunk) > max_bytes:
            limit_mb = max_bytes / (1024 * 1024)
            return ByteScan(
                sha256="",
                size_bytes=size + len(chunk),
                problems=[f"The file is larger than the upload limit of {limit_mb:g} MB."],
            )
        if len(head) < 16:
            head += chunk[: 16 - len(head)]
        digest.update(chunk)
        if nul_offset is None and (position := chunk.find(b"\x00")) != -1:
            nul_offset = size + position
        if first_bad_byte is None:
            buffered = len(decoder.getstate()[0])
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                # exc.object is the decoder's buffered tail plus this chunk.
                first_bad_byte = (size - buffered + exc.start, exc.object[exc.start])
        size += len(chunk)
    if first_bad_byte is None:
        buffered = len(decoder.getstate()[0])
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            first_bad_byte = (size - buffered + exc.start, exc.object[exc.start])

    problems: list[str] = []
    if size == 0:
        problems.append("The file is empty.")
        return ByteScan(sha256=digest.hexdigest(), size_bytes=0, problems=problems)
    kind = _recognised_binary(head)
    if kind:
        problems.append(f"This is not a CSV file: it looks like {kind}. Upload comma-separated text.")
    elif nul_offset is not None:
        problems.append(
            f"This is not a CSV file: it contains binary data (a NUL byte at offset {nul_offset}). "
            "Upload comma-separated text."
        )
    if first_bad_byte is not None and not kind:
        offset, value = first_bad_byte
        hint = ""
        if head.startswith(_UTF16_BOMS):
            hint = " The file looks like UTF-16; save it as UTF-8."
        problems.append(
            f"The file is not valid UTF-8: byte 0x{value:02X} at offset {offset} cannot be decoded. "
            f"Save the file with UTF-8 encoding.{hint}"
        )
    return ByteScan(sha256=digest.hexdigest(), size_bytes=size, problems=problems)


def _recognised_binary(head: bytes) -> str | None:
    for magic, description in _MAGIC_NUMBERS:
        if head.startswith(magic):
            return description
    return None
