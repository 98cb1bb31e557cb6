"""Checks of the API's error envelope, shared by every app's API tests."""

from __future__ import annotations

from typing import Any

ENVELOPE_KEYS = {"detail", "code", "errors"}
PROBLEM_KEYS = {"row", "field", "code", "message"}


def error_body(response: Any, status: int, code: str) -> dict[str, Any]:
    """The body of an error answer, after checking its status, its code and the envelope's exact shape."""
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json", response["Content-Type"]
    body = response.json()
    assert set(body) == ENVELOPE_KEYS, body
    assert body["code"] == code, body
    assert isinstance(body["detail"], str)
    assert body["detail"]
    for item in body["errors"]:
        assert set(item) == PROBLEM_KEYS, item
    return body


def messages_of(body: dict[str, Any], field: str | None = None) -> list[str]:
    """The messages of the problems about `field` (None: about the whole input)."""
    return [item["message"] for item in body["errors"] if item["field"] == field]
