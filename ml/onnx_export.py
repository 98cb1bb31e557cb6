"""ONNX conversion of a trained pipeline, kept only when onnxruntime agrees with scikit-learn."""

from __future__ import annotations

import copy
import functools
import json
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import pandas as pd
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.pipeline import Pipeline

from ml import artifacts
from ml.pipeline import NUMERIC, columns_from_frame
from ml.predictor import CLASSES_METADATA_KEY, INPUT_NAMES_METADATA_KEY, OnnxPredictor

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


_ENSEMBLE_OPS = ("TreeEnsembleClassifier", "TreeEnsembleRegressor")
_FORESTS = (RandomForestClassifier, RandomForestRegressor)
_BOOSTING = (HistGradientBoostingClassifier, HistGradientBoostingRegressor)
_CLASSIFIERS = (RandomForestClassifier, HistGradientBoostingClassifier)


def _to_onnx(pipeline: Pipeline, *, initial_types: list[Any], classifier: bool) -> onnx.ModelProto:
    """skl2onnx's conversion of the pipeline; for tree ensembles, built from the first tree and then filled.

    skl2onnx 1.20 appends every node of every tree to Python lists, lets onnx check each value's type, then
    copies the graph several times: 110 s of CPU for a forest of 100 deep trees fitted on 80,000 rows (10
    million nodes), as long as fitting it. The pipeline is converted instead with a copy of the ensemble
    that holds only its first tree (or first iteration), which gives the whole graph (inputs,
    preprocessing, class labels, base values, outputs, attribute order); the ensemble node's attributes
    are then filled for every tree from the trees' arrays, with the values skl2onnx computes. The file is
    byte for byte the one skl2onnx writes (a test compares them). Before filling, the attributes computed
    for the first tree alone must equal what skl2onnx wrote for it, else (another converter version,
    float64 inputs, several outputs) the model takes skl2onnx's path.
    """
    from skl2onnx import to_onnx

    def convert(whole: Pipeline) -> onnx.ModelProto:
        model = whole.steps[-1][1]
        options = {id(model): {"zipmap": False}} if classifier else None
        return to_onnx(whole, initial_types=initial_types, options=options, target_opset=TARGET_OPSET)

    name, model = pipeline.steps[-1]
    if type(model) in _FORESTS and getattr(model, "n_outputs_", None) == 1 and model.estimators_:
        trees, attribute = "estimators_", _forest_attributes
    elif type(model) in _BOOSTING and _boosting_numeric(model._predictors):
        trees, attribute = "_predictors", _boosting_attributes
    else:
        return convert(pipeline)
    every = getattr(model, trees)
    first = copy.copy(model)
    setattr(first, trees, every[:1])
    light = copy.copy(pipeline)
    light.steps = [*pipeline.steps[:-1], (name, first)]
    converted = convert(light)
    kind = isinstance(model, _CLASSIFIERS)
    ensembles = [node for node in converted.graph.node if node.op_type in _ENSEMBLE_OPS]
    if len(ensembles) != 1 or not _ensemble_holds(ensembles[0], attribute(every[:1], classifier=kind)):
        return convert(pipeline)
    _ensemble_fill(ensembles[0], attribute(every, classifier=kind))
    return converted


def _boosting_numeric(predictors: list[list[Any]]) -> bool:
    """Whether every tree splits on numbers only (skl2onnx writes categorical splits otherwise)."""
    return bool(predictors) and not any(
        tree.nodes["is_categorical"].any() for trees in predictors for tree in trees
    )


def _attribute_values(attribute: onnx.AttributeProto) -> list[Any]:
    if attribute.type == onnx.AttributeProto.INTS:
        return list(attribute.ints)
    if attribute.type == onnx.AttributeProto.FLOATS:
        return list(attribute.floats)
    if attribute.type == onnx.AttributeProto.STRINGS:
        return list(attribute.strings)
    raise ValueError(f"unexpected type {attribute.type} of tree ensemble attribute {attribute.name}")


def _python_values(array: np.ndarray, attribute: onnx.AttributeProto) -> list[Any]:
    if attribute.type == onnx.AttributeProto.FLOATS:
        return array.astype(np.float32).tolist()
    return array.tolist()


def _ensemble_holds(node: onnx.NodeProto, values: dict[str, np.ndarray]) -> bool:
    """Whether the node's tree attributes are exactly `values`."""
    found = {attribute.name: attribute for attribute in node.attribute if attribute.name in values}
    if set(found) != set(values):
        return False
    try:
        return all(_attribute_values(a) == _python_values(values[n], a) for n, a in found.items())
    except ValueError:
        return False


def _ensemble_fill(node: onnx.NodeProto, values: dict[str, np.ndarray]) -> None:
    """Replace the node's tree attributes by `values`.

    Numbers go in as one packed protobuf field each, which parsers accept for repeated numbers whatever
    the schema says and which is stored exactly as values added one by one (the file written is the same):
    made by numpy, 10 million values take a tenth of the time of a Python list.
    """
    for attribute in node.attribute:
        if attribute.name not in values:
            continue
        array = values[attribute.name]
        if attribute.type == onnx.AttributeProto.INTS:
            del attribute.ints[:]
            if len(array) and array.min() >= 0:
                attribute.MergeFromString(_packed(_INTS_FIELD, _varints(array)))
            else:
                attribute.ints.extend(array.tolist())
        elif attribute.type == onnx.AttributeProto.FLOATS:
            del attribute.floats[:]
            attribute.MergeFromString(_packed(_FLOATS_FIELD, array.astype("<f4").tobytes()))
        else:
            del attribute.strings[:]
            attribute.strings.extend(_python_values(array, attribute))


# AttributeProto's field numbers of `floats` and `ints` (onnx.proto).
_FLOATS_FIELD = 7
_INTS_FIELD = 8


def _packed(field: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field: its key, the payload's length, the payload."""
    return bytes([field << 3 | 2]) + _varints(np.array([len(payload)])) + payload


def _varints(values: np.ndarray) -> bytes:
    """Protobuf varints of non-negative integers, one after the other: 7 bits a byte, low bits first."""
    top = int(values.max(initial=0))
    width = max(1, (top.bit_length() + 6) // 7)
    numbers = values.astype(np.uint32 if top < 2**32 else np.uint64)
    lengths = np.ones(len(numbers), dtype=np.uint8)
    for position in range(1, width):
        lengths += numbers >= numbers.dtype.type(1 << (7 * position))
    table = np.empty((len(numbers), width), dtype=np.uint8)
    for position in range(width):
        low = (numbers >> numbers.dtype.type(7 * position)).astype(np.uint8) & np.uint8(0x7F)
        table[:, position] = low | ((lengths > position + 1).view(np.uint8) << np.uint8(7))
    return table[np.arange(width, dtype=np.uint8) < lengths[:, None]].tobytes()


def _float32_thresholds(thresholds: np.ndarray) -> np.ndarray:
    """skl2onnx's sklearn_threshold for float32 inputs, on an array.

    scikit-learn compares float32(x) <= threshold (a float64); the float32 threshold that decides alike is
    the threshold rounded to float32 when that does not round up, else the float32 just below it.
    """
    rounded = thresholds.astype(np.float32)
    below = np.nextafter(rounded, np.float32(-np.inf))
    return np.where(rounded.astype(np.float64) <= thresholds, rounded, below)


class _Ensemble:
    """TreeEnsemble node and leaf attributes, gathered tree by tree as numpy arrays."""

    def __init__(self, *, classifier: bool) -> None:
        self.prefix = "class" if classifier else "target"
        self.parts: dict[str, list[np.ndarray]] = {}

    def tree(
        self,
        tree_id: int,
        *,
        branch: np.ndarray,
        feature: np.ndarray,
        threshold: np.ndarray,
        left: np.ndarray,
        right: np.ndarray,
        missing: np.ndarray,
        weights: np.ndarray,
        first_id: int = 0,
    ) -> None:
        """One tree: per node, whether it splits and its split; per leaf, its weights (one row a leaf)."""
        count = len(branch)
        leaves = np.flatnonzero(~branch).astype(np.int64)
        per_leaf = weights.shape[1]
        columns = {
            "nodes_treeids": np.full(count, tree_id, dtype=np.int64),
            "nodes_nodeids": np.arange(count, dtype=np.int64),
            "nodes_featureids": np.where(branch, feature, 0).astype(np.int64),
            "nodes_values": np.where(branch, threshold, np.float32(0.0)).astype(np.float32),
            "nodes_truenodeids": np.where(branch, left, 0).astype(np.int64),
            "nodes_falsenodeids": np.where(branch, right, 0).astype(np.int64),
            "nodes_missing_value_tracks_true": np.where(branch, missing, 0).astype(np.int64),
            "branch": branch,
            f"{self.prefix}_treeids": np.full(len(leaves) * per_leaf, tree_id, dtype=np.int64),
            f"{self.prefix}_nodeids": np.repeat(leaves, per_leaf),
            f"{self.prefix}_ids": np.tile(
                np.arange(first_id, first_id + per_leaf, dtype=np.int64), len(leaves)
            ),
            f"{self.prefix}_weights": weights.ravel(),
        }
        for name, array in columns.items():
            self.parts.setdefault(name, []).append(array)

    def values(self) -> dict[str, np.ndarray]:
        values = {name: np.concatenate(arrays) for name, arrays in self.parts.items()}
        branch = values.pop("branch")
        values["nodes_modes"] = np.array([b"LEAF", b"BRANCH_LEQ"], dtype=object)[branch.astype(np.intp)]
        values["nodes_hitrates"] = np.ones(len(branch), dtype=np.float32)
        return values


def _forest_attributes(estimators: list[Any], *, classifier: bool) -> dict[str, np.ndarray]:
    """The TreeEnsemble attributes of a random forest's trees, in skl2onnx's order and values.

    Every node in order, each tree's weight 1 / the number of trees; a leaf's weights are its values
    times that weight, divided for classifiers by the leaf's total, and only the second class's kept for
    two classes. Thresholds are adjusted to float32 as skl2onnx does; missing values never go to the
    true branch.
    """
    ensemble = _Ensemble(classifier=classifier)
    weight = 1.0 / len(estimators)
    for tree_id, estimator in enumerate(estimators):
        tree = estimator.tree_
        ids = np.arange(tree.node_count)
        branch = (tree.children_left > ids) | (tree.children_right > ids)
        leaf_values = tree.value[~branch].reshape(int((~branch).sum()), -1)
        if classifier:
            # Summed left to right as Python's sum() does, so the division gives skl2onnx's exact floats.
            total = leaf_values[:, 0].copy()
            for column in range(1, leaf_values.shape[1]):
                total = total + leaf_values[:, column]
            weights = leaf_values * (weight / np.where(total != 0.0, total, 1.0))[:, None]
            if weights.shape[1] == 2:
                weights = weights[:, 1:]
        else:
            weights = leaf_values * weight
        ensemble.tree(
            tree_id,
            branch=branch,
            feature=tree.feature,
            threshold=_float32_thresholds(tree.threshold),
            left=tree.children_left,
            right=tree.children_right,
            missing=np.zeros(tree.node_count, dtype=np.int64),
            weights=weights,
        )
    return ensemble.values()


def _boosting_attributes(predictors: list[list[Any]], *, classifier: bool) -> dict[str, np.ndarray]:
    """The TreeEnsemble attributes of histogram gradient boosting's trees, in skl2onnx's order and values.

    Iteration by iteration, one tree per class for several classes (tree id iteration x trees per
    iteration + class, its leaves weighing on that class); thresholds as they are (rounded to float32),
    missing values going where scikit-learn sends them, leaves weighing their value.
    """
    ensemble = _Ensemble(classifier=classifier)
    for iteration, trees in enumerate(predictors):
        for position, tree in enumerate(trees):
            nodes = tree.nodes
            branch = ~nodes["is_leaf"].astype(bool)
            ensemble.tree(
                iteration * len(trees) + position,
                branch=branch,
                feature=nodes["feature_idx"],
                threshold=nodes["num_threshold"],
                left=nodes["left"],
                right=nodes["right"],
                missing=nodes["missing_go_to_left"],
                weights=(nodes["value"][~branch] * 1.0)[:, None],
                first_id=position,
            )
    return ensemble.values()


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
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

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
            converted = _to_onnx(pipeline, initial_types=initial_types, classifier=is_classifier)
        input_names = [i.name for i in converted.graph.input]
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
        onnx.helper.set_model_props(converted, props)
        data = converted.SerializeToString()
        # The graph of a large forest holds hundreds of MB; onnxruntime makes its own copy next.
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
