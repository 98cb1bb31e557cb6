"""skl2onnx's conversion of a pipeline, made fast for tree ensembles by writing their node from arrays."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
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

from ml import protobuf_encoding

_ENSEMBLE_OPS = ("TreeEnsembleClassifier", "TreeEnsembleRegressor")
_FORESTS = (RandomForestClassifier, RandomForestRegressor)
_BOOSTING = (HistGradientBoostingClassifier, HistGradientBoostingRegressor)
_CLASSIFIERS = (RandomForestClassifier, HistGradientBoostingClassifier)
_MODES = np.array([b"LEAF", b"BRANCH_LEQ"])
# Trees are encoded a batch of at least this many nodes at a time: few enough numpy calls for thousands of
# small boosting trees, and temporaries that stay in the CPU cache for a forest's large trees.
_BATCH_NODES = 1 << 16

# A forest's first tree is converted by skl2onnx cut to this depth (see _forest_sample).
_SAMPLE_DEPTH = 6
# scikit-learn's markers of a leaf's children, feature and threshold (sklearn.tree._tree).
_TREE_LEAF = -1
_TREE_UNDEFINED = -2

Trees = Callable[..., Iterator[dict[str, np.ndarray]]]


@dataclass
class OnnxModel:
    """A converted pipeline. When a tree ensemble was written from arrays, `model` holds its node without the
    per-node attributes and `entries` holds them, already encoded: only `serialize` gives the whole file."""

    model: onnx.ModelProto
    ensemble: onnx.NodeProto | None = None
    entries: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def serialize(self) -> bytes:
        """The ONNX file: what `model.SerializeToString()` gives once the ensemble's attributes are filled.

        The encoded attributes are spliced between the serialised rest of the model instead: handing protobuf
        10 million nodes to hold and to write again costs seconds and gigabytes for a large forest.
        """
        if self.ensemble is None:
            return self.model.SerializeToString()
        return b"".join(self._model_chunks())

    def _model_chunks(self) -> list[bytes | np.ndarray]:
        attributes = [self._attribute_chunks(attribute) for attribute in self.ensemble.attribute]
        node = protobuf_encoding.spliced(self.ensemble, "attribute", attributes)
        graph = self.model.graph
        nodes = [node if n is self.ensemble else [n.SerializeToString()] for n in graph.node]
        return protobuf_encoding.spliced(
            self.model, "graph", [protobuf_encoding.spliced(graph, "node", nodes)]
        )

    def _attribute_chunks(self, attribute: onnx.AttributeProto) -> list[bytes | np.ndarray]:
        if attribute.name not in self.entries:
            return [attribute.SerializeToString()]
        number = protobuf_encoding.VALUES_FIELD[attribute.type]
        return [
            protobuf_encoding.serialized(attribute, below=number),
            *self.entries[attribute.name],
            protobuf_encoding.serialized(attribute, above=number),
        ]


def pipeline_to_onnx(
    pipeline: Pipeline, *, initial_types: list[Any], classifier: bool, target_opset: dict[str, int]
) -> OnnxModel:
    """skl2onnx's conversion of the pipeline; for tree ensembles, built from one tree and then filled.

    skl2onnx 1.20 appends every node of every tree to Python lists, lets onnx check each value's type, then
    copies the graph several times: 110 s of CPU for a forest of 100 deep trees fitted on 80,000 rows (10
    million nodes), as long as fitting it. The pipeline is converted instead with a copy of the ensemble
    that holds only its first tree (a forest's cut to a few levels, see _forest_sample) or first
    iteration, which gives the whole graph (inputs, preprocessing, class labels, base values, outputs,
    attribute order); the ensemble node's attributes are then written for every tree from the trees'
    arrays, with the values skl2onnx computes. The file is byte for byte the one skl2onnx writes (tests
    compare them). Before filling, the attributes computed for that one tree must equal what skl2onnx
    wrote for it, else (another converter version, float64 inputs, several outputs) the model takes
    skl2onnx's path.
    """
    from skl2onnx import to_onnx

    def convert(whole: Pipeline) -> onnx.ModelProto:
        model = whole.steps[-1][1]
        options = {id(model): {"zipmap": False}} if classifier else None
        return to_onnx(whole, initial_types=initial_types, options=options, target_opset=target_opset)

    name, model = pipeline.steps[-1]
    trees: Trees
    if type(model) in _FORESTS and getattr(model, "n_outputs_", None) == 1 and model.estimators_:
        held, attribute, trees = "estimators_", _forest_attributes, _forest_trees
    elif type(model) in _BOOSTING and _boosting_numeric(model._predictors):
        held, attribute, trees = "_predictors", _boosting_attributes, _boosting_trees
    else:
        return OnnxModel(convert(pipeline))
    every = getattr(model, held)
    sample = _forest_sample(every[0]) if held == "estimators_" else every[:1]
    first = copy.copy(model)
    setattr(first, held, sample)
    light = copy.copy(pipeline)
    light.steps = [*pipeline.steps[:-1], (name, first)]
    converted = convert(light)
    kind = isinstance(model, _CLASSIFIERS)
    ensembles = [node for node in converted.graph.node if node.op_type in _ENSEMBLE_OPS]
    if len(ensembles) != 1 or not _ensemble_holds(ensembles[0], attribute(sample, classifier=kind)):
        return OnnxModel(convert(pipeline))
    entries = _ensemble_fill(ensembles[0], trees(every, classifier=kind))
    return OnnxModel(converted, ensemble=ensembles[0], entries=entries)


def _forest_sample(estimator: Any) -> list[Any]:
    """The forest's first tree, cut to _SAMPLE_DEPTH levels when possible, for skl2onnx to convert alone.

    skl2onnx writes a tree node by node in Python, a second for a tree of 100,000 nodes; the cut tree's
    127 nodes at most are as good a sample of what it writes. The cut uses the tree's pickled state, so
    another scikit-learn version may refuse it: the whole first tree is converted then.
    """
    try:
        return [_tree_cut(estimator, depth=_SAMPLE_DEPTH)]
    except Exception:  # a private structure: any failure means the plain first tree
        return [estimator]


def _tree_cut(estimator: Any, *, depth: int) -> Any:
    """A copy of a fitted decision tree less its nodes deeper than `depth`; those at `depth` become leaves."""
    tree = estimator.tree_
    state = tree.__getstate__()
    nodes = state["nodes"].copy()
    left, right = nodes["left_child"], nodes["right_child"]
    kept = np.zeros(len(nodes), dtype=bool)
    kept[0] = True
    level = np.array([0])
    for _ in range(depth):
        children = np.concatenate([left[level], right[level]])
        level = children[children >= 0]
        kept[level] = True
    left[level], right[level] = _TREE_LEAF, _TREE_LEAF
    nodes["feature"][level], nodes["threshold"][level] = _TREE_UNDEFINED, _TREE_UNDEFINED
    # Kept nodes keep their order, so children still come after their parent as skl2onnx expects.
    renumbered = np.cumsum(kept) - 1
    for child in (left, right):
        child[:] = np.where(child >= 0, renumbered[np.maximum(child, 0)], child)
    state.update(
        nodes=nodes[kept],
        values=state["values"][kept],
        node_count=int(kept.sum()),
        max_depth=min(int(state["max_depth"]), depth),
    )
    cut = type(tree)(tree.n_features, np.asarray(tree.n_classes), tree.n_outputs)
    cut.__setstate__(state)
    sample = copy.copy(estimator)
    sample.tree_ = cut
    return sample


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


def _ensemble_fill(
    node: onnx.NodeProto, trees: Iterable[dict[str, np.ndarray]]
) -> dict[str, list[np.ndarray]]:
    """Empty the node's tree attributes and give, per attribute, its values for `trees` as protobuf entries.

    The entries are what protobuf writes for the values added one by one to the attribute (onnx.proto is
    proto2: repeated numbers are not packed, each value has its own key), for OnnxModel.serialize to splice.
    """
    types = {attribute.name: attribute.type for attribute in node.attribute}
    entries: dict[str, list[np.ndarray]] = {}
    for batch in _batches(trees):
        for name, array in batch.items():
            entries.setdefault(name, []).append(protobuf_encoding.entries(types[name], array))
    for attribute in node.attribute:
        if attribute.name in entries:
            attribute.ClearField(protobuf_encoding.VALUES_NAME[attribute.type])
    return entries


def _batches(trees: Iterable[dict[str, np.ndarray]]) -> Iterator[dict[str, np.ndarray]]:
    """The trees' attributes, joined into batches of at least _BATCH_NODES nodes (the last one fewer)."""
    batch: list[dict[str, np.ndarray]] = []
    nodes = 0
    for tree in trees:
        batch.append(tree)
        nodes += len(tree["nodes_nodeids"])
        if nodes >= _BATCH_NODES:
            yield _joined(batch)
            batch, nodes = [], 0
    if batch:
        yield _joined(batch)


def _joined(trees: Iterable[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    parts: dict[str, list[np.ndarray]] = {}
    for tree in trees:
        for name, array in tree.items():
            parts.setdefault(name, []).append(array)
    return {name: arrays[0] if len(arrays) == 1 else np.concatenate(arrays) for name, arrays in parts.items()}


def _float32_thresholds(thresholds: np.ndarray) -> np.ndarray:
    """skl2onnx's sklearn_threshold for float32 inputs, on an array.

    scikit-learn compares float32(x) <= threshold (a float64); the float32 threshold that decides alike is
    the threshold rounded to float32 when that does not round up, else the float32 just below it.
    """
    rounded = thresholds.astype(np.float32)
    below = np.nextafter(rounded, np.float32(-np.inf))
    return np.where(rounded.astype(np.float64) <= thresholds, rounded, below)


def _tree_attributes(
    tree_id: int,
    *,
    classifier: bool,
    branch: np.ndarray,
    feature: np.ndarray,
    threshold: np.ndarray,
    left: np.ndarray,
    right: np.ndarray,
    missing: np.ndarray,
    weights: np.ndarray,
    first_id: int = 0,
) -> dict[str, np.ndarray]:
    """One tree's TreeEnsemble attributes: per node, whether it splits and its split; per leaf, its weights
    (one row a leaf)."""
    prefix = "class" if classifier else "target"
    count = len(branch)
    leaves = np.flatnonzero(~branch).astype(np.int64)
    per_leaf = weights.shape[1]
    return {
        "nodes_treeids": np.full(count, tree_id, dtype=np.int64),
        "nodes_nodeids": np.arange(count, dtype=np.int64),
        "nodes_featureids": np.where(branch, feature, 0).astype(np.int64, copy=False),
        "nodes_modes": _MODES[branch.astype(np.intp)],
        "nodes_values": np.where(branch, threshold, np.float32(0.0)).astype(np.float32, copy=False),
        "nodes_truenodeids": np.where(branch, left, 0).astype(np.int64, copy=False),
        "nodes_falsenodeids": np.where(branch, right, 0).astype(np.int64, copy=False),
        "nodes_missing_value_tracks_true": np.where(branch, missing, 0).astype(np.int64, copy=False),
        "nodes_hitrates": np.ones(count, dtype=np.float32),
        f"{prefix}_treeids": np.full(len(leaves) * per_leaf, tree_id, dtype=np.int64),
        f"{prefix}_nodeids": np.repeat(leaves, per_leaf),
        f"{prefix}_ids": np.tile(np.arange(first_id, first_id + per_leaf, dtype=np.int64), len(leaves)),
        f"{prefix}_weights": weights.ravel(),
    }


def _forest_attributes(estimators: list[Any], *, classifier: bool) -> dict[str, np.ndarray]:
    """The TreeEnsemble attributes of a random forest's trees, in skl2onnx's order and values."""
    return _joined(_forest_trees(estimators, classifier=classifier))


def _forest_trees(estimators: list[Any], *, classifier: bool) -> Iterator[dict[str, np.ndarray]]:
    """Tree by tree, the TreeEnsemble attributes of a random forest, in skl2onnx's order and values.

    Every node in order, each tree's weight 1 / the number of trees; a leaf's weights are its values
    times that weight, divided for classifiers by the leaf's total, and only the second class's kept for
    two classes. Thresholds are adjusted to float32 as skl2onnx does; missing values never go to the
    true branch.
    """
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
        yield _tree_attributes(
            tree_id,
            classifier=classifier,
            branch=branch,
            feature=tree.feature,
            threshold=_float32_thresholds(tree.threshold),
            left=tree.children_left,
            right=tree.children_right,
            missing=np.zeros(tree.node_count, dtype=np.int64),
            weights=weights,
        )


def _boosting_attributes(predictors: list[list[Any]], *, classifier: bool) -> dict[str, np.ndarray]:
    """The TreeEnsemble attributes of histogram gradient boosting's trees, in skl2onnx's order and values."""
    return _joined(_boosting_trees(predictors, classifier=classifier))


def _boosting_trees(predictors: list[list[Any]], *, classifier: bool) -> Iterator[dict[str, np.ndarray]]:
    """Tree by tree, histogram gradient boosting's TreeEnsemble attributes, in skl2onnx's order and values.

    Iteration by iteration, one tree per class for several classes (tree id iteration x trees per
    iteration + class, its leaves weighing on that class); thresholds as they are (rounded to float32),
    missing values going where scikit-learn sends them, leaves weighing their value.
    """
    for iteration, trees in enumerate(predictors):
        for position, tree in enumerate(trees):
            nodes = tree.nodes
            branch = ~nodes["is_leaf"].astype(bool)
            yield _tree_attributes(
                iteration * len(trees) + position,
                classifier=classifier,
                branch=branch,
                feature=nodes["feature_idx"],
                threshold=nodes["num_threshold"],
                left=nodes["left"],
                right=nodes["right"],
                missing=nodes["missing_go_to_left"],
                weights=(nodes["value"][~branch] * 1.0)[:, None],
                first_id=position,
            )
