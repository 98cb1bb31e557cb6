"""docker-compose.yml starts the services in the right order and gives the app what it reads."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlops_site import env

ROOT = Path(__file__).resolve().parent.parent
APP_SERVICES = ("web", "worker", "beat")
ONE_SHOT = ("minio-init", "migrate")
#: What the app cannot run without in production: settings would fall back to embedded defaults.
REQUIRED_IN_PRODUCTION = {
    "SECRET_KEY",
    "DEBUG",
    "ALLOWED_HOSTS",
    "DATABASE_URL",
    "REDIS_URL",
    "CELERY_BROKER_URL",
    "AWS_STORAGE_BUCKET_NAME",
    "AWS_S3_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "MLFLOW_TRACKING_URI",
}
#: Read by `manage.py ensure_admin`, which only the migrate service runs.
ADMIN_COMMAND_VARIABLES = {"DJANGO_ADMIN_USERNAME", "DJANGO_ADMIN_PASSWORD", "DJANGO_ADMIN_EMAIL"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict[str, dict[str, Any]]:
    return compose["services"]


def _depends_on(service: dict[str, Any]) -> dict[str, str]:
    return {name: spec["condition"] for name, spec in service.get("depends_on", {}).items()}


def _variables_read_by_settings() -> set[str]:
    import mlops_site.settings  # noqa: F401  (importing records every variable it reads)

    return set(env.READ_VARIABLES)


def test_every_long_running_service_has_a_healthcheck(services):
    for name, service in services.items():
        if name in ONE_SHOT:
            continue
        healthcheck = service.get("healthcheck")
        assert healthcheck, f"{name} has no healthcheck"
        assert not healthcheck.get("disable"), f"{name} disables its healthcheck"
        assert healthcheck["test"][0] in ("CMD", "CMD-SHELL"), name


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


def test_mlflow_starts_after_minio_is_healthy_and_its_buckets_exist(services):
    conditions = _depends_on(services["mlflow"])

    assert conditions["minio"] == "service_healthy"
    assert conditions["minio-init"] == "service_completed_successfully"
    assert conditions["postgres"] == "service_healthy"
    assert _depends_on(services["minio-init"]) == {"minio": "service_healthy"}


def test_mlflow_keeps_runs_in_postgresql_and_artifacts_in_minio(services):
    command = " ".join(services["mlflow"]["command"])

    assert "--backend-store-uri=postgresql" in command
    assert "@postgres:5432/mlflow" in command
    assert "--artifacts-destination=s3://" in command
    assert services["mlflow"]["environment"]["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert services["mlflow"]["build"]["dockerfile"] == "deploy/mlflow.Dockerfile"


def test_mlflow_image_pins_the_app_s_mlflow_version():
    dockerfile = (ROOT / "deploy" / "mlflow.Dockerfile").read_text()
    server = re.search(
        r"^mlflow==(\S+)$", (ROOT / "requirements-mlflow-ui.txt").read_text(), flags=re.MULTILINE
    )
    client = re.search(r"^mlflow-skinny==(\S+)$", (ROOT / "requirements.txt").read_text(), flags=re.MULTILINE)

    assert server, "requirements-mlflow-ui.txt pins no mlflow version"
    # The server is the version of the client the app logs with.
    assert client
    assert client.group(1) == server.group(1)
    assert "--constraint /tmp/requirements.txt --constraint /tmp/requirements-mlflow-ui.txt" in dockerfile


def test_the_app_s_requirements_leave_out_mlflow_s_server():
    runtime = (ROOT / "requirements.txt").read_text()

    assert not re.search(
        r"^(mlflow|Flask|matplotlib|graphene)==", runtime, flags=re.MULTILINE | re.IGNORECASE
    )


def test_web_worker_and_beat_share_one_definition_and_differ_only_in_command(services):
    def without_own_keys(service: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in service.items() if key not in ("command", "ports")}

    web, worker, beat = (without_own_keys(services[name]) for name in APP_SERVICES)
    assert web == worker == beat
    assert len({str(services[name]["command"]) for name in APP_SERVICES}) == 3
    assert "ports" not in services["worker"]
    assert "ports" not in services["beat"]
    raw = (ROOT / "docker-compose.yml").read_text()
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


def test_env_example_lists_every_variable_compose_and_the_settings_use():
    example = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", (ROOT / ".env.example").read_text(), flags=re.MULTILINE))
    interpolated = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", (ROOT / "docker-compose.yml").read_text()))
    read = {name for name in _variables_read_by_settings() if not name.endswith("_FILE")}

    assert interpolated - example == set()
    assert read - example == set()


def test_the_image_runs_as_a_non_root_user_and_checks_its_health():
    dockerfile = (ROOT / "Dockerfile").read_text()

    assert "FROM python:3.11-slim" in dockerfile
    assert re.search(r"^USER app$", dockerfile, flags=re.MULTILINE)
    assert "pip install -r requirements.txt" in dockerfile
    assert "collectstatic" in dockerfile
    assert "HEALTHCHECK" in dockerfile
    assert "gunicorn" in dockerfile


#: `docker compose --profile monitoring up -d` adds these; the app runs without them.
MONITORING = ("prometheus", "alertmanager", "grafana", "loki", "tempo", "alloy")


def test_monitoring_services_start_only_with_the_monitoring_profile(services):
    for name in MONITORING:
        assert services[name]["profiles"] == ["monitoring"], name
    for name in (*APP_SERVICES, *ONE_SHOT, "postgres", "redis", "minio", "mlflow"):
        assert "profiles" not in services[name], name


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
    metadata = config.split("stage.structured_metadata", 1)[1]
    for field in ("request_id", "trace_id"):
        assert re.search(rf'\b{field}\s*=\s*""', metadata), field
