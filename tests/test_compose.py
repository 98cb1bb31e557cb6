"""docker-compose.yml: profiles, networks, start order, pinned images, the two environments' env files, and
the file as compose reads it (interpolated with each env file) valid against the Compose Specification."""

from __future__ import annotations

import copy
import hashlib
import ipaddress
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlops_site import env
from tests.production_env import REQUIRED_IN_PRODUCTION

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
SCHEMA = ROOT / "deploy" / "schemas" / "compose-spec.json"
CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"
APP_SERVICES = ("web", "worker", "beat")
ONE_SHOT = ("minio-init", "migrate")
#: `docker compose --profile monitoring up -d` adds these; the app runs without them.
MONITORING = ("prometheus", "alertmanager", "grafana", "loki", "tempo", "alloy")
PROFILES = {
    "core": ("postgres", "redis", "minio", "minio-init", "mlflow"),
    "app": ("migrate", *APP_SERVICES),
    "monitoring": MONITORING,
    "proxy": ("nginx", "certbot"),
    "triton": ("triton",),
}
#: Started by an operator who wants them; the environments' env files do not.
OPTIONAL_PROFILES = {"triton"}
#: They hold the data: no route to anything but the internal network.
DATA_SERVICES = ("postgres", "redis", "minio", "minio-init", "mlflow")
#: The single stack and the two side by side on one host.
ENV_FILES = (".env.example", ".env.staging.example", ".env.production.example")
ENVIRONMENTS = (".env.staging.example", ".env.production.example")
#: Set by compose itself for interpolation (the -p name, or the folder's).
COMPOSE_PROVIDED = {"COMPOSE_PROJECT_NAME"}
#: Read by `manage.py ensure_admin`, which only the migrate service runs.
ADMIN_COMMAND_VARIABLES = {"DJANGO_ADMIN_USERNAME", "DJANGO_ADMIN_PASSWORD", "DJANGO_ADMIN_EMAIL"}
#: The app's upload limits (settings.py's names), each of which nginx's body limit must let through.
UPLOAD_LIMITS = (
    "DATASET_MAX_UPLOAD_MB",
    "BATCH_MAX_UPLOAD_MB",
    "FEEDBACK_IMPORT_MAX_UPLOAD_MB",
    "MODEL_MAX_UPLOAD_MB",
)


# ------------------------------------------------------------------------------------------------------
# Compose's interpolation and .env syntax (compose-go's template and dotenv packages), so the tests see
# the values compose would: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error},
# ${VAR:+other}, ${VAR+other}, nested defaults and $$ for a literal $.
# ------------------------------------------------------------------------------------------------------
class MissingVariable(Exception):
    pass


def _closing_brace(text: str, start: int) -> int:
    depth = 0
    for index in range(start, len(text)):
        if text[index] == "{":
            depth += 1
        elif text[index] == "}":
            depth -= 1
            if depth == 0:
                return index
    raise ValueError(f"unclosed ${{ in {text!r}")


def _substitute_braced(expression: str, variables: dict[str, str]) -> str:
    match = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])(.*))?", expression, flags=re.DOTALL)
    if not match:
        raise ValueError(f"invalid interpolation ${{{expression}}}")
    name, operator, argument = match.groups()
    value = variables.get(name)
    if operator in (":-", "-"):
        absent = value is None or (operator == ":-" and value == "")
        return interpolate(argument, variables) if absent else value
    if operator in (":?", "?"):
        if value is None or (operator == ":?" and value == ""):
            raise MissingVariable(f"{name}: {interpolate(argument, variables)}")
        return value
    if operator in (":+", "+"):
        present = value is not None and (operator == "+" or value != "")
        return interpolate(argument, variables) if present else (value or "")
    return value or ""


def interpolate(text: str, variables: dict[str, str]) -> str:
    """`text` as compose interpolates it with `variables` (a missing one is empty, as compose warns)."""
    out: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char != "$":
            out.append(char)
            index += 1
            continue
        following = text[index + 1 : index + 2]
        if following == "$":
            out.append("$")
            index += 2
        elif following == "{":
            end = _closing_brace(text, index + 1)
            out.append(_substitute_braced(text[index + 2 : end], variables))
            index = end + 1
        elif named := re.match(r"[A-Za-z_][A-Za-z0-9_]*", text[index + 1 :]):
            out.append(variables.get(named.group(0), ""))
            index += 1 + named.end()
        else:
            out.append("$")
            index += 1
    return "".join(out)


def interpolate_tree(node: Any, variables: dict[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, variables)
    if isinstance(node, list):
        return [interpolate_tree(item, variables) for item in node]
    if isinstance(node, dict):
        return {key: interpolate_tree(value, variables) for key, value in node.items()}
    return node


def read_env_file(path: Path) -> dict[str, str]:
    """A .env file as compose reads it: comments, quotes, and values that use earlier variables."""
    variables: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = re.fullmatch(r"(?:export\s+)?([A-Za-z_][A-Za-z0-9_.-]*)\s*=\s*(.*)", stripped)
        assert match, f"{path.name}:{number}: not NAME=value: {line!r}"
        name, raw = match.groups()
        if raw.startswith("'") and raw.endswith("'") and len(raw) > 1:
            value = raw[1:-1]
        elif raw.startswith('"') and raw.endswith('"') and len(raw) > 1:
            value = interpolate(raw[1:-1], variables)
        else:
            value = interpolate(raw.split(" #", 1)[0].rstrip(), variables)
        variables[name] = value
    return variables


def compose_as_read(variables: dict[str, str]) -> dict[str, Any]:
    """docker-compose.yml after YAML parsing (anchors and merge keys resolved) and interpolation."""
    return interpolate_tree(yaml.safe_load(COMPOSE_FILE.read_text()), variables)


def check_jsonschema(*documents: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CHECK_JSONSCHEMA), "--schemafile", str(SCHEMA), *map(str, documents)],
        capture_output=True,
        text=True,
        timeout=120,
    )


# ------------------------------------------------------------------------------------------------------
# Fixtures and small helpers
# ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="module")
def environments() -> dict[str, dict[str, str]]:
    return {name: read_env_file(ROOT / name) for name in ENV_FILES}


def _depends_on(service: dict[str, Any]) -> dict[str, str]:
    return {name: spec["condition"] for name, spec in service.get("depends_on", {}).items()}


def _networks(service: dict[str, Any]) -> set[str]:
    return set(service.get("networks", []))


def _published(service: dict[str, Any]) -> list[str]:
    return [str(port) for port in service.get("ports", [])]


def _variables_read_by_settings() -> set[str]:
    import mlops_site.settings  # noqa: F401  (importing records every variable it reads)

    return set(env.READ_VARIABLES)


def _interpolated_names(text: str) -> set[str]:
    # $$ is a literal $ for the container's shell, not interpolation.
    return set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", text.replace("$$", "")))


def _settings_default(name: str) -> int:
    source = (ROOT / "mlops_site" / "settings.py").read_text()
    return int(re.search(rf'env_int\("{name}", (\d+)\)', source).group(1))


# ------------------------------------------------------------------------------------------------------
# The interpolation helper itself: the checks below are only as good as it is.
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("template", "variables", "expected"),
    [
        ("${A:-x}", {}, "x"),
        ("${A:-x}", {"A": ""}, "x"),
        ("${A-x}", {"A": ""}, ""),
        ("${A:-x}", {"A": "y"}, "y"),
        ("${A:-${B:-500}}", {}, "500"),
        ("${A:-${B:-500}}", {"B": "7"}, "7"),
        ("${A:+on}", {"A": "1"}, "on"),
        ("${A:+on}", {}, ""),
        ("$$HOST and $A", {"A": "a"}, "$HOST and a"),
        (
            "postgres://${U:-mlops}:${P:?no}@postgres:5432/${D:-mlflow}",
            {"P": "pw"},
            "postgres://mlops:pw@postgres:5432/mlflow",
        ),
    ],
)
def test_the_interpolation_helper_follows_compose_s_rules(template, variables, expected):
    assert interpolate(template, variables) == expected


def test_the_interpolation_helper_refuses_a_missing_required_variable():
    with pytest.raises(MissingVariable, match="SECRET_KEY: set SECRET_KEY"):
        interpolate("${SECRET_KEY:?set SECRET_KEY in .env}", {"SECRET_KEY": ""})


def test_env_files_are_read_like_compose_reads_them(tmp_path):
    path = tmp_path / ".env"
    path.write_text(
        "# comment\nHOST=a.example.com\nURL=https://${HOST} # note\nQ='${HOST}'\nD=\"x ${HOST}\"\n"
    )

    assert read_env_file(path) == {
        "HOST": "a.example.com",
        "URL": "https://a.example.com",
        "Q": "${HOST}",
        "D": "x a.example.com",
    }


# ------------------------------------------------------------------------------------------------------
# The Compose Specification's JSON schema
# ------------------------------------------------------------------------------------------------------
def test_the_compose_file_is_valid_against_the_compose_specification_raw_and_with_each_env_file(tmp_path):
    required = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*):\?", COMPOSE_FILE.read_text()))
    documents = [COMPOSE_FILE]
    for name in ENV_FILES:
        variables = read_env_file(ROOT / name)
        # .env.example leaves the secrets for the operator to fill in.
        variables.update(
            {key: "change-me" for key in required if name == ".env.example" and not variables.get(key)}
        )
        interpolated = tmp_path / f"compose{name}.json"
        interpolated.write_text(json.dumps(compose_as_read(variables)))
        documents.append(interpolated)

    result = check_jsonschema(*documents)

    assert result.returncode == 0, result.stdout + result.stderr


def _misspell_a_key(compose: dict[str, Any]) -> str:
    compose["services"]["web"]["healtcheck"] = compose["services"]["web"].pop("healthcheck")
    return "healtcheck"


def _wait_for_a_condition_compose_does_not_know(compose: dict[str, Any]) -> str:
    compose["services"]["mlflow"]["depends_on"]["postgres"]["condition"] = "service_ready"
    return "service_ready"


def _make_the_internal_network_a_string(compose: dict[str, Any]) -> str:
    compose["networks"]["internal"]["internal"] = ["yes"]
    return "internal"


@pytest.mark.parametrize(
    "break_it",
    [_misspell_a_key, _wait_for_a_condition_compose_does_not_know, _make_the_internal_network_a_string],
)
def test_the_schema_check_rejects_a_compose_file_the_specification_does_not_allow(
    break_it, compose, tmp_path
):
    broken = copy.deepcopy(compose)
    culprit = break_it(broken)
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken))

    result = check_jsonschema(path)

    assert result.returncode == 1, result.stdout + result.stderr
    assert culprit in result.stdout


def test_compose_refuses_to_start_without_the_secrets(environments):
    variables = dict(environments[".env.production.example"], SECRET_KEY="", POSTGRES_PASSWORD="")

    with pytest.raises(MissingVariable, match=r"SECRET_KEY|POSTGRES_PASSWORD"):
        compose_as_read(variables)


# ------------------------------------------------------------------------------------------------------
# Profiles, networks, ports
# ------------------------------------------------------------------------------------------------------
def test_every_service_is_in_exactly_its_intended_profile(services):
    expected = {service: [profile] for profile, names in PROFILES.items() for service in names}

    assert {name: service.get("profiles") for name, service in services.items()} == expected


def test_the_internal_network_has_no_route_out_and_both_networks_have_fixed_subnets(compose):
    networks = compose["networks"]

    assert set(networks) == {"internal", "edge"}
    assert networks["internal"]["internal"] is True
    assert not networks["edge"].get("internal")
    assert networks["internal"]["ipam"]["config"][0]["subnet"].startswith("${INTERNAL_SUBNET")
    assert networks["edge"]["ipam"]["config"][0]["subnet"].startswith("${EDGE_SUBNET")


def test_every_service_joins_the_internal_network_and_data_services_nothing_else(services):
    for name, service in services.items():
        networks = _networks(service)
        assert networks <= {"internal", "edge"}, name
        if name == "certbot":
            # It talks to the ACME server only; the challenge comes in through nginx.
            assert networks == {"edge"}
            continue
        assert "internal" in networks, f"{name} is not on the internal network"
    for name in DATA_SERVICES:
        assert _networks(services[name]) == {"internal"}, f"{name} must not be reachable from the edge"


def test_only_what_nginx_reaches_or_what_must_reach_the_internet_is_on_the_edge_network(services):
    on_edge = {name for name, service in services.items() if "edge" in _networks(service)}

    # web: proxied, sends mail; worker and beat: the same definition (webhooks); grafana: proxied;
    # alertmanager: notifications; nginx and certbot: the proxy.
    assert on_edge == {*APP_SERVICES, "grafana", "alertmanager", "nginx", "certbot"}


def test_services_on_the_internal_network_alone_publish_no_ports(services):
    for name, service in services.items():
        if _networks(service) == {"internal"}:
            assert "ports" not in service, f"{name} publishes a port no one outside could reach"


def test_only_nginx_publishes_ports_other_machines_reach(services):
    for name, service in services.items():
        for port in _published(service):
            if name == "nginx":
                assert port.startswith("${PROXY_BIND_ADDRESS"), port
            else:
                assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond the host"
    assert {name for name, service in services.items() if "ports" in service} == {
        "web",
        "grafana",
        "alertmanager",
        "nginx",
    }


def test_nginx_is_built_from_deploy_nginx_with_its_templates_and_waits_for_a_healthy_web(services):
    nginx = services["nginx"]
    dockerfile = (ROOT / "deploy" / "nginx" / "Dockerfile").read_text()

    assert nginx["build"]["context"] == "deploy/nginx"
    assert nginx["pull_policy"] == "build"
    assert nginx["image"] == "mlops-nginx:${IMAGE_TAG:-local}"
    assert re.search(r"^FROM nginx:\d+\.\d+\.\d+-alpine$", dockerfile, flags=re.MULTILINE)
    assert re.search(r"^COPY templates/ /etc/nginx/templates/$", dockerfile, flags=re.MULTILINE)
    assert re.search(
        r"^COPY (--chmod=0755 )?entrypoint/ /docker-entrypoint\.d/$", dockerfile, flags=re.MULTILINE
    )
    assert set(nginx["volumes"]) == {"letsencrypt:/etc/letsencrypt", "acme-webroot:/var/www/certbot"}
    assert _depends_on(nginx) == {"web": "service_healthy"}
    upstreams = {nginx["environment"][key] for key in nginx["environment"] if key.endswith("_UPSTREAM")}
    assert upstreams == {"web:8000", "grafana:3000", "minio:9001"}


def test_nginx_listens_on_the_ports_it_publishes_so_redirects_name_the_public_port(services):
    nginx = services["nginx"]

    assert nginx["environment"]["NGINX_HTTP_PORT"] == "${PROXY_HTTP_PORT:-80}"
    assert nginx["environment"]["NGINX_HTTPS_PORT"] == "${PROXY_HTTPS_PORT:-443}"
    assert _published(nginx) == [
        "${PROXY_BIND_ADDRESS:-0.0.0.0}:${PROXY_HTTP_PORT:-80}:${PROXY_HTTP_PORT:-80}",
        "${PROXY_BIND_ADDRESS:-0.0.0.0}:${PROXY_HTTPS_PORT:-443}:${PROXY_HTTPS_PORT:-443}",
    ]


def test_every_name_the_nginx_template_uses_is_given_by_compose_or_defaulted_by_its_entrypoint(services):
    template = (ROOT / "deploy" / "nginx" / "templates" / "default.conf.template").read_text()
    defaults = (ROOT / "deploy" / "nginx" / "entrypoint" / "19-proxy-defaults.envsh").read_text()
    used = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)\}", template))
    defaulted = set(re.findall(r'"\$\{([A-Z][A-Z0-9_]*):=', defaults))
    defaulted |= set(re.findall(r"^\s*([A-Z][A-Z0-9_]*)=", defaults, flags=re.MULTILINE))

    assert sorted(used - set(services["nginx"]["environment"]) - defaulted) == []
    assert {"APP_HOST", "GRAFANA_HOST", "MINIO_CONSOLE_HOST"} <= set(services["nginx"]["environment"])


def test_nginx_has_a_fixed_address_on_the_edge_network_and_reaches_the_minio_console(services):
    networks = services["nginx"]["networks"]

    assert networks["edge"]["ipv4_address"].startswith("${PROXY_ADDRESS")
    assert "internal" in networks


# ------------------------------------------------------------------------------------------------------
# The proxy (the contract with deploy/nginx/)
# ------------------------------------------------------------------------------------------------------
def test_certbot_shares_the_certificates_and_the_challenge_folder_with_nginx(services):
    certbot = services["certbot"]

    assert re.fullmatch(r"certbot/certbot:v\d+\.\d+\.\d+", certbot["image"]), certbot["image"]
    assert certbot["entrypoint"] == ["sh", "/deploy/certbot.sh"]
    assert set(certbot["volumes"]) == {
        "./deploy/nginx/certbot.sh:/deploy/certbot.sh:ro",
        "letsencrypt:/etc/letsencrypt",
        "acme-webroot:/var/www/certbot",
    }
    assert set(certbot["environment"]) == {
        "ACME_EMAIL",
        "APP_HOST",
        "GRAFANA_HOST",
        "MINIO_CONSOLE_HOST",
        "ACME_STAGING",
    }
    assert certbot["environment"]["APP_HOST"] == services["nginx"]["environment"]["APP_HOST"]
    assert _depends_on(certbot) == {"nginx": "service_healthy"}


def test_nginx_s_default_body_limit_lets_the_largest_default_upload_through(services):
    default = interpolate(services["nginx"]["environment"]["NGINX_MAX_BODY_MB"], {})

    # The limit applies to the whole multipart body: the file and the form around it.
    assert int(default) > max(_settings_default(name) for name in UPLOAD_LIMITS)


# ------------------------------------------------------------------------------------------------------
# Start order and health
# ------------------------------------------------------------------------------------------------------
def test_every_long_running_service_has_a_healthcheck(services):
    for name, service in services.items():
        if name in ONE_SHOT:
            continue
        healthcheck = service.get("healthcheck")
        assert healthcheck, f"{name} has no healthcheck"
        assert not healthcheck.get("disable"), f"{name} disables its healthcheck"
        assert healthcheck["test"][0] in ("CMD", "CMD-SHELL"), name


def test_postgres_counts_as_ready_only_once_it_listens_on_tcp(services):
    # During the first initialisation the image's temporary server listens on its socket only.
    assert "-h 127.0.0.1" in services["postgres"]["healthcheck"]["test"][1]


def test_one_shot_services_do_not_restart(services):
    for name in ONE_SHOT:
        assert services[name]["restart"] == "no", name


def test_the_app_starts_only_after_database_broker_storage_mlflow_and_migrations(services):
    for name in (*APP_SERVICES, "migrate"):
        conditions = _depends_on(services[name])
        assert conditions["postgres"] == "service_healthy", name
        assert conditions["redis"] == "service_healthy", name
        assert conditions["minio-init"] == "service_completed_successfully", name
    for name in APP_SERVICES:
        conditions = _depends_on(services[name])
        assert conditions["migrate"] == "service_completed_successfully", name
        assert conditions["mlflow"] == "service_healthy", name


def test_every_dependency_is_in_the_same_or_an_earlier_profile(services):
    order = list(PROFILES)
    for name, service in services.items():
        for dependency in _depends_on(service):
            mine, theirs = service["profiles"][0], services[dependency]["profiles"][0]
            assert order.index(theirs) <= order.index(mine), f"{name} ({mine}) needs {dependency} ({theirs})"


def test_mlflow_starts_after_minio_is_healthy_and_its_buckets_exist(services):
    conditions = _depends_on(services["mlflow"])

    assert conditions["minio"] == "service_healthy"
    assert conditions["minio-init"] == "service_completed_successfully"
    assert conditions["postgres"] == "service_healthy"
    assert _depends_on(services["minio-init"]) == {"minio": "service_healthy"}


def test_mlflow_keeps_runs_in_its_postgresql_database_and_artifacts_in_minio(services):
    command = " ".join(services["mlflow"]["command"])

    assert "--backend-store-uri=postgresql" in command
    assert "@postgres:5432/${MLFLOW_DATABASE:-mlflow}" in command
    assert services["postgres"]["environment"]["MLFLOW_DATABASE"] == "${MLFLOW_DATABASE:-mlflow}"
    assert "--artifacts-destination=s3://${MLFLOW_BUCKET_NAME:-mlflow}/" in command
    assert services["mlflow"]["environment"]["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert services["mlflow"]["build"]["dockerfile"] == "deploy/mlflow.Dockerfile"
    script = (ROOT / "deploy" / "postgres" / "create-mlflow-database.sh").read_text()
    assert "CREATE DATABASE ${MLFLOW_DATABASE:-mlflow}" in script


def test_redis_appends_every_write_and_never_evicts_a_queued_task(services):
    command = services["redis"]["command"]
    options = dict(zip(command[1::2], command[2::2], strict=False))

    assert command[0] == "redis-server"
    assert options["--appendonly"] == "yes"
    assert options["--maxmemory-policy"] == "noeviction"
    assert "redis-data:/data" in services["redis"]["volumes"]


# ------------------------------------------------------------------------------------------------------
# Images
# ------------------------------------------------------------------------------------------------------
def test_every_image_is_pinned_to_a_version(services):
    for name, service in services.items():
        image = service["image"]
        if "build" in service:
            continue
        repository, _, tag = image.rpartition(":")
        assert repository, f"{name} runs {image} without a tag"
        assert "latest" not in tag, f"{name} runs unpinned {image}"
        assert "$" not in image, f"{name} takes its image from a variable but builds none"
        # PostgreSQL's second number is its patch release (16.15); MinIO tags are release dates; NVIDIA's
        # containers are named by year and month (24.08).
        patch = (
            r"\d+\.\d+" if repository in ("postgres", "nvcr.io/nvidia/tritonserver") else r"v?\d+\.\d+\.\d+"
        )
        assert re.fullmatch(rf"{patch}(-[a-z0-9.]+)?|RELEASE\.[0-9TZ-]+", tag), f"{name} runs {image}"


def test_the_built_images_are_tagged_from_image_tag_never_latest(services):
    for name in (*APP_SERVICES, "migrate"):
        assert services[name]["image"] == "${APP_IMAGE:-mlops-site}:${IMAGE_TAG:-local}", name
    assert services["mlflow"]["image"] == "${MLFLOW_IMAGE:-mlops-mlflow}:${IMAGE_TAG:-local}"
    for name in ENV_FILES:
        variables = read_env_file(ROOT / name)
        for service in (*APP_SERVICES, "mlflow"):
            image = interpolate(services[service]["image"], variables)
            assert not image.endswith(":latest"), f"{name}: {service} runs {image}"


# ------------------------------------------------------------------------------------------------------
# The app's configuration
# ------------------------------------------------------------------------------------------------------
def test_web_worker_and_beat_share_one_definition_and_differ_only_in_command(services):
    def without_own_keys(service: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in service.items() if key not in ("command", "ports")}

    web, worker, beat = (without_own_keys(services[name]) for name in APP_SERVICES)
    assert web == worker == beat
    assert len({str(services[name]["command"]) for name in APP_SERVICES}) == 3
    assert "ports" not in services["worker"]
    assert "ports" not in services["beat"]
    raw = COMPOSE_FILE.read_text()
    for name in APP_SERVICES:
        assert re.search(rf"^  {name}:\n    <<: \*app$", raw, flags=re.MULTILINE), f"{name} is not <<: *app"


def test_the_app_gets_every_variable_it_needs_in_production(services):
    for name in APP_SERVICES:
        missing = REQUIRED_IN_PRODUCTION - set(services[name]["environment"])
        assert missing == set(), f"{name} lacks {sorted(missing)}"


def test_the_secret_key_must_be_given_and_debug_is_off_by_default(services):
    environment = services["web"]["environment"]

    assert environment["SECRET_KEY"].startswith("${SECRET_KEY:?")
    assert environment["DEBUG"] == "${DEBUG:-False}"


def test_the_app_is_given_no_variable_the_settings_ignore(services):
    read = _variables_read_by_settings()
    for name in (*APP_SERVICES, "migrate"):
        extra = set(services[name]["environment"]) - read
        if name == "migrate":
            extra -= ADMIN_COMMAND_VARIABLES
        assert extra == set(), f"{name} sets variables nothing reads: {sorted(extra)}"


def test_the_app_s_service_urls_point_at_the_compose_services(services):
    environment = services["web"]["environment"]

    assert "@postgres:5432/" in environment["DATABASE_URL"]
    assert environment["REDIS_URL"].startswith("redis://redis:6379/")
    assert environment["CELERY_BROKER_URL"].startswith("redis://redis:6379/")
    assert environment["AWS_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert environment["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"


def test_minio_init_creates_the_app_and_mlflow_buckets(services):
    script = (ROOT / "deploy" / "minio" / "init.sh").read_text()
    environment = services["minio-init"]["environment"]

    assert 'mc mb --ignore-existing "local/$AWS_STORAGE_BUCKET_NAME"' in script
    assert 'mc mb --ignore-existing "local/$MLFLOW_BUCKET_NAME"' in script
    assert environment["AWS_STORAGE_BUCKET_NAME"] == services["web"]["environment"]["AWS_STORAGE_BUCKET_NAME"]
    assert environment["AWS_ACCESS_KEY_ID"] == services["web"]["environment"]["AWS_ACCESS_KEY_ID"]
    assert environment["MLFLOW_BUCKET_NAME"] == "${MLFLOW_BUCKET_NAME:-mlflow}"


def test_every_named_volume_is_declared_and_stateful_services_keep_their_data(compose, services):
    declared = set(compose["volumes"])
    used = set()
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if not source.startswith((".", "/")):
                used.add(source)
    assert used <= declared
    assert declared <= used, f"declared but unused: {sorted(declared - used)}"
    for name, path in (
        ("postgres", "/var/lib/postgresql/data"),
        ("redis", "/data"),
        ("minio", "/data"),
        ("prometheus", "/prometheus"),
        ("grafana", "/var/lib/grafana"),
        ("nginx", "/etc/letsencrypt"),
        ("certbot", "/etc/letsencrypt"),
    ):
        targets = [volume.split(":")[1] for volume in services[name]["volumes"]]
        assert path in targets, f"{name} keeps no data in a volume"


def test_prometheus_scrapes_the_web_metrics_and_grafana_is_provisioned_with_it():
    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    datasources = yaml.safe_load(
        (ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )

    web_jobs = [job for job in prometheus["scrape_configs"] if job["job_name"] == "mlops-web"]
    assert web_jobs[0]["metrics_path"] == "/metrics"
    assert web_jobs[0]["static_configs"][0]["targets"] == ["web:8000"]
    assert datasources["datasources"][0]["url"] == "http://prometheus:9090"


def test_every_mounted_file_exists(services):
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"


# ------------------------------------------------------------------------------------------------------
# The env files: the single stack (.env.example) and staging and production side by side
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ENV_FILES)
def test_each_env_file_lists_every_variable_compose_interpolates(name, environments):
    interpolated = _interpolated_names(COMPOSE_FILE.read_text()) - COMPOSE_PROVIDED

    assert sorted(interpolated - set(environments[name])) == []


@pytest.mark.parametrize("name", ENV_FILES)
def test_each_env_file_starts_the_core_and_the_app(name, environments):
    # Every service has a profile: without COMPOSE_PROFILES, `docker compose up` would start nothing.
    profiles = environments[name].get("COMPOSE_PROFILES", "").split(",")

    assert {"core", "app"} <= set(profiles)
    assert set(profiles) <= set(PROFILES)


def test_env_example_lists_every_variable_the_settings_read(environments):
    read = {name for name in _variables_read_by_settings() if not name.endswith("_FILE")}

    assert sorted(read - set(environments[".env.example"])) == []


def test_the_two_environments_are_separate_projects_with_their_own_everything(environments):
    staging, production = (environments[name] for name in ENVIRONMENTS)

    for key in (
        "COMPOSE_PROJECT_NAME",
        "APP_HOST",
        "GRAFANA_HOST",
        "MINIO_CONSOLE_HOST",
        "POSTGRES_DB",
        "MLFLOW_DATABASE",
        "AWS_STORAGE_BUCKET_NAME",
        "MLFLOW_BUCKET_NAME",
        "SECRET_KEY",
        "POSTGRES_PASSWORD",
        "AWS_SECRET_ACCESS_KEY",
        "MINIO_ROOT_PASSWORD",
        "METRICS_TOKEN",
        "GRAFANA_ADMIN_PASSWORD",
    ):
        assert staging[key], key
        assert production[key], key
        assert staging[key] != production[key], f"staging and production share {key}={staging[key]}"
    assert {staging["COMPOSE_PROJECT_NAME"], production["COMPOSE_PROJECT_NAME"]} == {
        "mlops-staging",
        "mlops-production",
    }


def test_the_two_environments_publish_on_different_host_ports(environments, services):
    def bindings(variables: dict[str, str]) -> set[tuple[str, str]]:
        published = set()
        for service in services.values():
            for port in _published(service):
                address, host_port, _container = interpolate(port, variables).rsplit(":", 2)
                published.add((address, host_port))
        return published

    staging, production = (bindings(environments[name]) for name in ENVIRONMENTS)

    def clash(a: tuple[str, str], b: tuple[str, str]) -> bool:
        every_address = "0.0.0.0"  # noqa: S104  (how a binding to every address is written)
        same_address = a[0] == b[0] or every_address in (a[0], b[0])
        return a[1] == b[1] and same_address

    assert [(a, b) for a in staging for b in production if clash(a, b)] == []


def test_the_two_environments_networks_do_not_overlap(environments):
    networks = [
        ipaddress.ip_network(environments[name][key])
        for name in ENV_FILES
        for key in ("EDGE_SUBNET", "INTERNAL_SUBNET")
    ]

    for index, network in enumerate(networks):
        assert network.is_private, network
        for other in networks[index + 1 :]:
            assert not network.overlaps(other), f"{network} overlaps {other}"


@pytest.mark.parametrize("name", ENV_FILES)
def test_nginx_s_fixed_address_is_a_usable_address_of_the_edge_subnet(name, environments):
    variables = environments[name]
    edge = ipaddress.ip_network(variables["EDGE_SUBNET"])
    address = ipaddress.ip_address(variables["PROXY_ADDRESS"])
    gateway = next(edge.hosts())

    assert address in edge
    assert address not in (edge.network_address, edge.broadcast_address, gateway)


@pytest.mark.parametrize("name", ENVIRONMENTS)
def test_behind_the_proxy_the_app_trusts_nginx_and_not_the_edge_gateway(name, environments):
    variables = environments[name]
    trusted = [ipaddress.ip_network(item, strict=False) for item in variables["TRUSTED_PROXIES"].split(",")]
    edge = ipaddress.ip_network(variables["EDGE_SUBNET"])
    gateway = next(edge.hosts())
    nginx = ipaddress.ip_address(variables["PROXY_ADDRESS"])

    assert variables["SECURE_PROXY_SSL"] == "True"
    assert any(nginx in network for network in trusted)
    # Docker's port forwarding (WEB_PORT on 127.0.0.1) connects from the gateway: never believe it.
    assert not any(gateway in network for network in trusted)
    assert ipaddress.ip_network(variables["INTERNAL_SUBNET"]) in trusted
    assert variables["APP_HOST"] in variables["ALLOWED_HOSTS"].split(",")
    assert "web" in variables["ALLOWED_HOSTS"].split(",")
    assert f"https://{variables['APP_HOST']}" in variables["CSRF_TRUSTED_ORIGINS"]
    assert variables["GRAFANA_ROOT_URL"] == f"https://{variables['GRAFANA_HOST']}/"
    assert set(variables["COMPOSE_PROFILES"].split(",")) == set(PROFILES) - OPTIONAL_PROFILES


@pytest.mark.parametrize("name", ENV_FILES)
def test_nginx_lets_through_every_upload_the_app_accepts(name, environments, services):
    variables = environments[name]
    body_limit = int(interpolate(services["nginx"]["environment"]["NGINX_MAX_BODY_MB"], variables))

    for limit in UPLOAD_LIMITS:
        accepted = int(variables.get(limit) or _settings_default(limit))
        assert body_limit > accepted, (
            f"{name}: nginx refuses {limit}={accepted} MB uploads at {body_limit} MB"
        )


@pytest.mark.parametrize("name", ENVIRONMENTS)
def test_environment_secrets_are_obvious_placeholders(name, environments):
    for key, value in environments[name].items():
        if (
            re.search(r"(PASSWORD|SECRET_KEY|SECRET_ACCESS_KEY|TOKEN)$", key)
            and key != "DJANGO_ADMIN_PASSWORD"
        ):
            assert value.startswith("change-me"), f"{name}: {key} looks like a real secret"
    assert environments[name]["DJANGO_ADMIN_PASSWORD"] == ""


# ------------------------------------------------------------------------------------------------------
# Monitoring
# ------------------------------------------------------------------------------------------------------
def test_monitoring_images_are_pinned_to_a_version(services):
    for name in MONITORING:
        image = services[name]["image"]
        assert re.fullmatch(r"[\w./-]+:v?\d+\.\d+\.\d+", image), f"{name} runs unpinned {image}"


def test_monitoring_services_keep_their_data_in_named_volumes(services):
    for name, path in (
        ("alertmanager", "/alertmanager"),
        ("loki", "/loki"),
        ("tempo", "/var/tempo"),
        ("alloy", "/var/lib/alloy/data"),
    ):
        targets = [volume.split(":")[1] for volume in services[name]["volumes"]]
        assert path in targets, f"{name} keeps no data in a volume"


def test_prometheus_loads_the_mounted_rules_and_sends_alerts_to_the_alertmanager_service(services):
    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    mounts = dict(volume.rsplit(":", 2)[:2] for volume in services["prometheus"]["volumes"])
    config_dir = Path(mounts["./deploy/prometheus/prometheus.yml"]).parent

    assert prometheus["rule_files"] == ["rules/*.yml"]
    assert mounts["./deploy/prometheus/rules"] == str(config_dir / "rules")
    assert prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]
    assert _depends_on(services["prometheus"])["alertmanager"] == "service_healthy"
    assert "/etc/alertmanager/alertmanager.yml" in " ".join(services["alertmanager"]["command"])


def test_grafana_waits_for_its_data_sources(services):
    conditions = _depends_on(services["grafana"])

    assert conditions == dict.fromkeys(("prometheus", "loki", "tempo"), "service_healthy")


def test_alloy_ships_the_app_containers_logs_to_the_loki_service(services):
    config = (ROOT / "deploy" / "alloy" / "config.alloy").read_text()
    kept = re.search(r'regex\s*=\s*"([^"]+)"\s*\n\s*action\s*=\s*"keep"', config).group(1).split("|")

    assert set(kept) == {*APP_SERVICES, "migrate"}
    assert 'url = "http://loki:3100/loki/api/v1/push"' in config
    assert "/var/run/docker.sock:/var/run/docker.sock:ro" in services["alloy"]["volumes"]
    assert _depends_on(services["alloy"]) == {"loki": "service_healthy"}
    assert services["alloy"]["environment"]["COMPOSE_PROJECT_NAME"] == "${COMPOSE_PROJECT_NAME}"
    metadata = config.split("stage.structured_metadata", 1)[1]
    for field in ("request_id", "trace_id"):
        assert re.search(rf'\b{field}\s*=\s*""', metadata), field


def test_the_vendored_schema_is_the_upstream_file_its_readme_names():
    readme = (SCHEMA.parent / "README.md").read_text()
    recorded = re.search(r"compose-spec\.json.*?sha256: ([0-9a-f]{64})", readme, flags=re.DOTALL).group(1)

    assert hashlib.sha256(SCHEMA.read_bytes()).hexdigest() == recorded
    assert json.loads(SCHEMA.read_text())["title"] == "Compose Specification"
