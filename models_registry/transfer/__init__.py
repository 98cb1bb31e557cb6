"""Moving a model version between sites (staging to production): the export archive and its strict import.

An archive holds manifest.json (the version's fields, its lineage and the sha256 of every other member),
model.skops and/or model.onnx, and optionally dataset.csv, the dataset version it was trained on. The
import checks everything before it writes anything, and then writes all or nothing. The modules: archive
(members), manifest (with checker and lineage), exporting, and importing with verification (model files),
mlflow_registration, version_record and undo.
"""

from models_registry.transfer.archive import (
    ARCHIVE_KINDS,
    ARCHIVE_SUFFIXES,
    archive_kind_for,
    archive_max_bytes,
    archive_members_read,
)
from models_registry.transfer.errors import ArchiveRefused, ArchiveTooLarge, ExportRefused
from models_registry.transfer.exporting import model_version_export
from models_registry.transfer.importing import ImportResult, model_version_import
from models_registry.transfer.lineage import IMPORTED_FROM
from models_registry.transfer.manifest import (
    EXAMPLE_ROWS_MAX,
    FORMAT_NAME,
    FORMAT_VERSION,
    manifest_parse,
    source_site,
)

__all__ = [
    "ARCHIVE_KINDS",
    "ARCHIVE_SUFFIXES",
    "EXAMPLE_ROWS_MAX",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "IMPORTED_FROM",
    "ArchiveRefused",
    "ArchiveTooLarge",
    "ExportRefused",
    "ImportResult",
    "archive_kind_for",
    "archive_max_bytes",
    "archive_members_read",
    "manifest_parse",
    "model_version_export",
    "model_version_import",
    "source_site",
]
