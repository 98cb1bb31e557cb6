"""The one module that touches object storage (S3 or the local data folder) outside FileFields."""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
from collections.abc import Iterator
from typing import IO, BinaryIO

import pandas as pd
from django.core.files.base import File
from django.core.files.storage import default_storage, storages

logger = logging.getLogger(__name__)

CHUNK_SIZE = 1024 * 1024


class StorageError(Exception):
    """Object storage could not be reached or refused the operation."""


@contextlib.contextmanager
def _translated(action: str, key: str) -> Iterator[None]:
    try:
        yield
    except StorageError:
        raise
    except FileNotFoundError:
        raise
    except Exception as exc:  # botocore, OSError, urllib3: the caller only needs "storage failed"
        raise StorageError(f"storage {action} of {key!r} failed: {exc}") from exc


def exists(key: str) -> bool:
    with _translated("lookup", key):
        return default_storage.exists(key)


def put(key: str, content: BinaryIO | IO[bytes]) -> str:
    """Store content under exactly `key`; an existing object under the key is kept as it is.

    Keys are content-addressed by the callers, so an existing object already holds these bytes.
    """
    with _translated("write", key):
        if default_storage.exists(key):
            return key
        content.seek(0)
        saved = default_storage.save(key, File(content, name=key))
        if saved != key:
            # Another writer stored the same key between our check and our save: keep theirs.
            default_storage.delete(saved)
        return key


def put_bytes(key: str, data: bytes) -> str:
    return put(key, io.BytesIO(data))


@contextlib.contextmanager
def open_read(key: str) -> Iterator[IO[bytes]]:
    """Open an object for reading; raises FileNotFoundError when it is missing."""
    with _translated("read", key):
        if not default_storage.exists(key):
            raise FileNotFoundError(key)
        handle = default_storage.open(key, "rb")
    try:
        yield handle
    finally:
        handle.close()


def read_bytes(key: str) -> bytes | None:
    try:
        with open_read(key) as handle, _translated("read", key):
            return handle.read()
    except FileNotFoundError:
        return None


def iter_chunks(key: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    with open_read(key) as handle, _translated("read", key):
        while chunk := handle.read(chunk_size):
            yield chunk


def read_csv(key: str, **kwargs: object) -> pd.DataFrame | None:
    try:
        with open_read(key) as handle, _translated("read", key):
            return pd.read_csv(handle, **kwargs)
    except FileNotFoundError:
        return None


def write_csv(key: str, frame: pd.DataFrame) -> str:
    buffer = io.BytesIO(frame.to_csv(index=False).encode("utf-8"))
    with _translated("write", key):
        if default_storage.exists(key):
            default_storage.delete(key)
    return put(key, buffer)


def delete(key: str) -> None:
    with _translated("delete", key):
        default_storage.delete(key)


def size(key: str) -> int:
    with _translated("lookup", key):
        return default_storage.size(key)


def sha256_of(key: str) -> str:
    digest = hashlib.sha256()
    for chunk in iter_chunks(key):
        digest.update(chunk)
    return digest.hexdigest()


def url_for(key: str) -> str:
    with _translated("url", key):
        return default_storage.url(key)


def check() -> None:
    """Raise StorageError unless storage answers; used by /readyz."""
    backend = storages["default"]
    bucket = getattr(backend, "bucket_name", None)
    with _translated("health check", bucket or ".readyz"):
        if bucket:
            # A key lookup in a missing bucket answers "not found" like a missing key: ask for the bucket.
            backend.connection.meta.client.head_bucket(Bucket=bucket)
        else:
            default_storage.exists(".readyz")


def backend_name() -> str:
    return type(storages["default"]).__name__
