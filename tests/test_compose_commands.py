"""docker-compose.yml's own commands (migrate, web, worker, beat), run on the local PostgreSQL, Redis and S3.

Each app container's command and environment are read from the compose file at test time and interpolated
the way compose does with a test .env made from .env.example. Only what names the compose network or a
container's mounts is changed here: the service addresses (postgres, redis, minio, mlflow), the mounted
folders, the ports a process binds; OVERRIDABLE lists those variables and a test checks nothing else moved.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests
import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
APP_CONTAINERS = ("migrate", "web", "worker", "beat")
#: The only variables whose compose value may be changed here, each because it names something that exists
#: only inside the compose project: a service's address, a mounted folder, a port the process binds.
OVERRIDABLE = {
    "DATABASE_URL",
    "REDIS_URL",
    "CELERY_BROKER_URL",
    "AWS_S3_ENDPOINT_URL",
    "MLFLOW_TRACKING_URI",
    "DATA_DIR",
    "PROMETHEUS_MULTIPROC_DIR",
    "CELERY_METRICS_PORT",
}
#: Variables a container binds a port from: inside its own network namespace any port is free, here not.
BOUND_PORT_VARIABLES = {"CELERY_METRICS_PORT"}
#: What the .env gets on top of .env.example: one gunicorn worker saves a Django start on a 2-core CI.
ENV_FILE_CHANGES = {"WEB_CONCURRENCY": "1"}
START_TIMEOUT = 120
JOB_TIMEOUT = 90
#: celery beat's first run of an interval task comes one interval after its start (shadow batches: 10 s).
BEAT_SEND_TIMEOUT = 60
BATCH_ROWS = 25


def on_the_services(test: Any) -> Any:
    """The tests that run the stack: they need the service run's PostgreSQL, Redis and S3."""
    for mark in (pytest.mark.postgres, pytest.mark.redis, pytest.mark.s3, pytest.mark.worker):
        test = mark(test)
    return test


# ------------------------------------------------------------------------------
# Compose's variable interpolation and .env files
# https://docs.docker.com/reference/compose-file/interpolation/
# ------------------------------------------------------------------------------
class InterpolationError(ValueError):
    """What compose refuses to start with: a ${VAR:?message} without a value, or a malformed ${...}."""


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def interpolate(text: str, variables: Mapping[str, str]) -> str:
    """$VAR, ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}, ${VAR:+alt}, ${VAR+alt} and
    $$ for a literal $, with nested interpolation in defaults, as compose does."""
    out: list[str] = []
    position = 0
    while position < len(text):
        char = text[position]
        following = text[position + 1 : position + 2]
        if char != "$":
            out.append(char)
            position += 1
        elif following == "$":
            out.append("$")
            position += 2
        elif following == "{":
            end = _closing_brace(text, position + 2)
            out.append(_expand(text[position + 2 : end], variables))
            position = end + 1
        elif match := _NAME.match(text, position + 1):
            out.append(variables.get(match.group(), ""))
            position = match.end()
        else:
            out.append(char)
            position += 1
    return "".join(out)


def _closing_brace(text: str, start: int) -> int:
    depth = 1
    position = start
    while position < len(text):
        if text.startswith("$$", position):
            position += 2
            continue
        if text.startswith("${", position):
            depth += 1
            position += 2
            continue
        if text[position] == "}":
            depth -= 1
            if depth == 0:
                return position
        position += 1
    raise InterpolationError(f"unclosed ${{ in {text!r}")


def _expand(body: str, variables: Mapping[str, str]) -> str:
    match = _NAME.match(body)
    if match is None:
        raise InterpolationError(f"invalid interpolation format ${{{body}}}")
    name, rest = match.group(), body[match.end() :]
    value = variables.get(name)
    if not rest:
        return value or ""
    operator = next((op for op in (":-", ":?", ":+", "-", "?", "+") if rest.startswith(op)), None)
    if operator is None:
        raise InterpolationError(f"invalid interpolation format ${{{body}}}")
    argument = rest[len(operator) :]
    # With a colon an empty value counts as missing; without one only an unset variable does.
    missing = not value if operator.startswith(":") else value is None
    kind = operator[-1]
    if kind == "-":
        return interpolate(argument, variables) if missing else str(value)
    if kind == "?":
        if missing:
            raise InterpolationError(
                f"required variable {name} is missing a value: {interpolate(argument, variables)}"
            )
        return str(value)
    return "" if missing else interpolate(argument, variables)


def env_file_parse(text: str) -> dict[str, str]:
    """KEY=VALUE lines as compose reads a .env file: comments, `export `, quotes, trailing ` # comments`."""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").lstrip()
        name, separator, value = line.partition("=")
        if not separator:
            continue
        value = value.strip()
        if value[:1] in ("'", '"') and value[0] in value[1:]:
            value = value[1 : value.index(value[0], 1)]
        else:
            value = re.split(r"\s+#", value, maxsplit=1)[0].rstrip()
        values[name.strip()] = value
    return values


# ------------------------------------------------------------------------------
# What a container runs: compose's entrypoint and command over the image's ENTRYPOINT and CMD
# ------------------------------------------------------------------------------
def dockerfile_final_stage() -> dict[str, Any]:
    """The ENV, ENTRYPOINT and CMD of the Dockerfile's last stage (the image compose builds)."""
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    instructions: list[str] = []
    pending = ""
    for line in lines:
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        instructions.append(pending + stripped)
        pending = ""
    stage: dict[str, Any] = {"ENV": {}}
    for instruction in instructions:
        keyword, _, argument = instruction.partition(" ")
        keyword, argument = keyword.upper(), argument.strip()
        if keyword == "FROM":
            stage = {"ENV": {}}
        elif keyword in ("CMD", "ENTRYPOINT"):
            stage[keyword] = json.loads(argument) if argument.startswith("[") else ["/bin/sh", "-c", argument]
        elif keyword == "ENV":
            words = shlex.split(argument)
            pairs = (
                [word.split("=", 1) for word in words]
                if "=" in words[0]
                else [[words[0], " ".join(words[1:])]]
            )
            for name, value in pairs:
                # An ENV value sees the variables set before it ($PATH: the base image's, mapped later).
                stage["ENV"][name] = interpolate(value, {"PATH": "", **stage["ENV"]})
    return stage


def _argv(value: Any, variables: Mapping[str, str]) -> list[str]:
    if isinstance(value, str):
        return shlex.split(interpolate(value, variables))
    return [interpolate(str(part), variables) for part in value]


def container_argv(service: dict[str, Any], variables: Mapping[str, str]) -> list[str]:
    """Docker's rule: compose's entrypoint replaces the image's and drops its CMD; command replaces CMD."""
    image = dockerfile_final_stage()
    if "entrypoint" in service:
        entrypoint = _argv(service["entrypoint"] or [], variables)
        command = _argv(service.get("command") or [], variables)
    else:
        entrypoint = list(image.get("ENTRYPOINT", []))
        command = _argv(service["command"], variables) if "command" in service else list(image.get("CMD", []))
    return entrypoint + command


def container_environment(service: dict[str, Any], variables: Mapping[str, str]) -> dict[str, str]:
    """The variables compose gives the container: its env_file entries, then `environment` over them."""
    environment: dict[str, str] = {}
    env_files = service.get("env_file") or []
    for entry in [env_files] if isinstance(env_files, str | dict) else env_files:
        path = entry if isinstance(entry, str) else entry["path"]
        if Path(path).name == ".env":
            environment.update(variables)
        elif (ROOT / path).exists():
            environment.update(env_file_parse((ROOT / path).read_text()))
        elif isinstance(entry, str) or entry.get("required", True):
            pytest.fail(f"env_file {path} is missing")
    declared = service.get("environment") or {}
    if isinstance(declared, list):
        declared = dict(item.split("=", 1) if "=" in item else (item, None) for item in declared)
    for name, value in declared.items():
        if value is None:
            # `NAME` without a value passes the variable through from where compose runs.
            if name in variables:
                environment[name] = variables[name]
            continue
        if isinstance(value, bool):
            pytest.fail(f"{name}: compose refuses a YAML boolean in environment; quote it")
        environment[name] = interpolate(str(value), variables)
    return environment


def container_mounts(service: dict[str, Any]) -> list[str]:
    """The folders mounted into the container (volumes and tmpfs), longest first."""
    targets: list[str] = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            targets.append(volume["target"])
        else:
            parts = volume.split(":")
            targets.append(parts[1] if len(parts) > 1 else parts[0])
    tmpfs = service.get("tmpfs") or []
    for entry in [tmpfs] if isinstance(tmpfs, str) else tmpfs:
        targets.append(entry.split(":", 1)[0])
    return sorted(targets, key=len, reverse=True)


# ------------------------------------------------------------------------------
# This machine in place of the compose network
# ------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Here:
    """Where the compose project's services and mounts are on this machine."""

    database_url: str
    redis_url: str
    s3_endpoint: str
    mlflow_uri: str
    mounts_root: Path
    ports: dict[str, int] = field(default_factory=dict)

    def address(self, value: str) -> str:
        """The compose service address in `value` replaced by this machine's, keeping the path (database,
        Redis db number); other values unchanged."""
        try:
            parts = urlsplit(value)
            host, port = parts.hostname, parts.port
        except ValueError:
            return value
        replacements = {
            ("postgres", 5432): self.database_url,
            ("redis", 6379): self.redis_url,
            ("minio", 9000): self.s3_endpoint,
        }
        if (host, port) == ("mlflow", 5000):
            return self.mlflow_uri
        if (host, port) in replacements:
            local = urlsplit(replacements[(host, port)])
            if (host, port) == ("minio", 9000):
                return urlunsplit((local.scheme, local.netloc, parts.path, parts.query, parts.fragment))
            return urlunsplit((parts.scheme, local.netloc, parts.path, parts.query, parts.fragment))
        return value

    def mount(self, value: str, mounts: list[str]) -> str:
        for target in mounts:
            if value == target or value.startswith(target.rstrip("/") + "/"):
                folder = self.mounts_root / target.strip("/").replace("/", "-")
                folder.mkdir(parents=True, exist_ok=True)
                return str(folder) + value[len(target.rstrip("/")) :]
        return value


@dataclass
class Container:
    name: str
    argv: list[str]
    # The image's ENV with its own folders (PATH's venv, VIRTUAL_ENV) and mounts put where they are here.
    image_environment: dict[str, str]
    compose_environment: dict[str, str]
    environment: dict[str, str]

    @property
    def overridden(self) -> dict[str, tuple[str, str]]:
        return {
            name: (value, self.environment[name])
            for name, value in self.compose_environment.items()
            if self.environment.get(name) != value
        }


def container_for_here(
    name: str, service: dict[str, Any], variables: Mapping[str, str], here: Here
) -> Container:
    compose_environment = container_environment(service, variables)
    mounts = container_mounts(service)
    environment = {}
    for variable, value in compose_environment.items():
        if variable in BOUND_PORT_VARIABLES and value not in ("", "0"):
            value = str(here.ports.setdefault(f"{name}:{variable}", free_port()))
        environment[variable] = here.mount(here.address(value), mounts)
    image_environment = {
        variable: here.mount(value, mounts)
        for variable, value in dockerfile_final_stage()["ENV"].items()
        if variable not in ("PATH", "VIRTUAL_ENV")
    }
    image_environment["VIRTUAL_ENV"] = sys.prefix
    argv = container_argv(service, variables)
    return Container(name, argv, image_environment, compose_environment, environment)


def process_environment(container: Container) -> dict[str, str]:
    """The image's ENV, then compose's environment over it, as in the container; PATH finds the venv's
    programs first as the image's finds its venv's. Nothing else of the test's environment leaks in."""
    base = {"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}"}
    for name in ("HOME", "LANG", "LC_ALL", "TMPDIR"):
        if name in os.environ:
            base[name] = os.environ[name]
    return {**base, **container.image_environment, **container.environment}


def web_argv_here(argv: list[str], port: int) -> list[str]:
    """gunicorn's --bind (the container's 0.0.0.0:8000) on a free loopback port; every other word as is."""
    for index, word in enumerate(argv):
        if word in ("--bind", "-b") and index + 1 < len(argv):
            return [*argv[: index + 1], f"127.0.0.1:{port}", *argv[index + 2 :]]
        if word.startswith("--bind="):
            return [*argv[:index], f"--bind=127.0.0.1:{port}", *argv[index + 1 :]]
    pytest.fail(f"the web command gives gunicorn no --bind: {argv}")


def dot_env_for_this_run() -> dict[str, str]:
    """The .env an operator makes: .env.example with every secret compose requires filled in, plus this
    run's database name, bucket and storage keys (the values minio-init would create the app's user with)."""
    variables = env_file_parse((ROOT / ".env.example").read_text())
    compose_text = (ROOT / "docker-compose.yml").read_text()
    for name in set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*):?\?", compose_text)):
        if not variables.get(name):
            variables[name] = secrets.token_urlsafe(32)
    variables.update(ENV_FILE_CHANGES)
    variables.update(
        {
            "POSTGRES_DB": f"compose_{uuid.uuid4().hex[:12]}",
            "AWS_STORAGE_BUCKET_NAME": os.environ["AWS_STORAGE_BUCKET_NAME"],
            "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", ""),
            "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", ""),
            "AWS_S3_REGION_NAME": os.environ.get("AWS_S3_REGION_NAME")
            or variables.get("AWS_S3_REGION_NAME", ""),
            "DJANGO_ADMIN_USERNAME": "admin",
            "DJANGO_ADMIN_PASSWORD": secrets.token_urlsafe(18),
        }
    )
    return variables


# ------------------------------------------------------------------------------
# The stack: a fresh database, migrate twice, then web, worker and beat side by side
# ------------------------------------------------------------------------------
@dataclass
class Run:
    returncode: int
    output: str


@dataclass
class Process:
    container: Container
    argv: list[str]
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class Stack:
    variables: dict[str, str]
    containers: dict[str, Container]
    migrate_runs: list[Run]
    applied_after: list[set[tuple[str, str]]]
    processes: dict[str, Process] = field(default_factory=dict)
    web_port: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.web_port}{path}"


def _database_admin_connection():
    import psycopg

    return psycopg.connect(os.environ["DATABASE_URL"], autocommit=True, connect_timeout=10)


def _applied_migrations(database_url: str) -> set[tuple[str, str]]:
    import psycopg

    with psycopg.connect(database_url, connect_timeout=10) as conn:
        return {(app, name) for app, name in conn.execute("SELECT app, name FROM django_migrations")}


def _start(container: Container, argv: list[str], log_path: Path) -> Process:
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv,
            env=process_environment(container),
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return Process(container, argv, process, log_path)


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    """TERM to each whole group (gunicorn's and the pool's children too), in order, then KILL what is left
    after their grace: the shutdowns overlap."""
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)


def _wait_for(what: str, started: Process, ready: Any, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError, requests.RequestException):
            if ready():
                return
        if started.process.poll() is not None:
            pytest.fail(f"{what} exited with {started.process.returncode}:\n{started.log()[-4000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not seen within {timeout:.0f}s:\n{started.log()[-4000:]}")
        time.sleep(0.25)


def _run_migrate(container: Container) -> Run:
    completed = subprocess.run(
        container.argv,
        env=process_environment(container),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        timeout=300,
        check=False,
    )
    return Run(completed.returncode, completed.stdout)


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("compose")
    variables = dot_env_for_this_run()
    here = Here(
        database_url=os.environ["DATABASE_URL"],
        redis_url=os.environ["REDIS_URL"],
        s3_endpoint=os.environ["AWS_S3_ENDPOINT_URL"],
        # The service run has no MLflow server: a tracking store of the stack's own, as the tests use.
        mlflow_uri=f"sqlite:///{root / 'mlflow.db'}",
        mounts_root=root / "mounts",
    )
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    containers = {name: container_for_here(name, services[name], variables, here) for name in APP_CONTAINERS}
    database = variables["POSTGRES_DB"]
    with _database_admin_connection() as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    stack = Stack(variables, containers, migrate_runs=[], applied_after=[])
    try:
        migrate = containers["migrate"]
        stack.migrate_runs.append(_run_migrate(migrate))
        if stack.migrate_runs[0].returncode != 0:
            pytest.fail(f"migrate failed:\n{stack.migrate_runs[0].output[-4000:]}")
        stack.applied_after.append(_applied_migrations(migrate.environment["DATABASE_URL"]))
        # The image makes its data folder's celery/ at build; the volume starts as a copy of it.
        data_dir = Path(containers["beat"].environment["DATA_DIR"])
        (data_dir / "celery").mkdir(parents=True, exist_ok=True)
        stack.web_port = free_port()
        web, worker, beat = (containers[name] for name in ("web", "worker", "beat"))
        stack.processes["beat"] = _start(beat, beat.argv, root / "beat.log")
        stack.processes["worker"] = _start(worker, worker.argv, root / "worker.log")
        stack.processes["web"] = _start(web, web_argv_here(web.argv, stack.web_port), root / "web.log")
        # The second run goes while the app starts, as on a redeploy of the running stack.
        stack.migrate_runs.append(_run_migrate(migrate))
        stack.applied_after.append(_applied_migrations(migrate.environment["DATABASE_URL"]))
        _wait_for(
            "web /healthz", stack.processes["web"], lambda: requests.get(stack.url("/healthz"), timeout=5).ok
        )
        _wait_for(
            "the worker's ready line",
            stack.processes["worker"],
            lambda: " ready." in stack.processes["worker"].log(),
        )
        _wait_for(
            "beat's start", stack.processes["beat"], lambda: "beat: Starting" in stack.processes["beat"].log()
        )
        yield stack
    finally:
        # Beat is told first: nothing it sends after the worker stopped may stay in the shared broker.
        _stop(
            [stack.processes[name].process for name in ("beat", "web", "worker") if name in stack.processes]
        )
        with _database_admin_connection() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


# ------------------------------------------------------------------------------
# Tests
# ------------------------------------------------------------------------------
def test_interpolation_follows_compose_s_rules():
    variables = {"SET": "value", "EMPTY": ""}

    assert interpolate("${SET:-d} ${EMPTY:-d} ${UNSET:-d} ${EMPTY-d} ${UNSET-d}", variables) == "value d d  d"
    assert interpolate("${SET:+alt}|${EMPTY:+alt}|${EMPTY+alt}|$SET|$$SET|${UNSET:-${SET}}", variables) == (
        "alt||alt|value|$SET|value"
    )
    with pytest.raises(InterpolationError, match="EMPTY"):
        interpolate("${EMPTY:?set EMPTY}", variables)
    assert interpolate("${EMPTY?never}", variables) == ""


def test_compose_refuses_to_start_the_app_without_its_secrets():
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    variables = env_file_parse((ROOT / ".env.example").read_text())

    with pytest.raises(InterpolationError, match="SECRET_KEY"):
        container_environment(services["web"], {**variables, "SECRET_KEY": ""})


@on_the_services
def test_only_service_addresses_mounted_folders_and_bound_ports_differ_from_compose(stack):
    for name, container in stack.containers.items():
        touched = container.overridden
        assert set(touched) <= OVERRIDABLE, f"{name}: {sorted(set(touched) - OVERRIDABLE)} changed"
        for variable in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL"):
            if variable in touched:
                compose_value, here_value = touched[variable]
                # Only the host moved: the database name and the Redis db number are the compose file's.
                assert urlsplit(compose_value).path == urlsplit(here_value).path, variable
    database_url = stack.containers["web"].environment["DATABASE_URL"]
    assert urlsplit(database_url).path == f"/{stack.variables['POSTGRES_DB']}"


@on_the_services
def test_the_commands_run_are_the_compose_commands_but_for_gunicorn_s_bind_address(stack):
    for name in ("worker", "beat"):
        assert stack.processes[name].argv == stack.containers[name].argv
    web = stack.processes["web"]
    changed = [(a, b) for a, b in zip(web.container.argv, web.argv, strict=True) if a != b]
    assert [here for _, here in changed] == [f"127.0.0.1:{stack.web_port}"]
    assert "migrate" in " ".join(stack.containers["migrate"].argv)


@on_the_services
def test_migrate_applies_every_migration_and_a_second_run_changes_nothing(stack):
    from django.db.migrations.loader import MigrationLoader

    first, second = stack.migrate_runs
    on_disk = set(MigrationLoader(None, ignore_no_migrations=True).disk_migrations)

    assert first.returncode == 0
    assert "Applying " in first.output
    assert stack.applied_after[0] >= on_disk
    assert second.returncode == 0
    assert "No migrations to apply." in second.output
    assert "Applying " not in second.output
    assert stack.applied_after[1] == stack.applied_after[0]


@on_the_services
def test_migrate_creates_the_admin_account_once(stack):
    first, second = stack.migrate_runs

    assert "Admin login: admin with the password from DJANGO_ADMIN_PASSWORD." in first.output
    assert "the account exists" in second.output
    assert "DJANGO_ADMIN_PASSWORD" not in second.output
    answer = requests.post(
        stack.url("/api/auth/token/"),
        json={"username": "admin", "password": stack.variables["DJANGO_ADMIN_PASSWORD"]},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text


@on_the_services
def test_web_is_ready_on_postgresql_redis_and_s3_and_sees_the_worker(stack):
    answer = requests.get(stack.url("/readyz"), timeout=30)

    assert answer.status_code == 200, answer.text
    body = answer.json()
    backends = {name: check["backend"] for name, check in body["checks"].items()}
    assert backends == {"database": "postgresql", "broker": "redis", "storage": "S3Storage"}
    worker_name = f"worker@{socket.gethostname()}"
    assert worker_name in [worker["hostname"] for worker in body["workers"]]


@on_the_services
def test_the_worker_runs_a_batch_job_submitted_through_the_web_api(stack):
    from predictions.tests.batch_helpers import cancer_rows, csv_bytes
    from predictions.tests.helpers import trained_model

    trained = trained_model("cancer")
    session = requests.Session()
    token = session.post(
        stack.url("/api/auth/token/"),
        json={"username": "admin", "password": stack.variables["DJANGO_ADMIN_PASSWORD"]},
        timeout=30,
    ).json()["token"]
    session.headers["Authorization"] = f"Token {token}"
    uploaded = session.post(
        stack.url("/api/models/compose-check/versions/upload/"),
        files={"file": ("cancer.skops", trained.skops_bytes, "application/octet-stream")},
        data={"task": trained.task, "feature_schema": json.dumps(trained.feature_schema)},
        timeout=60,
    )
    assert uploaded.status_code == 201, uploaded.text
    rows = cancer_rows(BATCH_ROWS)

    submitted = session.post(
        stack.url("/api/models/compose-check/batch/"),
        files={"file": ("patients.csv", csv_bytes(rows), "text/csv")},
        data={"version": "1"},
        timeout=60,
    )

    assert submitted.status_code == 202, submitted.text
    worker = stack.processes["worker"]
    deadline = time.monotonic() + JOB_TIMEOUT
    while (job := session.get(submitted.json()["url"], timeout=30).json())["status"] not in (
        "succeeded",
        "failed",
    ):
        if time.monotonic() > deadline or worker.process.poll() is not None:
            pytest.fail(f"the job is still {job['status']}:\n{worker.log()[-4000:]}")
        time.sleep(0.25)
    assert job["status"] == "succeeded", f"{job}\n{worker.log()[-4000:]}"
    # The task logs its end just after the job's row says so.
    _wait_for(
        "the batch task's end in the worker's log",
        worker,
        lambda: re.search(
            r"predictions\.tasks\.batch_prediction_run_task\[[0-9a-f-]+\] succeeded", worker.log()
        ),
        timeout=JOB_TIMEOUT,
    )
    result = session.get(job["result_url"], timeout=60)
    assert result.status_code == 200, result.text
    lines = result.text.splitlines()
    assert len(lines) == BATCH_ROWS + 1
    assert [line.split(",", 1)[0] for line in lines[1:]] == [row["id"] for row in rows]


@on_the_services
def test_the_worker_answers_the_compose_healthcheck_and_serves_its_metrics(stack):
    from deploy import healthcheck

    assert healthcheck.worker_healthy()
    port = stack.containers["worker"].environment.get("CELERY_METRICS_PORT")
    assert port not in (None, "", "0"), "compose gives the worker no metrics port"
    metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=30)
    assert metrics.status_code == 200
    assert "mlops_tasks_total" in metrics.text


@on_the_services
def test_beat_writes_its_schedule_and_its_tasks_reach_the_worker(stack, monkeypatch):
    from deploy import healthcheck

    beat, worker = stack.processes["beat"], stack.processes["worker"]
    sent = re.compile(r"Sending due task [\w-]+ \(([\w.]+)\)")
    _wait_for("a task sent by beat", beat, lambda: sent.search(beat.log()), timeout=BEAT_SEND_TIMEOUT)
    task = sent.search(beat.log()).group(1)
    _wait_for(
        f"{task} run by the worker",
        worker,
        lambda: re.search(rf"{re.escape(task)}\[[0-9a-f-]+\] succeeded", worker.log()),
        timeout=JOB_TIMEOUT,
    )
    data_dir = Path(stack.containers["beat"].environment["DATA_DIR"])
    assert list((data_dir / "celery").glob("beat-schedule*"))
    monkeypatch.setenv("DATA_DIR", str(data_dir))
    assert healthcheck.beat_healthy()
