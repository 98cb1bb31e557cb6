"""Predictors built from verified model bytes: onnxruntime when a verified ONNX exists, else scikit-learn."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from ml import artifacts
from ml.errors import ArtifactError, PredictionInputError
from ml.features import NUMERIC, columns_from_rows

# ONNX models we convert carry their class labels here, so the file alone is enough to predict.
CLASSES_METADATA_KEY = "mlops_classes"
# The converter rewrites input names to identifiers ("petal length (cm)" -> "petal_length__cm_"); this
# metadata maps each schema column to its ONNX input. Without it, inputs must carry the column names.
INPUT_NAMES_METADATA_KEY = "mlops_input_names"

Labels = list[Any]
Probabilities = list[list[float]] | None


def _plain_list(values: Any) -> list[Any]:
    return np.asarray(values).ravel().tolist()


class SklearnPredictor:
    """Predicts with the canonical skops pipeline (loaded once, checksum verified)."""

    kind = artifacts.SKOPS

    def __init__(self, data: bytes, *, sha256: str, feature_schema: list[dict[str, Any]]) -> None:
        self.feature_schema = feature_schema
        self.pipeline = artifacts.skops_load(data, sha256=sha256)
        classes = getattr(self.pipeline, "classes_", None)
        self.classes: list[Any] | None = _plain_list(classes) if classes is not None else None

    def predict(self, rows: list[dict[str, Any]]) -> tuple[Labels, Probabilities]:
        return self.predict_columns(columns_from_rows(rows, self.feature_schema))

    def predict_columns(self, columns: dict[str, np.ndarray]) -> tuple[Labels, Probabilities]:
        frame = pd.DataFrame(columns)
        labels = _plain_list(self.pipeline.predict(frame))
        if self.classes is None or not hasattr(self.pipeline, "predict_proba"):
            return labels, None
        return labels, np.asarray(self.pipeline.predict_proba(frame), dtype=float).tolist()


_NUMERIC_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64}


class OnnxPredictor:
    """Predicts with onnxruntime: one session per model, fed per-column arrays without a DataFrame.

    Two input layouts are accepted: one [N, 1] input per schema column (what onnx_convert produces), or a
    single [N, k] float input holding all-numeric features in schema order (a common external export).
    """

    kind = artifacts.ONNX

    def __init__(
        self,
        data: bytes,
        *,
        sha256: str,
        feature_schema: list[dict[str, Any]],
        classes: list[Any] | None = None,
    ) -> None:
        self.feature_schema = feature_schema
        self.session = artifacts.onnx_load(data, sha256=sha256)
        self._inputs = {i.name: i for i in self.session.get_inputs()}
        metadata = self.session.get_modelmeta().custom_metadata_map
        stored_names = metadata.get(INPUT_NAMES_METADATA_KEY)
        self._input_of: dict[str, str] = json.loads(stored_names) if stored_names else {}
        self._layout = self._layout_check()
        outputs = self.session.get_outputs()
        self._output_names = [o.name for o in outputs]
        self.is_classifier = len(outputs) >= 2
        if classes is None and self.is_classifier:
            stored = metadata.get(CLASSES_METADATA_KEY)
            classes = json.loads(stored) if stored else None
        self.classes = list(classes) if classes is not None else None

    def _layout_check(self) -> str:
        names = [c["name"] for c in self.feature_schema]
        self._input_of = {name: self._input_of.get(name, name) for name in names}
        if set(self._inputs) == set(self._input_of.values()):
            for column in self.feature_schema:
                onnx_type = self._inputs[self._input_of[column["name"]]].type
                wanted = set(_NUMERIC_TYPES) if column["kind"] == NUMERIC else {"tensor(string)"}
                if onnx_type not in wanted:
                    raise ArtifactError(
                        f"ONNX input '{column['name']}' is {onnx_type}, but the schema column is "
                        f"{column['kind']} (expected {' or '.join(sorted(wanted))})."
                    )
            return "columns"
        if len(self._inputs) == 1 and all(c["kind"] == NUMERIC for c in self.feature_schema):
            (single,) = self._inputs.values()
            width = single.shape[-1] if single.shape else None
            if single.type in _NUMERIC_TYPES and (not isinstance(width, int) or width == len(names)):
                return "matrix"
        raise ArtifactError(
            f"The ONNX model's inputs ({', '.join(self._inputs)}) do not match the feature schema "
            f"({', '.join(names)}): expected one input per column, or one numeric matrix input."
        )

    def predict(self, rows: list[dict[str, Any]]) -> tuple[Labels, Probabilities]:
        return self.predict_columns(columns_from_rows(rows, self.feature_schema))

    def _feeds(self, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._layout == "matrix":
            (single,) = self._inputs.values()
            dtype = _NUMERIC_TYPES[single.type]
            matrix = np.column_stack([columns[c["name"]] for c in self.feature_schema]).astype(dtype)
            return {single.name: matrix}
        feeds = {}
        for column in self.feature_schema:
            name = column["name"]
            values = columns[name]
            input_name = self._input_of[name]
            if column["kind"] == NUMERIC:
                values = values.astype(_NUMERIC_TYPES[self._inputs[input_name].type])
            feeds[input_name] = values.reshape(-1, 1)
        return feeds

    def _run(self, feeds: dict[str, np.ndarray]) -> list[Any]:
        try:
            return self.session.run(self._output_names, feeds)
        except Exception as exc:  # onnxruntime raises its own unexported exception types
            raise PredictionInputError(f"The ONNX model could not score these rows: {exc}") from exc

    def predict_columns(self, columns: dict[str, np.ndarray]) -> tuple[Labels, Probabilities]:
        outputs = self._run(self._feeds(columns))
        if not self.is_classifier:
            return np.asarray(outputs[0], dtype=float).ravel().tolist(), None
        labels = _plain_list(outputs[0])
        scores = outputs[1]
        if isinstance(scores, list):
            # A ZipMap output (external models): one {class: probability} mapping per row.
            if self.classes is None and scores:
                self.classes = sorted(scores[0])
            return labels, [[float(row[c]) for c in self.classes or []] for row in scores]
        return labels, np.asarray(scores, dtype=float).tolist()


#: infer(inputs, output_names) -> outputs by name: one inference call to a model server.
Infer = Callable[[dict[str, np.ndarray], list[str]], dict[str, np.ndarray]]


class TritonPredictor(OnnxPredictor):
    """Predicts through a model server (Triton) serving this same ONNX file, with the in-process session
    as the fallback.

    The inputs sent are the ones onnxruntime would get (same names, types and [N, 1] or [N, k] shapes)
    and the outputs are read the same way, so the answers are those of OnnxPredictor. When `infer` fails
    (the server is down, slow, answers an error, or no longer serves this version) the rows are scored
    in-process and `on_fallback(exc)` is told; after a failure the server is not asked again for
    `retry_after` seconds (on_fallback(None) for each such request), so an outage costs one timeout per
    `retry_after`, not one per request. More than `max_rows` rows (the server's batch limit) are sent in
    several requests. Bad rows raise PredictionInputError from the in-process session,
    as they would without the server.
    """

    kind = "triton"

    def __init__(
        self,
        data: bytes,
        *,
        sha256: str,
        feature_schema: list[dict[str, Any]],
        infer: Infer,
        classes: list[Any] | None = None,
        on_fallback: Callable[[Exception | None], None] | None = None,
        retry_after: float = 10.0,
        max_rows: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(data, sha256=sha256, feature_schema=feature_schema, classes=classes)
        self.max_rows = max_rows
        self.infer = infer
        self.on_fallback = on_fallback or (lambda exc: None)
        self.retry_after = retry_after
        self.clock = clock
        self._skip_until = 0.0

    def _run(self, feeds: dict[str, np.ndarray]) -> list[Any]:
        if self.clock() < self._skip_until:
            self.on_fallback(None)
            return super()._run(feeds)
        try:
            n_rows = len(next(iter(feeds.values())))
            parts = []
            # The server takes at most max_rows rows per request (its max_batch_size).
            for start in range(0, max(n_rows, 1), self.max_rows):
                part = self.infer(
                    {k: v[start : start + self.max_rows] for k, v in feeds.items()}, self._output_names
                )
                # A ZipMap output arrives as the probability tensor it wraps (the exported graph's).
                parts.append([np.asarray(part[name]) for name in self._output_names])
            if len(parts) == 1:
                return parts[0]
            return [np.concatenate(outputs) for outputs in zip(*parts, strict=True)]
        except Exception as exc:  # any failure of the server: the in-process session answers
            self._skip_until = self.clock() + self.retry_after
            self.on_fallback(exc)
            return super()._run(feeds)


def predictor_from_artifacts(
    *,
    feature_schema: list[dict[str, Any]],
    skops_bytes: bytes | None = None,
    skops_sha256: str | None = None,
    onnx_bytes: bytes | None = None,
    onnx_sha256: str | None = None,
    classes: list[Any] | None = None,
) -> SklearnPredictor | OnnxPredictor:
    """The ONNX predictor when verified ONNX bytes are given, else the scikit-learn one."""
    if onnx_bytes is not None:
        if onnx_sha256 is None:
            raise ArtifactError("An ONNX model was given without its recorded checksum.")
        return OnnxPredictor(onnx_bytes, sha256=onnx_sha256, feature_schema=feature_schema, classes=classes)
    if skops_bytes is None or skops_sha256 is None:
        raise ArtifactError(
            "No model file to predict with: neither a verified ONNX nor a skops file with its checksum."
        )
    return SklearnPredictor(skops_bytes, sha256=skops_sha256, feature_schema=feature_schema)
