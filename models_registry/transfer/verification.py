"""The model files of an archive, loaded as any model file from outside and checked against each other."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ml import artifacts, onnx_export, predictor
from ml.errors import ArtifactError, PredictionInputError
from ml.features import NUMERIC, columns_from_rows
from models_registry.models import Task
from models_registry.transfer.archive import DATASET_MEMBER, ONNX_MEMBER, SKOPS_MEMBER
from models_registry.transfer.errors import ArchiveRefused

# Rows both model files must agree on at import: the version's examples, a few dataset rows, and rows built
# from the feature schema's ranges and categories.
CHECK_ROWS = 12


@dataclass
class CheckedModel:
    """The loaded model files, the rows they were checked on and the labels they gave."""

    skops: predictor.SklearnPredictor | None
    onnx: predictor.OnnxPredictor | None
    rows: list[dict[str, Any]]
    labels: list[Any]


def models_check(manifest: dict[str, Any], members: dict[str, bytes]) -> CheckedModel:
    """Load each model file as an upload is loaded and check that it predicts, and that both agree."""
    version = manifest["version"]
    schema = version["feature_schema"]
    classes = version["classes"]
    loaded: dict[str, Any] = {}
    for member, field in ((SKOPS_MEMBER, "skops_sha256"), (ONNX_MEMBER, "onnx_sha256")):
        if member not in members:
            continue
        try:
            # The upload path's own check: skops with our trusted types only, never a pickle; ONNX checked.
            uploaded = artifacts.uploaded_model_validate(data=members[member], filename=member)
            if member == SKOPS_MEMBER:
                loaded[member] = predictor.SklearnPredictor(
                    members[member], sha256=version[field], feature_schema=schema
                )
            else:
                loaded[member] = predictor.OnnxPredictor(
                    members[member], sha256=version[field], feature_schema=schema, classes=classes
                )
        except ArtifactError as exc:
            raise ArchiveRefused(f"{member} was refused: {exc} Nothing was imported.") from None
        if uploaded.sha256 != version[field]:
            raise ArchiveRefused(f"{member} does not match version.{field}. Nothing was imported.")
    skops_model, onnx_model = loaded.get(SKOPS_MEMBER), loaded.get(ONNX_MEMBER)
    if skops_model is not None and version["task"] == Task.CLASSIFICATION:
        own = skops_model.classes
        if own is None or classes is None or [str(c) for c in own] != [str(c) for c in classes]:
            raise ArchiveRefused(
                f"{SKOPS_MEMBER} predicts the classes {own}, but the manifest says {classes}. "
                "Nothing was imported."
            )
    rows = _check_rows(version, members.get(DATASET_MEMBER))
    outputs = {}
    for member, model in loaded.items():
        try:
            outputs[member] = model.predict(rows)
        except (ArtifactError, PredictionInputError) as exc:
            raise ArchiveRefused(
                f"{member} cannot predict rows of its own feature schema: {exc} Nothing was imported."
            ) from None
        except Exception as exc:  # a foreign pipeline can fail in any way
            raise ArchiveRefused(
                f"{member} failed to predict rows of its own feature schema: {type(exc).__name__}: {exc}. "
                "Nothing was imported."
            ) from None
        if len(outputs[member][0]) != len(rows):
            raise ArchiveRefused(f"{member} did not return one prediction per row. Nothing was imported.")
    if skops_model is not None and onnx_model is not None:
        _predictions_compare(version["task"], outputs[SKOPS_MEMBER], outputs[ONNX_MEMBER], rows=len(rows))
    labels = outputs[SKOPS_MEMBER if skops_model is not None else ONNX_MEMBER][0]
    return CheckedModel(skops=skops_model, onnx=onnx_model, rows=rows, labels=labels)


def _predictions_compare(task: str, skops_out: Any, onnx_out: Any, *, rows: int) -> None:
    (sk_labels, sk_proba), (ox_labels, ox_proba) = skops_out, onnx_out
    if task == Task.REGRESSION:
        if not np.allclose(
            np.asarray(ox_labels, dtype=float),
            np.asarray(sk_labels, dtype=float),
            rtol=onnx_export.REGRESSION_RTOL,
            atol=onnx_export.REGRESSION_ATOL,
        ):
            raise ArchiveRefused(
                f"{SKOPS_MEMBER} and {ONNX_MEMBER} predict different values on {rows} check rows: they are "
                "not the same model. Nothing was imported."
            )
        return
    differing = sum(1 for a, b in zip(sk_labels, ox_labels, strict=True) if str(a) != str(b))
    close = (
        sk_proba is None
        or ox_proba is None
        or np.allclose(np.asarray(sk_proba), np.asarray(ox_proba), atol=onnx_export.PROBABILITY_ATOL, rtol=0)
    )
    if differing or not close:
        raise ArchiveRefused(
            f"{SKOPS_MEMBER} and {ONNX_MEMBER} disagree on {differing or 'the probabilities of'} of {rows} "
            "check rows: they are not the same model. Nothing was imported."
        )


def _check_rows(version: dict[str, Any], dataset_csv: bytes | None) -> list[dict[str, Any]]:
    schema = version["feature_schema"]
    rows: list[dict[str, Any]] = [dict(row) for row in version["example_rows"][:5]]
    if dataset_csv is not None:
        with contextlib.suppress(Exception):  # the dataset is checked on its own when it is stored
            frame = pd.read_csv(io.BytesIO(dataset_csv), nrows=4)
            names = [column["name"] for column in schema if column["name"] in frame.columns]
            rows += [
                {k: (None if pd.isna(v) else v) for k, v in row.items()}
                for row in frame[names].to_dict("records")
            ]
    synthesized = max(CHECK_ROWS - len(rows), 3)
    for position in range(synthesized):
        fraction = (position + 1) / (synthesized + 1)
        row: dict[str, Any] = {}
        for column in schema:
            if column["kind"] == NUMERIC:
                low, high = column.get("min"), column.get("max")
                if low is not None and high is not None:
                    row[column["name"]] = float(low + (high - low) * fraction)
                else:
                    row[column["name"]] = float(next((v for v in (low, high) if v is not None), 0.0))
            else:
                categories = column.get("categories") or ["unknown"]
                row[column["name"]] = categories[position % len(categories)]
        rows.append(row)
    # Rows the schema cannot read (a category text where a number is due) are a malformed archive.
    try:
        columns_from_rows(rows, schema)
    except PredictionInputError as exc:
        raise ArchiveRefused(f"The archive's example rows do not fit its feature schema: {exc}") from None
    return rows
