"""The refusals of an export or import; nothing was written when one is raised."""

from __future__ import annotations

from django.core.exceptions import ValidationError


class ArchiveRefused(ValidationError):
    """The archive is malformed, tampered with or from an unknown format; nothing was written."""


class ArchiveTooLarge(ArchiveRefused):
    """A member of the archive, or the archive itself, is over its size limit; nothing was read beyond it."""


class ExportRefused(ValidationError):
    """The version cannot be exported: a stored file is missing or no longer matches its checksum."""
