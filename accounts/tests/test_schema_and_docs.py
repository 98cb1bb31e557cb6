"""The OpenAPI schema at /api/schema/ and the Swagger UI at /api/docs/, served without any CDN."""

from __future__ import annotations

import re

import pytest
import yaml
from django.contrib.staticfiles import finders
from django.core.management import call_command

pytestmark = pytest.mark.django_db


def test_the_schema_generates_and_validates_without_warnings(tmp_path):
    out = tmp_path / "schema.yml"

    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))

    schema = yaml.safe_load(out.read_text())
    assert schema["openapi"].startswith("3.")
    assert {"/api/auth/token/", "/api/me/"} <= set(schema["paths"])
    assert set(schema["paths"]["/api/auth/token/"]) == {"post", "delete"}
    assert "tokenAuth" in schema["components"]["securitySchemes"]


def test_the_token_endpoint_documents_its_input_and_needs_no_auth(client, alice):
    client.force_login(alice)

    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()

    post = schema["paths"]["/api/auth/token/"]["post"]
    assert "security" not in post
    assert schema["paths"]["/api/me/"]["get"]["security"]
    body = post["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    assert set(schema["components"]["schemas"][body]["required"]) == {"username", "password"}
    assert {"200", "400", "429"} <= set(post["responses"])


def test_the_docs_page_uses_only_local_static_assets(client, alice):
    client.force_login(alice)

    response = client.get("/api/docs/")

    assert response.status_code == 200
    html = response.content.decode()
    for cdn in ("cdn.jsdelivr", "unpkg", "cdnjs", "//fonts.", "http://", "https://"):
        assert cdn not in html, cdn
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', html)
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets)
    assert any(a.endswith("swagger-ui.css") for a in assets)
    for asset in assets:
        assert finders.find(asset.removeprefix("/static/")), f"{asset} is not a collected static file"


def test_the_docs_page_points_at_the_local_schema(client, alice):
    client.force_login(alice)

    script = client.get("/api/docs/?script=").content.decode()

    assert '"/api/schema/"' in script or "'/api/schema/'" in script
