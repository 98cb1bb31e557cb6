"""The predict body's fast read gives exactly what PredictInputSerializer gives, and leaves every body it does
not take as it is to the serializer (and its messages)."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from rest_framework.exceptions import ValidationError

from predictions.api import PredictInputSerializer, _body_plain, predict_body_read

JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from(["", " x", "x ", "\x00", "\ud800", "production", "staging", "ünï"]),
)
JSON = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)
FIELDS = ["rows", "inputs", "version", "stage", "keys", "key", "request_id", "unknown", "row"]
BODIES = st.one_of(
    st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=5),
    st.fixed_dictionaries(
        {"rows": st.lists(st.dictionaries(st.text(max_size=4), JSON_SCALARS, max_size=3), max_size=3)},
        optional={
            "keys": st.lists(JSON_SCALARS, max_size=3),
            "version": st.integers(min_value=-(2**40), max_value=2**40) | JSON_SCALARS,
            "stage": st.sampled_from(["production", "staging", " staging", "", "archived"]) | JSON_SCALARS,
            "request_id": st.text(max_size=10) | JSON_SCALARS,
        },
    ),
    st.fixed_dictionaries(
        {"inputs": st.dictionaries(st.text(max_size=4), JSON_SCALARS, max_size=3)},
        optional={"key": JSON_SCALARS, "version": JSON_SCALARS, "keys": JSON},
    ),
    JSON,
)


def _serializer(body):
    serializer = PredictInputSerializer(data=body)
    return dict(serializer.validated_data) if serializer.is_valid() else None


def _same(a, b) -> bool:
    # NaN is not equal to itself: compare it as a marker.
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(BODIES)
@example({"rows": [{"a": 1}], "keys": ["k"], "version": 2, "stage": "production", "request_id": "r-1"})
@example({"inputs": {"a": 1}, "key": "k"})
@example({"inputs": {"a": 1}, "key": None})
@example({"rows": [], "version": True})
@example({"rows": [], "version": 2**64})
@example({"rows": [], "stage": " production"})
@example({"rows": [], "request_id": "a\x00b"})
def test_the_fast_read_takes_only_bodies_the_serializer_passes_and_reads_them_the_same(body) -> None:
    plain = _body_plain(body)
    if plain is not None:
        assert _same(plain, _serializer(body))


def test_well_formed_bodies_take_the_fast_read() -> None:
    assert _body_plain({"rows": [{"a": 1.5}], "keys": ["k1"], "stage": "staging", "request_id": "r.1"})
    assert _body_plain({"inputs": {"a": None}, "key": 7, "version": 3})


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"inputs": {"a": 1}, "key": None}, "key"),
        ({"rows": [], "version": "two"}, "version"),
        ({"rows": [], "stage": ""}, "stage"),
        ({"rows": [], "request_id": "a\x00b"}, "request_id"),
        ({"rows": {}}, "rows"),
        ({"rows": [], "features": {}}, "features"),
    ],
)
def test_other_bodies_get_the_serializers_refusal_naming_the_field(body, field) -> None:
    with pytest.raises(ValidationError) as refused:
        predict_body_read(body)
    assert field in refused.value.detail
