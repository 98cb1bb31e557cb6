"""RabbitMQ as the broker (docker-compose.rabbitmq.yml): the override as compose reads it, its settings
applied by a real rabbitmq-server, and killed workers that lose no job and finish each one once."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from amqp.exceptions import NotFound
from kombu import Connection

from jobs import engine
from mlops_site.celery import app, queue_lengths
from predictions.batch import job_specs as batch_job_specs
from predictions.tests.batch_helpers import cancer_rows, csv_bytes, job_start
from predictions.tests.helpers import make_model_version, trained_model
from tests.faults.conftest import SERVER_START_TIMEOUT, free_port, pool_children, require_program, wait_for
from tests.faults.test_workers import (
    BATCH_TASK,
    JOB_TIMEOUT,
    LONG_JOB_ROWS,
    _finished,
    _job,
    assert_stored_once,
)
from tests.test_compose import (
    APP_SERVICES,
    COMPOSE_FILE,
    ENV_FILES,
    check_jsonschema,
    interpolate_tree,
    read_env_file,
)

pytestmark = [pytest.mark.faults, pytest.mark.worker, pytest.mark.deployment]

ROOT = Path(__file__).resolve().parents[2]
OVERRIDE_FILE = ROOT / "docker-compose.rabbitmq.yml"
RABBITMQ_CONF = ROOT / "deploy" / "rabbitmq" / "rabbitmq.conf"
QUEUE = "celery"
VHOST = "mlops"


# ------------------------------------------------------------------------------------------------------
# The override as compose reads it: merged over docker-compose.yml, interpolated with each env file.
# ------------------------------------------------------------------------------------------------------
def compose_merge(base: Any, override: Any) -> Any:
    """`override` over `base` as compose merges files: mappings key by key, anything else replaced.

    (Compose merges a few sequences, such as ports and volumes, by their target; the override sets none on
    a service of the main file, which test_the_override_adds_to_the_app_services_only_what_it_must checks.)
    """
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = compose_merge(base[key], value) if key in base else value
        return merged
    return override


def _required_variables(*paths: Path) -> set[str]:
    return {name for path in paths for name in re.findall(r"\$\{([A-Z][A-Z0-9_]*):\?", path.read_text())}


def _variables(env_file: str) -> dict[str, str]:
    variables = read_env_file(ROOT / env_file)
    # The env files leave the secrets for the operator to fill in, RABBITMQ_PASSWORD among them.
    for name in _required_variables(COMPOSE_FILE, OVERRIDE_FILE):
        if not variables.get(name):
            variables[name] = "change-me"
    return variables


def merged_compose(env_file: str = ".env.example") -> dict[str, Any]:
    base = yaml.safe_load(COMPOSE_FILE.read_text())
    override = yaml.safe_load(OVERRIDE_FILE.read_text())
    return interpolate_tree(compose_merge(base, override), _variables(env_file))


def rabbitmq_conf() -> dict[str, str]:
    """deploy/rabbitmq/rabbitmq.conf's settings (the sysctl-like format: `key = value`, # comments)."""
    settings: dict[str, str] = {}
    for line in RABBITMQ_CONF.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            settings[key.strip()] = value.strip()
    return settings


def test_the_override_is_valid_alone_and_merged_over_the_main_file_with_each_env_file(tmp_path):
    documents = [OVERRIDE_FILE]
    for name in ENV_FILES:
        merged = tmp_path / f"compose-rabbitmq{name}.json"
        merged.write_text(json.dumps(merged_compose(name)))
        documents.append(merged)

    result = check_jsonschema(*documents)

    assert result.returncode == 0, result.stdout + result.stderr


def test_with_the_override_the_app_sends_tasks_to_rabbitmq_and_keeps_redis_for_its_caches():
    services = merged_compose()["services"]

    for name in APP_SERVICES:
        environment = services[name]["environment"]
        assert environment["CELERY_BROKER_URL"] == "amqp://mlops:change-me@rabbitmq:5672/mlops", name
        assert environment["REDIS_URL"] == "redis://redis:6379/0", name
        assert services[name]["depends_on"]["rabbitmq"] == {"condition": "service_healthy"}, name
        # Everything else the app waited for before still holds.
        assert {"postgres", "redis", "migrate"} <= set(services[name]["depends_on"]), name
    assert services["rabbitmq"]["environment"] == {
        "RABBITMQ_DEFAULT_USER": "mlops",
        "RABBITMQ_DEFAULT_PASS": "change-me",
        "RABBITMQ_DEFAULT_VHOST": "mlops",
    }


def test_the_override_adds_to_the_app_services_only_what_it_must():
    override = yaml.safe_load(OVERRIDE_FILE.read_text())["services"]

    assert set(override) == {"rabbitmq", *APP_SERVICES}
    for name in APP_SERVICES:
        assert set(override[name]) == {"environment", "depends_on"}, name
        assert set(override[name]["environment"]) == {"CELERY_BROKER_URL"}, name


def test_rabbitmq_keeps_its_queues_under_a_fixed_node_name_and_is_reachable_from_the_internal_network_only():
    compose = merged_compose()
    rabbitmq = compose["services"]["rabbitmq"]

    assert re.fullmatch(r"rabbitmq:\d+\.\d+\.\d+(-management)?-alpine", rabbitmq["image"])
    assert rabbitmq["profiles"] == ["core"]
    assert rabbitmq["hostname"] == "rabbitmq"
    assert rabbitmq["networks"] == ["internal"]
    assert "ports" not in rabbitmq
    assert "rabbitmq-data:/var/lib/rabbitmq" in rabbitmq["volumes"]
    assert "rabbitmq-data" in compose["volumes"]
    mounted = [v for v in rabbitmq["volumes"] if v.startswith("./deploy/rabbitmq/rabbitmq.conf:")]
    assert mounted == ["./deploy/rabbitmq/rabbitmq.conf:/etc/rabbitmq/conf.d/20-mlops.conf:ro"]
    assert rabbitmq["healthcheck"]["test"][:2] == ["CMD", "rabbitmq-diagnostics"]
    assert rabbitmq["restart"] == "unless-stopped"


@pytest.mark.parametrize("env_file", ENV_FILES)
def test_rabbitmq_lets_a_worker_hold_a_task_s_message_longer_than_the_app_lets_a_task_run(env_file):
    # What the app gives its longest task on Redis (the visibility timeout), as the deployed app reads it.
    worker = merged_compose(env_file)["services"]["worker"]
    longest_task_seconds = int(worker["environment"]["CELERY_VISIBILITY_TIMEOUT"])

    consumer_timeout_ms = int(rabbitmq_conf()["consumer_timeout"])

    assert consumer_timeout_ms > longest_task_seconds * 1000


# ------------------------------------------------------------------------------------------------------
# A rabbitmq-server of the module's own, on loopback ports, with deploy/rabbitmq/rabbitmq.conf.
# ------------------------------------------------------------------------------------------------------
def rabbitmq_scripts() -> Path:
    """The folder of the real rabbitmq-server and rabbitmqctl scripts; a missing server skips the module,
    or fails it under REQUIRE_SERVICES=True."""
    # Debian's /usr/sbin/rabbitmq-server is a wrapper that runs the server as the rabbitmq account on the
    # system's folders; the scripts it calls take their folders and ports from the environment.
    debian = Path("/usr/lib/rabbitmq/bin")
    if (debian / "rabbitmq-server").exists():
        return debian
    return Path(require_program("rabbitmq-server")).parent


def free_port_range(count: int) -> int:
    """The first of `count` consecutive free ports on loopback, below the ephemeral range."""
    for _ in range(200):
        first = secrets.randbelow(20000) + 10000
        with contextlib.ExitStack() as stack:
            try:
                for port in range(first, first + count):
                    stack.enter_context(socket.create_server(("127.0.0.1", port)))
            except OSError:
                continue
        return first
    pytest.fail(f"no {count} consecutive free ports on loopback")


class RabbitMQServer:
    """rabbitmq-server in a folder of its own: its node name, ports, Erlang cookie, data and logs.

    Erlang nodes find each other through epmd; this one gets its own, on its own port, so nothing is left
    running (or shared with another test run) once the server is stopped.
    """

    def __init__(self, scripts: Path, folder: Path) -> None:
        self.scripts = scripts
        self.folder = folder
        self.password = secrets.token_hex(12)
        self.port = free_port()
        self.epmd_port = next(port for port in iter(free_port, None) if port != self.port)
        self.processes: list[subprocess.Popen[bytes]] = []
        self.seconds_to_start = 0.0
        conf_d = folder / "conf.d"
        conf_d.mkdir(parents=True)
        # The deployment's settings, as the image reads them from its conf.d ...
        shutil.copy(RABBITMQ_CONF, conf_d / "20-mlops.conf")
        # ... over the test's own: loopback, the account and virtual host compose creates, no plugins.
        (folder / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
            f"default_user = mlops\ndefault_pass = {self.password}\ndefault_vhost = {VHOST}\n"
        )
        (folder / "enabled_plugins").write_text("[].\n")
        dist_port = free_port_range(1)
        cli_ports = free_port_range(4)
        self.env = {
            **os.environ,
            # The Erlang cookie the server creates and the CLI tools read.
            "HOME": str(folder),
            "RABBITMQ_NODENAME": f"rabbit-test-{secrets.token_hex(4)}@localhost",
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(dist_port),
            "RABBITMQ_CTL_DIST_PORT_MIN": str(cli_ports),
            "RABBITMQ_CTL_DIST_PORT_MAX": str(cli_ports + 3),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_CONFIG_FILE": str(folder / "rabbitmq.conf"),
            "RABBITMQ_CONFIG_FILES": str(conf_d),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(folder / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(folder / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(folder / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(folder / "mnesia"),
            "RABBITMQ_LOG_BASE": str(folder / "log"),
            "RABBITMQ_PID_FILE": str(folder / "rabbitmq.pid"),
        }

    @property
    def url(self) -> str:
        return f"amqp://mlops:{self.password}@127.0.0.1:{self.port}/{VHOST}"

    def log(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.folder.glob("*.log")))

    def _spawn(self, command: list[str], log_name: str) -> None:
        with (self.folder / log_name).open("ab") as log:
            self.processes.append(
                subprocess.Popen(
                    command,
                    env=self.env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )

    def start(self) -> None:
        epmd = shutil.which("epmd") or "/usr/lib/erlang/bin/epmd"
        self._spawn([epmd, "-port", str(self.epmd_port), "-address", "127.0.0.1"], "epmd.log")
        wait_for(
            lambda: self._accepts(self.epmd_port), "epmd's start", timeout=SERVER_START_TIMEOUT, log=self.log
        )
        self._spawn([str(self.scripts / "rabbitmq-server")], "server.log")
        wait_for(self._answers, "rabbitmq-server's start", timeout=SERVER_START_TIMEOUT * 2, log=self.log)

    @staticmethod
    def _accepts(port: int) -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False

    def _answers(self) -> bool:
        if any(p.poll() is not None for p in self.processes):
            pytest.fail(f"rabbitmq-server exited while starting:\n{self.log()[-3000:]}")
        try:
            with Connection(self.url, connect_timeout=1) as connection:
                connection.connect()
            return True
        except OSError:
            return False

    def cli(self, tool: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.scripts / tool), *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def stop(self) -> None:
        """`rabbitmqctl stop` (a clean shutdown), then whatever is left, epmd included, is killed."""
        server = self.processes[1] if len(self.processes) > 1 else None
        if server is not None and server.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.cli("rabbitmqctl", "-q", "stop", timeout=30)
                server.wait(timeout=30)
        for process in reversed(self.processes):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def rabbitmq(tmp_path_factory) -> Iterator[RabbitMQServer]:
    """A started rabbitmq-server for the module's tests; stopped at the end."""
    server = RabbitMQServer(rabbitmq_scripts(), tmp_path_factory.mktemp("rabbitmq"))
    started = time.monotonic()
    try:
        server.start()
        server.seconds_to_start = round(time.monotonic() - started, 1)
        yield server
    finally:
        server.stop()


def _purge(url: str) -> None:
    with Connection(url) as connection:
        channel = connection.channel()
        with contextlib.suppress(NotFound):
            # A queue that does not exist yet (the first test) has nothing to purge.
            channel.queue_purge(QUEUE)


def queued_job_ids(url: str, task_name: str) -> list[int]:
    """The job id of every `task_name` message ready in the queue, read without taking any: messages got
    but never acknowledged go back to the queue when the channel closes."""
    ids: list[int] = []
    with Connection(url) as connection:
        channel = connection.channel()
        channel.queue_declare(QUEUE, passive=True)
        while (raw := channel.basic_get(QUEUE, no_ack=False)) is not None:
            message = channel.message_to_python(raw)
            if message.headers.get("task") == task_name:
                args, _kwargs, _embed = message.decode()
                ids.append(int(args[0]))
    return sorted(ids)


@pytest.fixture
def rabbitmq_broker(rabbitmq, broker_in_test, monkeypatch) -> RabbitMQServer:
    """The module's RabbitMQ, its queue emptied, as this process's broker (sends and reads)."""
    _purge(rabbitmq.url)
    broker_in_test(rabbitmq.url)
    # What settings.py gives an amqp:// broker: no transport options (the Redis ones do not apply).
    monkeypatch.setitem(app.conf, "broker_transport_options", {})
    return rabbitmq


@pytest.fixture
def rabbitmq_batch_site(settings, shared_media, alice, rabbitmq_broker) -> RabbitMQServer:
    """A 'cancer' model and batch files cut in chunks of 10 rows, with messages sent to RabbitMQ."""
    settings.BATCH_CHUNK_ROWS = 10
    make_model_version(trained=trained_model("cancer"), name="cancer")
    return rabbitmq_broker


# ------------------------------------------------------------------------------------------------------
# The real server
# ------------------------------------------------------------------------------------------------------
def test_a_real_rabbitmq_applies_the_deployed_settings_and_passes_the_compose_healthcheck(rabbitmq, figures):
    applied = rabbitmq.cli("rabbitmqctl", "-q", "eval", "application:get_env(rabbit, consumer_timeout).")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert applied.stdout.strip() == f"{{ok,{rabbitmq_conf()['consumer_timeout']}}}"

    healthcheck = merged_compose()["services"]["rabbitmq"]["healthcheck"]["test"]
    assert healthcheck[0] == "CMD"
    started = time.monotonic()
    checked = rabbitmq.cli(*healthcheck[1:])
    assert checked.returncode == 0, checked.stdout + checked.stderr
    figures(
        seconds_to_start=rabbitmq.seconds_to_start,
        seconds_per_healthcheck=round(time.monotonic() - started, 1),
    )


def test_the_queue_length_gauge_counts_rabbitmq_s_waiting_messages(
    rabbitmq_batch_site, alice, transactional_db
):
    assert queue_lengths() == {"celery": 0}

    for _ in range(3):
        job_start(alice, csv_bytes(cancer_rows(5)))

    assert queue_lengths() == {"celery": 3}
    _purge(rabbitmq_batch_site.url)
    assert queue_lengths() == {"celery": 0}


# ------------------------------------------------------------------------------------------------------
# Killed workers (tests/faults/test_workers.py's two main cases, on RabbitMQ)
# ------------------------------------------------------------------------------------------------------
def test_on_rabbitmq_a_batch_job_whose_pool_child_is_killed_resumes_at_once_on_a_new_child(
    rabbitmq_batch_site, start_celery_worker, alice, figures
):
    worker = start_celery_worker(rabbitmq_batch_site.url, pool="prefork")
    rows = cancer_rows(LONG_JOB_ROWS)
    job = job_start(alice, csv_bytes(rows))
    wait_for(lambda: _job(job.pk).chunks_done >= 10, "progress", timeout=JOB_TIMEOUT, log=worker.log)
    # deploy/healthcheck.py's check of a worker container, over RabbitMQ, while the worker is busy.
    assert app.control.ping(destination=[worker.nodename], timeout=5.0), worker.log()[-3000:]

    (child,) = pool_children(worker.process.pid)
    os.kill(child, signal.SIGKILL)
    killed_at = time.monotonic()
    done_at_kill = _job(job.pk).chunks_done
    wait_for(
        lambda: _job(job.pk).attempts == 2 and _job(job.pk).chunks_done > done_at_kill,
        "the job's resumption on a new pool child",
        timeout=JOB_TIMEOUT,
        log=worker.log,
    )
    resumed = time.monotonic() - killed_at
    job = _finished(job.pk, worker)

    stored = assert_stored_once(job, rows)
    assert job.attempts == 2
    assert "its worker process died" in worker.log()
    assert queued_job_ids(rabbitmq_batch_site.url, BATCH_TASK) == []
    figures(seconds_to_resume=round(resumed, 1), rows_stored=stored, rows_sent=len(rows), attempts=2)


def test_on_rabbitmq_a_killed_worker_s_running_and_queued_jobs_go_back_to_the_queue_and_are_finished_once(
    rabbitmq_batch_site, start_celery_worker, alice, figures
):
    url = rabbitmq_batch_site.url
    first = start_celery_worker(url)
    long_rows = cancer_rows(LONG_JOB_ROWS)
    running = job_start(alice, csv_bytes(long_rows))
    queued_rows = cancer_rows(25)
    queued = [job_start(alice, csv_bytes(queued_rows)) for _ in range(3)]
    wait_for(lambda: _job(running.pk).chunks_done >= 10, "progress", timeout=JOB_TIMEOUT, log=first.log)

    os.killpg(first.process.pid, signal.SIGKILL)
    first.process.wait(timeout=10)
    killed_at = time.monotonic()
    # Unlike Redis (which waits out its visibility timeout), RabbitMQ puts the message the dead worker held
    # back in the queue as soon as its connection drops: no sweep is needed to send the job again.
    everything = sorted([running.pk, *(j.pk for j in queued)])
    wait_for(
        lambda: queued_job_ids(url, BATCH_TASK) == everything,
        "every job's message back in the queue",
        timeout=30,
        log=rabbitmq_batch_site.log,
    )
    requeued = time.monotonic() - killed_at
    # Nothing is left to end the dead worker's leases (the job's and the chunk its attempt was predicting):
    # they run out after LEASE_SECONDS. Here they are ended as a worker ends those of a dead pool child, so
    # the message RabbitMQ delivers again claims the job at once.
    assert engine.job_lease_end(batch_job_specs.JOBS, job_id=running.pk)
    second = start_celery_worker(url)

    for job in [running, *queued]:
        _finished(job.pk, second, "every job's end")
    drained = time.monotonic() - killed_at

    stored = assert_stored_once(_job(running.pk), long_rows)
    assert _job(running.pk).attempts == 2
    for job in queued:
        assert_stored_once(_job(job.pk), queued_rows)
        assert _job(job.pk).attempts == 1
    assert queued_job_ids(url, BATCH_TASK) == []
    figures(
        seconds_until_requeued=round(requeued, 1),
        seconds_to_drain_after_restart=round(drained, 1),
        jobs=4,
        rows_stored=stored + 3 * len(queued_rows),
        rows_sent=len(long_rows) + 3 * len(queued_rows),
    )
