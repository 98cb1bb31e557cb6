"""The landing page."""

from __future__ import annotations

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db


def test_it_shows_an_ordinary_user_the_token_and_docs_cards_only(client, alice):
    client.force_login(alice)

    response = client.get(reverse("home"))

    assert response.status_code == 200
    html = response.content.decode()
    assert "Welcome, alice" in html
    assert reverse("accounts:token") in html
    assert reverse("swagger-ui") in html
    assert reverse("admin:index") not in html


def test_it_shows_staff_the_datasets_and_admin_cards(client, staff):
    datasets_url = reverse("datasets:list")
    client.force_login(staff)

    response = client.get(reverse("home"))

    assert response.status_code == 200
    html = response.content.decode()
    assert datasets_url in html
    assert reverse("admin:index") in html
