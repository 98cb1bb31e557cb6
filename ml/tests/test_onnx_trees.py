"""Tests for tree ensembles written from their arrays: protobuf's bytes, skl2onnx's file, sklearn's output."""

from __future__ import annotations

import numpy as np
import onnx
import pandas as pd
import pytest
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.pipeline import Pipeline

from ml import artifacts, onnx_export, onnx_trees, protobuf_encoding
from ml.pipeline import NUMERIC, columns_from_frame, feature_schema_build, frame_prepare, pipeline_build
from ml.predictor import OnnxPredictor

COLUMNS = [
    {"name": "a", "kind": "numeric"},
    {"name": "b", "kind": "numeric"},
    {"name": "c", "kind": "categorical"},
]
MODELS = {
    "forest regressor": (RandomForestRegressor, {"n_estimators": 4}, None),
    "forest binary": (RandomForestClassifier, {"n_estimators": 4}, ["no", "yes"]),
    "forest multiclass": (RandomForestClassifier, {"n_estimators": 4}, ["p", "q", "r"]),
    "boosting regressor": (HistGradientBoostingRegressor, {"max_iter": 6}, None),
    "boosting binary": (HistGradientBoostingClassifier, {"max_iter": 6}, ["no", "yes"]),
    "boosting multiclass": (HistGradientBoostingClassifier, {"max_iter": 6}, ["p", "q", "r"]),
}


def _frame(rows: int = 300) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(
        {"a": rng.normal(size=rows), "b": rng.normal(size=rows) * 1e3, "c": rng.choice(["x", "y", "z"], rows)}
    )
    frame.loc[rng.random(rows) < 0.1, "a"] = np.nan
    return frame_prepare(frame, COLUMNS)


def _target(frame: pd.DataFrame, classes: list[str] | None) -> np.ndarray:
    signal = frame["a"].fillna(0).to_numpy() + frame["b"].to_numpy() / 1e3
    if classes is None:
        return frame["b"].to_numpy() / 7 + (frame["c"] == "y").to_numpy() * 3.0
    if len(classes) == 2:
        return np.array(classes, dtype=object)[(signal > 0).astype(int)]
    return np.array(classes, dtype=object)[(signal > 0).astype(int) + (frame["c"] == "x").to_numpy()]


def _convert(pipeline: Pipeline, schema: list[dict], classes: list[str] | None) -> onnx_trees.OnnxModel:
    onnx_export._skl2onnx_hist_gradient_boosting_fix()
    return onnx_trees.pipeline_to_onnx(
        pipeline,
        initial_types=[
            (c["name"], FloatTensorType([None, 1]) if c["kind"] == NUMERIC else StringTensorType([None, 1]))
            for c in schema
        ],
        classifier=classes is not None,
        target_opset=onnx_export.TARGET_OPSET,
    )


def _ensemble_lists(data: bytes) -> dict[str, list]:
    (node,) = [n for n in onnx.load_from_string(data).graph.node if n.op_type.startswith("TreeEnsemble")]
    per_node = (onnx.AttributeProto.INTS, onnx.AttributeProto.FLOATS, onnx.AttributeProto.STRINGS)
    return {
        a.name: list(onnx.helper.get_attribute_value(a))
        for a in node.attribute
        if a.type in per_node and a.name.startswith(("nodes_", "target_", "class_"))
    }


def test_integers_are_encoded_as_protobuf_writes_them():
    values = [0, 1, 127, 128, 300, 16_383, 16_384, 2**21, 2**35, 2**63 - 1, -1, -300]

    for dtype in (np.int64, np.int32):
        fitting = [v for v in values if np.iinfo(dtype).min <= v <= np.iinfo(dtype).max]
        written = onnx.AttributeProto(ints=fitting).SerializeToString()
        assert protobuf_encoding.varint_entries(0x40, np.array(fitting, dtype=dtype)).tobytes() == written
    small = [0, 5, 127, 3]
    assert protobuf_encoding.varint_entries(0x40, np.array(small, dtype=np.uint8)).tobytes() == (
        onnx.AttributeProto(ints=small).SerializeToString()
    )
    assert protobuf_encoding.varint_entries(0x40, np.array([], dtype=np.int64)).tobytes() == b""


def test_floats_and_strings_are_encoded_as_protobuf_writes_them():
    floats = [0.0, -0.0, 1.5, 1e-40, -3.25e38, float("inf"), 0.1]
    strings = [b"LEAF", b"BRANCH_LEQ", b"", b"x", b"BRANCH_LEQ"]

    encoded_floats = protobuf_encoding.float_entries(0x3D, np.array(floats, dtype=np.float64)).tobytes()
    encoded_strings = protobuf_encoding.bytes_entries(0x4A, np.array(strings)).tobytes()

    assert encoded_floats == onnx.AttributeProto(floats=floats).SerializeToString()
    assert encoded_strings == onnx.AttributeProto(strings=strings).SerializeToString()
    with pytest.raises(ValueError, match="cannot encode"):
        protobuf_encoding.bytes_entries(0x4A, np.array(["text"]))


def test_a_hand_checkable_forest_is_written_node_by_node():
    X = np.array([[0.0], [1.0], [2.0], [3.0]])
    forest = RandomForestRegressor(n_estimators=2, max_depth=1, bootstrap=False, random_state=0)
    pipeline = Pipeline([("model", forest.fit(X, [0.0, 0.0, 10.0, 10.0]))])

    converted = onnx_trees.pipeline_to_onnx(
        pipeline,
        initial_types=[("x", FloatTensorType([None, 1]))],
        classifier=False,
        target_opset=onnx_export.TARGET_OPSET,
    )
    data = converted.serialize()

    assert converted.ensemble is not None, "the forest was not written from its arrays"
    assert _ensemble_lists(data) == {
        "nodes_treeids": [0, 0, 0, 1, 1, 1],
        "nodes_nodeids": [0, 1, 2, 0, 1, 2],
        "nodes_featureids": [0, 0, 0, 0, 0, 0],
        "nodes_modes": [b"BRANCH_LEQ", b"LEAF", b"LEAF"] * 2,
        "nodes_values": [1.5, 0.0, 0.0] * 2,
        "nodes_truenodeids": [1, 0, 0] * 2,
        "nodes_falsenodeids": [2, 0, 0] * 2,
        "nodes_missing_value_tracks_true": [0] * 6,
        "nodes_hitrates": [1.0] * 6,
        "target_treeids": [0, 0, 1, 1],
        "target_nodeids": [1, 2, 1, 2],
        "target_ids": [0, 0, 0, 0],
        "target_weights": [0.0, 5.0, 0.0, 5.0],
    }
    session = artifacts.onnx_load(data, sha256=artifacts.sha256_hex(data))
    scored = session.run(None, {"x": np.array([[0.0], [1.5], [1.6], [3.0]], dtype=np.float32)})[0]
    assert scored.ravel().tolist() == [0.0, 0.0, 10.0, 10.0]


@pytest.mark.parametrize("batch_nodes", [onnx_trees._BATCH_NODES, 40], ids=["one batch", "small batches"])
@pytest.mark.parametrize("name", list(MODELS))
def test_an_ensemble_written_from_its_arrays_is_skl2onnx_s_file_and_predicts_as_scikit_learn(
    name, batch_nodes, monkeypatch
):
    monkeypatch.setattr(onnx_trees, "_BATCH_NODES", batch_nodes)
    estimator, params, classes = MODELS[name]
    X = _frame()
    pipeline = pipeline_build(
        feature_columns=COLUMNS, estimator=estimator(random_state=0, **params), scale_numeric=False
    ).fit(X, _target(X, classes))
    schema = feature_schema_build(X, COLUMNS)

    fast = _convert(pipeline, schema, classes)
    data = fast.serialize()
    monkeypatch.setattr(onnx_trees, "_FORESTS", ())
    monkeypatch.setattr(onnx_trees, "_BOOSTING", ())
    plain = _convert(pipeline, schema, classes)

    assert fast.ensemble is not None
    assert plain.ensemble is None
    assert data == plain.serialize()
    predictor = OnnxPredictor(data, sha256=artifacts.sha256_hex(data), feature_schema=schema, classes=classes)
    labels, probabilities = predictor.predict_columns(columns_from_frame(X, schema))
    if classes is None:
        assert np.allclose(labels, pipeline.predict(X), rtol=1e-5, atol=1e-4)
    else:
        assert labels == pipeline.predict(X).tolist()
        assert np.allclose(probabilities, pipeline.predict_proba(X), atol=1e-5)


def test_gradient_boosting_sends_missing_values_where_scikit_learn_does():
    rng = np.random.default_rng(8)
    X = rng.normal(size=(400, 2))
    y = X[:, 0] * 3 + np.where(np.isnan(X[:, 1]), 5.0, X[:, 1])
    X[rng.random(400) < 0.2, 1] = np.nan
    y = np.where(np.isnan(X[:, 1]), 5.0, y)
    pipeline = Pipeline([("model", HistGradientBoostingRegressor(max_iter=8, random_state=0).fit(X, y))])
    onnx_export._skl2onnx_hist_gradient_boosting_fix()

    converted = onnx_trees.pipeline_to_onnx(
        pipeline,
        initial_types=[("x", FloatTensorType([None, 2]))],
        classifier=False,
        target_opset=onnx_export.TARGET_OPSET,
    )
    data = converted.serialize()

    assert converted.ensemble is not None
    tracks = _ensemble_lists(data)["nodes_missing_value_tracks_true"]
    assert set(tracks) == {0, 1}, "the sample should send missing values both ways"
    session = artifacts.onnx_load(data, sha256=artifacts.sha256_hex(data))
    scored = session.run(None, {"x": X.astype(np.float32)})[0].ravel()
    assert np.allclose(scored, pipeline.predict(X), rtol=1e-5, atol=1e-4)


def test_a_forest_whose_first_tree_cannot_be_cut_is_written_from_its_whole_first_tree(monkeypatch):
    estimator, params, classes = MODELS["forest multiclass"]
    X = _frame()
    pipeline = pipeline_build(
        feature_columns=COLUMNS, estimator=estimator(random_state=0, **params), scale_numeric=False
    ).fit(X, _target(X, classes))
    schema = feature_schema_build(X, COLUMNS)
    expected = _convert(pipeline, schema, classes).serialize()

    def refuse(estimator, *, depth):
        raise ValueError("another scikit-learn")

    monkeypatch.setattr(onnx_trees, "_tree_cut", refuse)
    converted = _convert(pipeline, schema, classes)

    assert converted.ensemble is not None
    assert converted.serialize() == expected


def test_a_cut_tree_keeps_the_top_levels_of_the_tree():
    X = _frame()
    forest = RandomForestRegressor(n_estimators=1, random_state=0).fit(
        X[["a", "b"]].fillna(0), _target(X, None)
    )
    tree = forest.estimators_[0].tree_
    left, right = tree.children_left, tree.children_right

    cut = onnx_trees._tree_cut(forest.estimators_[0], depth=2).tree_
    whole = onnx_trees._tree_cut(forest.estimators_[0], depth=tree.max_depth).tree_

    # Nodes in depth-first order: the root, its left child and that child's children, then the right side.
    kept = [0, left[0], left[left[0]], right[left[0]], right[0], left[right[0]], right[right[0]]]
    assert (cut.node_count, cut.max_depth) == (7, 2)
    assert cut.children_left.tolist() == [1, 2, -1, -1, 5, -1, -1]
    assert cut.children_right.tolist() == [4, 3, -1, -1, 6, -1, -1]
    assert cut.feature[[0, 1, 4]].tolist() == tree.feature[[0, left[0], right[0]]].tolist()
    assert cut.threshold[[0, 1, 4]].tolist() == tree.threshold[[0, left[0], right[0]]].tolist()
    assert np.array_equal(cut.value, tree.value[kept])
    assert whole.node_count == tree.node_count
    assert np.array_equal(whole.children_left, left)
    assert np.array_equal(whole.value, tree.value)
