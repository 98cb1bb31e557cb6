"""The client's address: X-Forwarded-For is believed only as far as it was written by trusted proxies."""

from __future__ import annotations

import pytest
from django.test import RequestFactory

from mlops_site.client_ip import client_address


def _request(remote: str = "203.0.113.7", forwarded: str | None = None):
    extra = {"REMOTE_ADDR": remote}
    if forwarded is not None:
        extra["HTTP_X_FORWARDED_FOR"] = forwarded
    return RequestFactory().get("/", **extra)


def test_without_trusted_proxies_a_forwarded_header_is_ignored(settings):
    settings.TRUSTED_PROXIES = []

    assert client_address(_request("203.0.113.7", "198.51.100.1")) == "203.0.113.7"


def test_a_forwarded_header_from_an_untrusted_peer_is_ignored(settings):
    settings.TRUSTED_PROXIES = ["10.0.0.5"]

    assert client_address(_request("203.0.113.7", "198.51.100.1, 10.0.0.5")) == "203.0.113.7"


def test_through_a_trusted_proxy_the_rightmost_untrusted_address_is_the_client(settings):
    settings.TRUSTED_PROXIES = ["10.0.0.0/24"]

    # The client forged the first two entries; the proxy appended the address it really saw.
    request = _request("10.0.0.5", "1.1.1.1, 2.2.2.2, 198.51.100.9")

    assert client_address(request) == "198.51.100.9"


def test_a_chain_of_trusted_proxies_is_walked_through(settings):
    settings.TRUSTED_PROXIES = ["10.0.0.5", "172.18.0.0/16"]

    request = _request("10.0.0.5", "6.6.6.6, 198.51.100.9, 172.18.0.3")

    assert client_address(request) == "198.51.100.9"


@pytest.mark.parametrize(
    ("forwarded", "expected"),
    [
        ("", "10.0.0.5"),
        ("not-an-address", "10.0.0.5"),
        ("198.51.100.9, <script>", "10.0.0.5"),
        ("\x00\xff, 198.51.100.9", "198.51.100.9"),
        ("198.51.100.9:4711", "198.51.100.9"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("2001:db8::1", "2001:db8::1"),
        (",,,", "10.0.0.5"),
        ("1" * 5000, "10.0.0.5"),
    ],
)
def test_malformed_or_unusual_forwarded_values_never_raise(settings, forwarded, expected):
    settings.TRUSTED_PROXIES = ["10.0.0.5"]

    assert client_address(_request("10.0.0.5", forwarded)) == expected


def test_an_ipv4_client_on_an_ipv6_socket_counts_as_the_ipv4_address(settings):
    settings.TRUSTED_PROXIES = []

    assert client_address(_request("::ffff:203.0.113.7")) == "203.0.113.7"


def test_a_missing_or_garbled_remote_address_gives_an_empty_address(settings):
    settings.TRUSTED_PROXIES = ["10.0.0.5"]

    assert client_address(_request("", "198.51.100.9")) == ""
    assert client_address(_request("garbage", "198.51.100.9")) == ""
