"""Helpers for admin tests: run a changelist action as a logged-in client and read the messages it left."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.urls import reverse


def run_action(client: Any, model: str, action: str, ids: Iterable[int], **extra: Any) -> Any:
    """`model` is the admin URL prefix, app label and model name: "training_trainingrun"."""
    url = reverse(f"admin:{model}_changelist")
    return client.post(
        url, {"action": action, ACTION_CHECKBOX_NAME: [str(i) for i in ids], **extra}, follow=True
    )


def messages_of(response: Any) -> list[str]:
    return [str(message) for message in response.context["messages"]]
