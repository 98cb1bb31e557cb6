"""Reading and writing the archive's members (tar or zip) with the name, link, duplicate and size checks."""

from __future__ import annotations

import datetime as dt
import io
import stat
import tarfile
import zipfile
from typing import IO

from django.conf import settings
from django.core.exceptions import ValidationError

from models_registry import upload_services
from models_registry.transfer.errors import ArchiveRefused, ArchiveTooLarge

MANIFEST = "manifest.json"
SKOPS_MEMBER = "model.skops"
ONNX_MEMBER = "model.onnx"
DATASET_MEMBER = "dataset.csv"
FILE_MEMBERS = (SKOPS_MEMBER, ONNX_MEMBER, DATASET_MEMBER)
# The version's JSON fields (reference profile, figures) are far below this; it bounds what is parsed.
MANIFEST_MAX_BYTES = 64 * 1024 * 1024
#: Archive kinds by the output file's suffix.
ARCHIVE_SUFFIXES = {".tar": "tar", ".tar.gz": "tar.gz", ".tgz": "tar.gz", ".zip": "zip"}
ARCHIVE_KINDS = ("tar", "tar.gz", "zip")
# Headers, padding and a zip's central directory around the members.
_ARCHIVE_OVERHEAD = 1024 * 1024


def archive_kind_for(filename: str) -> str:
    """tar, tar.gz or zip from a file name's suffix; ValidationError for any other name."""
    lowered = filename.lower()
    for suffix in sorted(ARCHIVE_SUFFIXES, key=len, reverse=True):
        if lowered.endswith(suffix):
            return ARCHIVE_SUFFIXES[suffix]
    raise ValidationError(f"Name the archive .tar, .tar.gz, .tgz or .zip (got {filename!r}).")


def member_max_bytes(name: str) -> int:
    """The size limit of one member: the upload limits of model files and datasets, 64 MB for the manifest."""
    if name == MANIFEST:
        return MANIFEST_MAX_BYTES
    if name == DATASET_MEMBER:
        return settings.DATASET_MAX_UPLOAD_MB * 1024 * 1024
    return upload_services.model_max_upload_bytes()


def archive_max_bytes() -> int:
    """The largest archive an import reads: every member at its limit, stored uncompressed."""
    return sum(member_max_bytes(name) for name in (MANIFEST, *FILE_MEMBERS)) + _ARCHIVE_OVERHEAD


def archive_write(output: IO[bytes], *, kind: str, members: dict[str, bytes], mtime: float) -> None:
    """Write `members` as plain files at the archive's top level, dated `mtime`."""
    if kind == "zip":
        stamp = dt.datetime.fromtimestamp(max(mtime, 315532800), tz=dt.UTC).timetuple()[:6]
        with zipfile.ZipFile(output, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, data in members.items():
                info = zipfile.ZipInfo(name, date_time=stamp)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = (stat.S_IFREG | 0o644) << 16
                archive.writestr(info, data)
        return
    with tarfile.open(
        fileobj=output, mode="w:gz" if kind == "tar.gz" else "w", format=tarfile.PAX_FORMAT
    ) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode, info.type = len(data), int(mtime), 0o644, tarfile.REGTYPE
            tar.addfile(info, io.BytesIO(data))


def _member_name_check(name: str, seen: dict[str, bytes]) -> None:
    if name not in (MANIFEST, *FILE_MEMBERS):
        raise ArchiveRefused(
            f"The archive holds an unexpected member {name[:200]!r}; only {MANIFEST}, "
            f"{', '.join(FILE_MEMBERS)} may be in it, at its top level. Nothing was imported."
        )
    if name in seen:
        raise ArchiveRefused(f"The archive holds {name} twice. Nothing was imported.")


def _too_big(name: str, limit: int) -> ArchiveTooLarge:
    return ArchiveTooLarge(
        f"{name} in the archive is larger than the {limit // (1024 * 1024)} MB limit for it. "
        "Nothing was imported."
    )


def archive_members_read(archive: IO[bytes]) -> dict[str, bytes]:
    """The archive's members by name, refusing links, directories, unexpected or repeated names and
    members over their size limit, before any member is read beyond its limit."""
    archive.seek(0)
    head = archive.read(4)
    archive.seek(0)
    if head == b"PK\x03\x04":
        return _zip_members(archive)
    try:
        with tarfile.open(fileobj=archive, mode="r:*") as tar:
            return _tar_members(tar)
    except (tarfile.TarError, EOFError, OSError, zipfile.BadZipFile) as exc:
        raise ArchiveRefused(
            f"This is not a model archive: it is neither a tar nor a zip file that can be read ({exc}). "
            "Nothing was imported."
        ) from None


def _tar_members(tar: tarfile.TarFile) -> dict[str, bytes]:
    members: dict[str, bytes] = {}
    for member in tar:
        _member_name_check(member.name, members)
        if not member.isreg():
            raise ArchiveRefused(
                f"{member.name} in the archive is a link, a directory or a device, not a plain file. "
                "Nothing was imported."
            )
        limit = member_max_bytes(member.name)
        if member.size > limit:
            raise _too_big(member.name, limit)
        handle = tar.extractfile(member)
        data = handle.read(limit + 1) if handle is not None else b""
        if len(data) != member.size:
            raise ArchiveRefused(f"{member.name} in the archive is truncated. Nothing was imported.")
        members[member.name] = data
    return members


def _zip_members(archive: IO[bytes]) -> dict[str, bytes]:
    members: dict[str, bytes] = {}
    try:
        with zipfile.ZipFile(archive) as zipped:
            for info in zipped.infolist():
                _member_name_check(info.filename, members)
                mode = info.external_attr >> 16
                # Zip writers often store permissions without a file type; a type other than a plain file
                # (a symlink) is refused.
                if info.is_dir() or stat.S_IFMT(mode) not in (0, stat.S_IFREG):
                    raise ArchiveRefused(
                        f"{info.filename} in the archive is a link or a directory, not a plain file. "
                        "Nothing was imported."
                    )
                if info.flag_bits & 0x1:
                    raise ArchiveRefused(
                        f"{info.filename} in the archive is encrypted. Nothing was imported."
                    )
                limit = member_max_bytes(info.filename)
                # The declared size is checked first; the reader never returns more than it declares.
                if info.file_size > limit:
                    raise _too_big(info.filename, limit)
                with zipped.open(info) as handle:
                    data = handle.read(limit + 1)
                if len(data) != info.file_size:
                    raise ArchiveRefused(
                        f"{info.filename} in the archive is truncated. Nothing was imported."
                    )
                members[info.filename] = data
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, NotImplementedError) as exc:
        raise ArchiveRefused(f"The zip archive cannot be read: {exc}. Nothing was imported.") from None
    return members
