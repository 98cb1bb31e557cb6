"""ONNX conversion of a trained pipeline, kept only when onnxruntime agrees with scikit-learn.

The tolerances and OnnxConversion are read by services every process imports: onnx, skl2onnx and
scikit-learn are imported by onnx_convert, on a training's or an upload's first conversion.
"""

from __future__ import annotations

import functools
import json
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ml import artifacts
from ml.features import NUMERIC, columns_from_frame
from ml.predictor import CLASSES_METADATA_KEY, INPUT_NAMES_METADATA_KEY, OnnxPredictor

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

# Pinned so an artifact does not change with the converter's default; onnxruntime supports both.
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
PROBABILITY_ATOL = 1e-4
REGRESSION_RTOL = 1e-4
REGRESSION_ATOL = 1e-4
# onnxruntime is checked against scikit-learn on a seeded sample of at most this many holdout rows: a deep
# forest takes seconds to score 20,000 rows a second time, and a converter that gets a tree wrong gets it
# wrong on many rows. The number of rows checked is recorded with the conversion.
CHECK_MAX_ROWS = 2000


@dataclass(frozen=True)
class OnnxConversion:
    data: bytes | None
    sha256: str | None
    reason: str | None
    max_probability_diff: float | None = None
    max_value_diff: float | None = None
    # How many holdout rows onnxruntime was checked on (a seeded sample of at most CHECK_MAX_ROWS).
    checked_rows: int | None = None

    @property
    def available(self) -> bool:
        return self.data is not None


def _skl2onnx_hist_gradient_boosting_fix() -> None:
    """Let skl2onnx 1.20 convert histogram gradient boosting under protobuf 7.

    Its HistGradientBoosting path passes Python bools for nodes_missing_value_tracks_true, which
    protobuf 7 refuses in an integer attribute ("Expected an int, got a boolean"). Casting to int is
    what the attribute means. The wrapper only touches that keyword, and the holdout check below still
    decides whether the result is kept.
    """
    from skl2onnx.common import tree_ensemble

    original = tree_ensemble.add_node
    if getattr(original, "_mlops_bools_as_ints", False):
        return

    @functools.wraps(original)
    def add_node(*args: Any, **kwargs: Any) -> Any:
        if "nodes_missing_value_tracks_true" in kwargs:
            kwargs["nodes_missing_value_tracks_true"] = int(kwargs["nodes_missing_value_tracks_true"])
        return original(*args, **kwargs)

    add_node._mlops_bools_as_ints = True  # type: ignore[attr-defined]
    tree_ensemble.add_node = add_node


def _first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else type(exc).__name__


def check_rows(n_rows: int, *, seed: int = 0) -> np.ndarray:
    """Positions of the holdout rows the ONNX check runs on: all of them, or a seeded sorted sample."""
    if n_rows <= CHECK_MAX_ROWS:
        return np.arange(n_rows)
    return np.sort(np.random.default_rng(seed).choice(n_rows, CHECK_MAX_ROWS, replace=False))


def onnx_convert(
    *,
    pipeline: Pipeline,
    feature_schema: list[dict[str, Any]],
    X_holdout: pd.DataFrame,
    classes: list[Any] | None = None,
    sklearn_predictions: Any = None,
    sklearn_probabilities: np.ndarray | None = None,
    seed: int = 0,
) -> OnnxConversion:
    """Convert with one input per column, then check onnxruntime against scikit-learn on the holdout.

    Numeric inputs are float32 (onnxruntime's Imputer has no double kernel); categoricals are strings.
    Any failure, in conversion or in agreement, gives data=None and the reason, never an exception.
    The check runs on at most CHECK_MAX_ROWS holdout rows, a sample drawn with `seed` (check_rows); the
    number is in `checked_rows`. `sklearn_predictions` and `sklearn_probabilities` are the pipeline's
    predict and predict_proba on all of X_holdout when the caller already has them
    (TrainingResult.holdout_predictions and holdout_probabilities); whatever is not given is computed here,
    on the checked rows only.
    """
    import onnx
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    from ml import onnx_trees

    _skl2onnx_hist_gradient_boosting_fix()
    model = pipeline.named_steps["model"]
    is_classifier = hasattr(model, "predict_proba") and classes is not None
    initial_types = [
        (c["name"], FloatTensorType([None, 1]) if c["kind"] == NUMERIC else StringTensorType([None, 1]))
        for c in feature_schema
    ]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            converted = onnx_trees.pipeline_to_onnx(
                pipeline, initial_types=initial_types, classifier=is_classifier, target_opset=TARGET_OPSET
            )
        input_names = [i.name for i in converted.model.graph.input]
        if len(input_names) != len(feature_schema):
            raise ValueError(f"expected {len(feature_schema)} inputs, the converter made {len(input_names)}")
        # Graph inputs keep the order of initial_types, so position pairs each column with its input.
        props = {
            INPUT_NAMES_METADATA_KEY: json.dumps(
                dict(zip([c["name"] for c in feature_schema], input_names, strict=True))
            )
        }
        if classes is not None:
            props[CLASSES_METADATA_KEY] = json.dumps(list(classes))
        onnx.helper.set_model_props(converted.model, props)
        data = converted.serialize()
        # A large forest's encoded trees hold hundreds of MB; onnxruntime makes its own copy next.
        del converted
    except Exception as exc:  # skl2onnx raises many unrelated types for unsupported models
        return OnnxConversion(None, None, f"ONNX conversion failed: {type(exc).__name__}: {_first_line(exc)}")
    sha256 = artifacts.sha256_hex(data)
    n_holdout = len(X_holdout)
    if sklearn_predictions is not None and len(sklearn_predictions) != n_holdout:
        raise ValueError(f"{len(sklearn_predictions)} scikit-learn predictions for {n_holdout} holdout rows")
    rows = check_rows(n_holdout, seed=seed)
    checked = X_holdout if len(rows) == n_holdout else X_holdout.iloc[rows]
    n_checked = len(rows)
    try:
        # The whole file is loaded as serving loads it. For a large forest the session takes most of the
        # conversion's time, building onnxruntime's own tree structures; no session option changes that
        # (measured: graph optimisations off, memory arena and pattern off, ONNX format hint, 1 or 2 threads).
        predictor = OnnxPredictor(data, sha256=sha256, feature_schema=feature_schema, classes=classes)
        onnx_labels, onnx_proba = predictor.predict_columns(columns_from_frame(checked, feature_schema))
    except Exception as exc:  # onnxruntime raises its own unexported exception types
        return OnnxConversion(None, None, f"The converted ONNX model does not run: {_first_line(exc)}")
    if sklearn_predictions is None:
        sklearn_predictions = pipeline.predict(checked)
    else:
        sklearn_predictions = np.asarray(sklearn_predictions).ravel()[rows]
    sk_labels = np.asarray(sklearn_predictions).ravel().tolist()
    if not is_classifier:
        diff = float(np.max(np.abs(np.asarray(onnx_labels) - np.asarray(sk_labels)), initial=0.0))
        if not np.allclose(onnx_labels, sk_labels, rtol=REGRESSION_RTOL, atol=REGRESSION_ATOL):
            return OnnxConversion(
                None,
                None,
                f"ONNX predictions differ from scikit-learn on the holdout (max difference {diff:.3g}).",
                max_value_diff=diff,
                checked_rows=n_checked,
            )
        return OnnxConversion(data, sha256, None, max_value_diff=diff, checked_rows=n_checked)
    mismatched = sum(1 for a, b in zip(onnx_labels, sk_labels, strict=True) if a != b)
    if sklearn_probabilities is None:
        sklearn_probabilities = pipeline.predict_proba(checked)
    else:
        sk_all = np.asarray(sklearn_probabilities, dtype=float)
        if sk_all.shape != (n_holdout, len(classes or ())):
            raise ValueError(f"scikit-learn probabilities of shape {sk_all.shape} for {n_holdout} rows")
        sklearn_probabilities = sk_all[rows]
    sk_proba = np.asarray(sklearn_probabilities, dtype=float)
    diff = float(np.max(np.abs(np.asarray(onnx_proba, dtype=float) - sk_proba), initial=0.0))
    if mismatched:
        return OnnxConversion(
            None,
            None,
            f"ONNX labels differ from scikit-learn on {mismatched} of {n_checked} holdout rows.",
            max_probability_diff=diff,
            checked_rows=n_checked,
        )
    if diff > PROBABILITY_ATOL:
        return OnnxConversion(
            None,
            None,
            f"ONNX probabilities differ from scikit-learn by up to {diff:.3g} on the holdout "
            f"(tolerance {PROBABILITY_ATOL}).",
            max_probability_diff=diff,
            checked_rows=n_checked,
        )
    return OnnxConversion(data, sha256, None, max_probability_diff=diff, checked_rows=n_checked)
