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


def generated_schema(tmp_path) -> dict:
    out = tmp_path / "schema.yml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    return yaml.safe_load(out.read_text())


def test_every_operation_documents_its_error_answers_with_the_envelope(tmp_path):
    schema = generated_schema(tmp_path)
    components = schema["components"]["schemas"]
    envelope = {"$ref": "#/components/schemas/ErrorEnvelope"}

    assert set(components["ErrorEnvelope"]["required"]) == {"detail", "code", "errors"}
    assert set(components["ErrorProblem"]["properties"]) == {"row", "field", "code", "message"}
    operations = [
        (path, method, operation)
        for path, methods in schema["paths"].items()
        for method, operation in methods.items()
    ]
    assert len(operations) > 20
    for path, method, operation in operations:
        where = f"{method.upper()} {path}"
        answers = {status: r for status, r in operation["responses"].items() if status[0] in "45"}
        for status, answer in answers.items():
            assert answer["content"] == {"application/json": {"schema": envelope}}, (where, status)
            assert answer["description"], (where, status)
        assert "429" in answers, where
        if method in ("post", "put", "patch"):
            assert "400" in answers, where
        if "{" in path:
            assert "404" in answers, where
        # A wrong token is a 401 wherever tokens are read, on open operations too.
        reads_tokens = any("tokenAuth" in scheme for scheme in operation.get("security", []))
        if reads_tokens:
            assert "401" in answers, where
        for status in ("429", "503"):
            if status in answers:
                assert "Retry-After" in answers[status]["headers"], (where, status)


def test_403_is_documented_where_a_signed_in_user_can_be_refused(tmp_path):
    paths = generated_schema(tmp_path)["paths"]

    assert "403" in paths["/api/datasets/"]["get"]["responses"]
    assert "403" in paths["/api/training-runs/"]["get"]["responses"]
    assert "403" in paths["/api/models/"]["post"]["responses"]
    assert "403" not in paths["/api/models/"]["get"]["responses"]
    assert "403" not in paths["/api/predictions/"]["get"]["responses"]
    assert "403" not in paths["/api/auth/token/"]["post"]["responses"]


def test_operations_name_the_conflicts_and_outages_they_can_answer(tmp_path):
    paths = generated_schema(tmp_path)["paths"]

    predict = paths["/api/models/{name}/predict/"]["post"]["responses"]
    assert {"400", "404", "409", "413", "503"} <= set(predict)
    assert "409" in paths["/api/models/{model_name}/versions/{version}/transition/"]["post"]["responses"]
    assert "503" in paths["/api/datasets/"]["post"]["responses"]
    assert {"409", "503"} <= set(paths["/api/batch-jobs/{job_uuid}/result/"]["get"]["responses"])
