"""Small builders for test data, shared by every app's tests."""

from __future__ import annotations

import io

import pandas as pd
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractUser
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

PASSWORD = "correct-horse-battery-staple"


def make_user(username: str, *, staff: bool = False, superuser: bool = False) -> AbstractUser:
    return get_user_model().objects.create_user(
        username=username,
        email=f"{username}@example.com",
        password=PASSWORD,
        is_staff=staff or superuser,
        is_superuser=superuser,
    )


def make_csv_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    return buffer.getvalue().encode("utf-8")


def make_classification_frame(rows: int = 60, seed: int = 0) -> pd.DataFrame:
    """A small mixed-type frame with a binary target, for dataset and training tests."""
    import numpy as np

    rng = np.random.default_rng(seed)
    age = rng.integers(18, 80, rows)
    income = rng.normal(50_000, 12_000, rows).round(2)
    city = rng.choice(["Berlin", "Paris", "Rome"], rows)
    label = np.where(income + rng.normal(0, 5_000, rows) > 50_000, "yes", "no")
    return pd.DataFrame({"age": age, "income": income, "city": city, "label": label})


def make_api_client(user: AbstractUser | None) -> APIClient:
    """An API client sending the user's token; no credentials for None (anonymous)."""
    client = APIClient()
    if user is not None:
        token, _ = Token.objects.get_or_create(user=user)
        client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client
