"""Checks of a batch upload before anything is stored: the header row, and the row estimate."""

from __future__ import annotations

from collections.abc import Iterable
from typing import IO

from ml import csv_header
from models_registry.models import ModelVersion
from predictions.batch import outputs as batch_outputs


def line_count(file: IO[bytes]) -> int:
    file.seek(0)
    count, last = 0, b""
    while block := file.read(1024 * 1024):
        count += block.count(b"\n")
        last = block[-1:]
    return count + (1 if last and last != b"\n" else 0)


def _names(names: Iterable[str]) -> str:
    return ", ".join(repr(n) for n in names)


def header_problems(header: list[str] | None, *, has_rows: bool, version: ModelVersion) -> list[str]:
    if header is None:
        return ["The file is empty: it has no header row and no data."]
    problems = csv_header.header_problems(header)
    seen = set(header)
    features = [c["name"] for c in version.feature_schema]
    missing = [name for name in features if name not in seen]
    if missing:
        problems.append(
            f"The file lacks {len(missing)} feature column{'s' if len(missing) != 1 else ''} of "
            f"{version.registered_model.name} v{version.version}: {_names(missing)}. The header must name "
            f"every feature: {_names(features)}. Other columns are allowed and copied to the result."
        )
    taken = [name for name in batch_outputs.output_columns(classes=version.classes) if name in seen]
    if taken:
        problems.append(
            f"The file already has column{'s' if len(taken) != 1 else ''} named {_names(taken)}, which the "
            "result adds with the predictions. Rename or remove them."
        )
    if not has_rows:
        problems.append("The file has a header row but no data rows.")
    return problems
