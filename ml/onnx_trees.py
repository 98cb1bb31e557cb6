"""skl2onnx's conversion of a pipeline, made fast for tree ensembles by filling their node from arrays."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import onnx
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.pipeline import Pipeline

_ENSEMBLE_OPS = ("TreeEnsembleClassifier", "TreeEnsembleRegressor")
_FORESTS = (RandomForestClassifier, RandomForestRegressor)
_BOOSTING = (HistGradientBoostingClassifier, HistGradientBoostingRegressor)
_CLASSIFIERS = (RandomForestClassifier, HistGradientBoostingClassifier)


def pipeline_to_onnx(
    pipeline: Pipeline, *, initial_types: list[Any], classifier: bool, target_opset: dict[str, int]
) -> onnx.ModelProto:
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
        return to_onnx(whole, initial_types=initial_types, options=options, target_opset=target_opset)

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
