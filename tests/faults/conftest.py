"""Fixtures of the fault-injection suite: throwaway servers to kill and restart, and the figures table."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mlops_site.celery import app

#: Every figure recorded by the suite's tests, in the order they ran: {"case": ..., <figure>: ...}.
FIGURES: list[dict[str, Any]] = []
SERVER_START_TIMEOUT = 30
# What settings.py gives a Redis broker, besides the visibility timeout.
REDIS_TRANSPORT_OPTIONS = {"socket_connect_timeout": 3, "socket_timeout": 10}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.faults)
            item.add_marker(pytest.mark.worker)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES:
        return
    terminalreporter.section("faults: what the system survived")
    for figure in FIGURES:
        values = ", ".join(f"{k}={v}" for k, v in figure.items() if k != "case")
        terminalreporter.write_line(f"{figure['case']}: {values}")
    path = Path(terminalreporter.config._tmp_path_factory.getbasetemp()) / "faults-results.json"
    path.write_text(json.dumps(FIGURES, indent=2))
    terminalreporter.write_line(f"(also in {path})")


@pytest.fixture
def figures(request) -> Callable[..., None]:
    """Returns a function recording this test's figures for the summary table."""

    def record(**values: Any) -> None:
        FIGURES.append({"case": request.node.name.removeprefix("test_"), **values})

    return record


def require_program(name: str) -> str:
    """The program's path; a missing one skips the test, or fails it under REQUIRE_SERVICES=True."""
    found = shutil.which(name)
    if found is None:
        message = f"{name} is not installed"
        if os.environ.get("REQUIRE_SERVICES") == "True":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition: Callable[[], Any], what: str, *, timeout: float, log: Callable[[], str] = str) -> Any:
    """Poll until `condition()` is truthy and return it; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        found = condition()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen in {timeout:.0f}s\n{log()[-3000:]}")
        time.sleep(0.1)


class RedisServer:
    """A redis-server of the test's own on a fixed port and folder, so it can be killed and started again."""

    def __init__(self, program: str, folder: Path, *, persistent: bool) -> None:
        self.program = program
        self.folder = folder
        self.persistent = persistent
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def log(self) -> str:
        path = self.folder / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self) -> None:
        # Persistence as an operator would set it for a broker: every write in the append-only file.
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else []
        with (self.folder / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(
                [self.program, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", *persistence, "--dir", str(self.folder), "--daemonize", "no"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        wait_for(self._answers, "redis-server's start", timeout=SERVER_START_TIMEOUT, log=self.log)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """A crash: SIGKILL, nothing saved beyond what the append-only file already holds."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


@pytest.fixture
def redis_server(tmp_path) -> Iterator[Callable[..., RedisServer]]:
    """Returns a function starting a throwaway redis-server (persistent or not); all die at teardown."""
    program = require_program("redis-server")
    servers: list[RedisServer] = []

    def start(*, persistent: bool = False) -> RedisServer:
        server = RedisServer(program, tmp_path / f"redis-{len(servers)}", persistent=persistent)
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.kill()


@pytest.fixture
def shared_media(settings, tmp_path) -> None:
    """Without S3, the test and its workers use the same media folder: the one under the workers' DATA_DIR."""
    if not settings.AWS_STORAGE_BUCKET_NAME:
        media = tmp_path / "worker-data" / "media"
        settings.STORAGES = {
            **settings.STORAGES,
            "default": {**settings.STORAGES["default"], "OPTIONS": {"location": str(media)}},
        }
        settings.MEDIA_ROOT = media


@pytest.fixture
def broker_in_test(monkeypatch) -> Callable[[str], None]:
    """Returns a function pointing this process's Celery app (sends, broker reads) at a broker URL."""
    monkeypatch.setitem(app.conf, "task_always_eager", False)

    def point(url: str) -> None:
        # Celery reads CELERY_BROKER_URL from the environment before its own setting.
        monkeypatch.setenv("CELERY_BROKER_URL", url)
        monkeypatch.setitem(app.conf, "broker_url", url)
        monkeypatch.setitem(app.conf, "broker_transport_options", REDIS_TRANSPORT_OPTIONS)
        # Connections and producers are pooled per app: new pools connect to this broker, and the old
        # ones come back at teardown.
        monkeypatch.setattr(app, "_pool", None)
        monkeypatch.setattr(app.amqp, "_producer_pool", None)

    return point


def pool_children(pid: int) -> list[int]:
    """The ids of a process's children (a prefork worker's pool)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()] if path.exists() else []


def postgres_bin_dir() -> Path:
    """The newest installed PostgreSQL server binaries; missing ones skip, or fail under REQUIRE_SERVICES."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if not found:
        require_program("initdb")
        return Path(shutil.which("initdb") or "").parent
    return found[-1].parent


class PostgresServer:
    """A PostgreSQL cluster of the test's own, stopped and started again on the same port and data."""

    def __init__(self, folder: Path) -> None:
        self.bin = postgres_bin_dir()
        self.folder = folder
        self.data = folder / "data"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.as_user: list[str] = []
        folder.mkdir(parents=True)
        if os.geteuid() == 0:
            # initdb refuses root; the server runs as the distribution's postgres account, as in
            # deploy/test_services.py.
            import pwd

            account = pwd.getpwnam("postgres")
            for parent in [folder, *folder.parents]:
                if parent == Path("/"):
                    break
                parent.chmod(parent.stat().st_mode | 0o011)
            os.chown(folder, account.pw_uid, account.pw_gid)
            self.as_user = [shutil.which("runuser") or "/usr/sbin/runuser", "-u", "postgres", "--"]
        subprocess.run(
            [*self.as_user, str(self.bin / "initdb"), "-D", str(self.data), "-U", "mlops", "--auth=trust",
             "-E", "UTF8", "--no-sync", "--no-instructions"],
            check=True, capture_output=True,
        )  # fmt: skip
        (self.data / "pg_hba.conf").write_text("local all all trust\nhost all all 127.0.0.1/32 trust\n")

    @property
    def url(self) -> str:
        # The database initdb always creates: nothing else is needed on a throwaway cluster.
        return f"postgres://mlops@127.0.0.1:{self.port}/postgres"

    def log(self) -> str:
        path = self.folder / "postgres.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self) -> None:
        with (self.folder / "postgres.log").open("ab") as log:
            self.process = subprocess.Popen(
                [*self.as_user, str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port),
                 "-k", str(self.folder), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        wait_for(self._ready, "PostgreSQL's start", timeout=SERVER_START_TIMEOUT, log=self.log)

    def _ready(self) -> bool:
        probe = [str(self.bin / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port), "-U", "mlops"]
        return subprocess.run(probe, check=False, timeout=5).returncode == 0

    def stop(self) -> None:
        """PostgreSQL's fast shutdown: every client is disconnected, then the server exits."""
        if self.process is not None and self.process.poll() is None:
            postmaster = int((self.data / "postmaster.pid").read_text().splitlines()[0])
            os.kill(postmaster, signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


@pytest.fixture
def postgres_server(tmp_path) -> Iterator[PostgresServer]:
    """A started PostgreSQL cluster of the test's own; stopped at teardown."""
    server = PostgresServer(tmp_path / "postgres")
    server.start()
    yield server
    server.stop()
    if server.process is not None and server.process.poll() is None:
        os.killpg(server.process.pid, signal.SIGKILL)


class TcpProxy:
    """A TCP proxy on loopback in front of a server, that can play it down (refused) or slow (silent).

    "up" forwards every byte; "down" closes every new and open connection at once; "slow" accepts
    connections and never answers, as a stalled server would.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.mode = "up"
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        threading.Thread(target=self._accept, name="fault-proxy", daemon=True).start()

    def set(self, mode: str) -> None:
        assert mode in ("up", "down", "slow")
        self.mode = mode
        if mode != "up":
            with self._lock:
                for sock in self._open:
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
                self._open.clear()

    def close(self) -> None:
        self._closed.set()
        self.set("down")
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.mode == "down":
                client.close()
            elif self.mode == "slow":
                with self._lock:
                    self._open.append(client)
            else:
                try:
                    server = socket.create_connection(self.target, timeout=5)
                except OSError:
                    client.close()
                    continue
                with self._lock:
                    self._open += [client, server]
                for source, sink in ((client, server), (server, client)):
                    threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.close()
