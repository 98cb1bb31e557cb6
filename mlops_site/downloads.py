"""Streaming a stored object to the browser or an API client as a file download."""

from __future__ import annotations

from collections.abc import Iterator

from django.http import StreamingHttpResponse
from django.utils.http import content_disposition_header

from mlops_site import errors, storage


def stored_file_response(
    *, key: str, filename: str, content_type: str, size: int | None = None, missing: str
) -> StreamingHttpResponse:
    """Stream the object at `key` as an attachment named `filename`.

    The first chunk is read before the response is built: a missing object raises NotFound(`missing`)
    and an unreachable storage StorageError while the status can still say so, through the one mapping.
    """
    chunks = storage.iter_chunks(key)
    try:
        first = next(chunks, b"")
    except FileNotFoundError:
        raise errors.NotFound(missing) from None
    response = StreamingHttpResponse(_chain(first, chunks), content_type=content_type)
    if size is not None:
        response["Content-Length"] = str(size)
    response["Content-Disposition"] = content_disposition_header(as_attachment=True, filename=filename)
    return response


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    try:
        yield first
        yield from rest
    finally:
        # The response closes this generator; pass that on so the storage handle is released.
        close = getattr(rest, "close", None)
        if close is not None:
            close()
