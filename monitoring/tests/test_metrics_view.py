"""Tests of who may read /metrics: the bearer token, the allowed networks and the loopback default."""

from __future__ import annotations

import pytest

TOKEN = "s3cret-metrics-token-0123456789"


@pytest.fixture
def metrics_settings(settings, db):
    settings.METRICS_TOKEN = ""
    settings.METRICS_ALLOWED_NETWORKS = []
    settings.TRUSTED_PROXIES = []
    return settings


def scrape(client, *, remote: str = "203.0.113.7", **headers: str):
    return client.get("/metrics", REMOTE_ADDR=remote, **headers)


def test_by_default_loopback_may_scrape(client, metrics_settings):
    response = scrape(client, remote="127.0.0.1")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    assert b"django_http_requests" in response.content
    assert b"# HELP mlops_predictions_total" in response.content


def test_by_default_ipv6_loopback_may_scrape(client, metrics_settings):
    assert scrape(client, remote="::1").status_code == 200


def test_by_default_any_other_address_is_refused_with_403(client, metrics_settings):
    response = scrape(client)

    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"
    assert "METRICS_ALLOWED_NETWORKS" in response.json()["detail"]


def test_the_right_bearer_token_is_allowed_from_anywhere(client, metrics_settings):
    metrics_settings.METRICS_TOKEN = TOKEN

    assert scrape(client, HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200


def test_a_wrong_token_is_401(client, metrics_settings):
    metrics_settings.METRICS_TOKEN = TOKEN

    response = scrape(client, remote="127.0.0.1", HTTP_AUTHORIZATION=f"Bearer {TOKEN}x")

    assert response.status_code == 401
    assert response.json()["detail"] == "The metrics token is wrong."
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_a_header_that_is_not_bearer_is_401(client, metrics_settings):
    metrics_settings.METRICS_TOKEN = TOKEN

    for header in (f"Token {TOKEN}", "Basic dXNlcjpwYXNz", "Bearer", "Bearer    ", TOKEN):
        response = scrape(client, HTTP_AUTHORIZATION=header)
        assert response.status_code == 401, header
        assert "Authorization: Bearer" in response.json()["detail"]


def test_a_token_with_characters_outside_ascii_is_a_401_not_a_500(client, metrics_settings):
    metrics_settings.METRICS_TOKEN = TOKEN

    assert scrape(client, HTTP_AUTHORIZATION="Bearer caf\u00e9-\u2603").status_code == 401


def test_with_a_token_set_a_scrape_without_one_is_401_even_from_loopback(client, metrics_settings):
    metrics_settings.METRICS_TOKEN = TOKEN

    response = scrape(client, remote="127.0.0.1")

    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


def test_a_bearer_token_is_401_when_no_token_is_configured(client, metrics_settings):
    assert scrape(client, remote="127.0.0.1", HTTP_AUTHORIZATION="Bearer anything").status_code == 401


def test_an_address_in_the_allowed_networks_may_scrape_without_a_token(client, metrics_settings):
    metrics_settings.METRICS_TOKEN = TOKEN
    metrics_settings.METRICS_ALLOWED_NETWORKS = ["10.0.0.0/8", "2001:db8::/32"]

    assert scrape(client, remote="10.1.2.3").status_code == 200
    assert scrape(client, remote="2001:db8::5").status_code == 200
    assert scrape(client, remote="11.1.2.3").status_code == 401


def test_allowed_networks_replace_the_loopback_default(client, metrics_settings):
    metrics_settings.METRICS_ALLOWED_NETWORKS = ["10.0.0.0/8"]

    assert scrape(client, remote="127.0.0.1").status_code == 403


def test_a_forged_forwarded_for_header_does_not_pass(client, metrics_settings):
    metrics_settings.METRICS_ALLOWED_NETWORKS = ["10.0.0.0/8"]

    response = scrape(client, remote="203.0.113.7", HTTP_X_FORWARDED_FOR="10.0.0.1")

    assert response.status_code == 403


def test_a_forged_entry_left_of_a_trusted_proxy_does_not_pass(client, metrics_settings):
    metrics_settings.METRICS_ALLOWED_NETWORKS = ["10.0.0.0/8"]
    metrics_settings.TRUSTED_PROXIES = ["172.18.0.2"]

    # The client wrote 10.0.0.1; the proxy appended the address it saw.
    forged = scrape(client, remote="172.18.0.2", HTTP_X_FORWARDED_FOR="10.0.0.1, 203.0.113.7")
    real = scrape(client, remote="172.18.0.2", HTTP_X_FORWARDED_FOR="10.4.4.4")

    assert forged.status_code == 403
    assert real.status_code == 200


def test_a_post_is_refused(client, metrics_settings):
    assert client.post("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 405
