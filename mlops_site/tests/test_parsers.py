"""Deeply nested JSON: a 400 `parse_error` from every JSON parser and loader, never a RecursionError."""

from __future__ import annotations

import json

import pytest
from rest_framework.test import APIClient

from mlops_site import parsers
from mlops_site.tests.helpers import error_body
from predictions.models import Prediction

DEEP = "[" * 1000 + "]" * 1000


@pytest.fixture
def signed_in(staff):
    client = APIClient()
    client.force_authenticate(staff)
    return client


def test_an_anonymous_deeply_nested_body_to_the_token_endpoint_gets_a_400_parse_error(db):
    response = APIClient().post("/api/auth/token/", DEEP, content_type="application/json")

    body = error_body(response, 400, "parse_error")
    assert f"nested deeper than {parsers.JSON_MAX_DEPTH} levels" in body["detail"]


def test_a_deeply_nested_body_to_a_default_parser_endpoint_gets_a_400_parse_error(signed_in):
    nested = '{"dataset_version": ' + '{"a": ' * 500 + "1" + "}" * 500 + "}"

    response = signed_in.post("/api/training-runs/", nested, content_type="application/json")

    error_body(response, 400, "parse_error")


def test_a_deeply_nested_body_to_the_predict_endpoint_gets_a_400_and_stores_nothing(signed_in):
    response = signed_in.post(
        "/api/models/cancer/predict/", '{"rows": ' + DEEP + "}", content_type="application/json"
    )

    body = error_body(response, 400, "parse_error")
    assert "nested deeper" in body["detail"]
    assert not Prediction.objects.exists()


def test_nesting_up_to_the_limit_is_parsed():
    limit = parsers.JSON_MAX_DEPTH
    text = "[" * limit + "]" * limit

    assert parsers.json_loads(text) is not None
    assert parsers.json_too_deep_at(text.encode()) is None
    assert parsers.json_too_deep_at(("[" * (limit + 1) + "]" * (limit + 1)).encode()) == limit


def test_brackets_inside_strings_do_not_count_as_nesting():
    text = json.dumps({"note": "[" * 5000 + '\\"{{{', "rows": [[1, 2], {"a": "]]]"}]})

    assert parsers.json_too_deep_at(text.encode()) is None
    assert parsers.json_loads(text)["rows"][1] == {"a": "]]]"}


def test_the_loader_for_json_text_refuses_deep_nesting_as_a_decode_error_with_its_position():
    with pytest.raises(json.JSONDecodeError) as caught:
        parsers.json_loads('{"x": ' + DEEP + "}")

    assert caught.value.msg.startswith(f"JSON nested deeper than {parsers.JSON_MAX_DEPTH} levels")
    assert caught.value.pos == 6 + parsers.JSON_MAX_DEPTH - 1
