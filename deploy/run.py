"""`make run`: prepare the data folder and database, then supervise gunicorn, a Celery worker and beat.

Run with the project's virtualenv Python from the project folder. Ctrl-C (SIGINT) or SIGTERM stops
all three; if one of them dies, the others are stopped too and the exit code is non-zero.

Variables read here (besides everything settings.py reads): HOST (default 127.0.0.1), PORT (8000),
WEB_CONCURRENCY, WEB_THREADS, WEB_READ_TIMEOUT (read by deploy/gunicorn.conf.py, checked here),
WORKER_CONCURRENCY (Celery worker processes, 2),
DJANGO_ADMIN_USERNAME / DJANGO_ADMIN_PASSWORD / DJANGO_ADMIN_EMAIL (the first admin account),
DEMO_MODEL (True: train and promote the demo model on the first start; False: do not).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

BASE_DIR = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
#: Seconds the three processes get to finish their current request or task after Ctrl-C.
STOP_GRACE = 30
#: Seconds gunicorn may take to import the project and answer /healthz.
START_TIMEOUT = 120


def say(message: str) -> None:
    print(f"[run] {message}", flush=True)


def env_positive_int(name: str, default: int) -> int:
    raw = os.environ.get(name, str(default))
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        sys.exit(f"[run] {name} must be a whole number of at least 1, not {raw!r}")
    return value


def data_dir() -> Path:
    return Path(os.environ.get("DATA_DIR") or BASE_DIR / "data").resolve()


def prepare_folders(data: Path) -> None:
    # SQLite does not create its folder, and the filesystem broker does not create its queue folders.
    for folder in (
        data,
        data / "celery" / "queue",
        data / "celery" / "processed",
        data / "celery" / "control",
    ):
        folder.mkdir(parents=True, exist_ok=True)


def ensure_secret_key(data: Path) -> None:
    """Generate SECRET_KEY once into DATA_DIR/secret_key, unless SECRET_KEY or SECRET_KEY_FILE is given."""
    if os.environ.get("SECRET_KEY") or os.environ.get("SECRET_KEY_FILE"):
        return
    key_file = data / "secret_key"
    if not key_file.exists():
        # O_EXCL: two starts at once must not both write a key, each using a different one.
        with contextlib.suppress(FileExistsError):
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(50))
            say(f"generated a SECRET_KEY in {key_file}")
    os.environ["SECRET_KEY_FILE"] = str(key_file)


def prepare() -> list[str]:
    """Migrate, collect static files, create the first admin, load the demo datasets and queue the demo
    model, in one process (deploy/prepare.py); returns the lines for the banner."""
    say("preparing the database, static files, admin account and demo data (deploy/prepare.py)")
    result = subprocess.run(
        [PYTHON, "deploy/prepare.py"], cwd=BASE_DIR, stdout=subprocess.PIPE, text=True, check=False
    )
    *lines, last = (result.stdout or "\n").rstrip("\n").split("\n")
    if lines:
        print("\n".join(lines), flush=True)
    if result.returncode != 0:
        if last:
            print(last, flush=True)
        sys.exit(f"[run] deploy/prepare.py failed with exit code {result.returncode}")
    try:
        return list(json.loads(last)["summary"])
    except (ValueError, KeyError, TypeError):
        sys.exit(f"[run] deploy/prepare.py ended without its summary: {last[:200]!r}")


def set_parent_death_signal() -> None:
    """Runs in the child before exec: if this supervisor is killed outright, the child gets SIGTERM."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


#: Celery's last start-up line ("worker@host ready."): after it the banner is not buried in start-up output.
WORKER_READY = re.compile(rb"\bready\.\s*$")


class Supervisor:
    def __init__(self) -> None:
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.pumps: list[threading.Thread] = []
        self.stopping = False
        self.worker_ready = threading.Event()

    def start(self, name: str, argv: list[str]) -> None:
        # Each in a session of its own: Ctrl-C reaches only us, and we stop them in order, with a grace.
        self.processes[name] = subprocess.Popen(
            argv,
            cwd=BASE_DIR,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=set_parent_death_signal,  # fork-unsafe with threads: pump threads start after
        )

    def pump_output(self) -> None:
        """Prefix each line with the process name; call after the last start() (preexec_fn vs threads)."""
        width = max(len(name) for name in self.processes)
        for name, process in self.processes.items():
            assert process.stdout is not None
            ready = self.worker_ready if name == "worker" else None
            thread = threading.Thread(
                target=_pump, args=(f"{name:<{width}} | ", process.stdout, ready), daemon=True
            )
            thread.start()
            self.pumps.append(thread)

    def first_exited(self) -> tuple[str, int] | None:
        for name, process in self.processes.items():
            code = process.poll()
            if code is not None:
                return name, code
        return None

    def stop(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        running = {name: p for name, p in self.processes.items() if p.poll() is None}
        if running:
            say("stopping " + ", ".join(running))
        for process in running.values():
            # Only the main processes: gunicorn lets its workers finish their requests and Celery its pool
            # children their tasks (warm shutdown); beat saves its schedule.
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for process in running.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
        for name, process in self.processes.items():
            # Whatever is left of each group (a gunicorn worker, a Celery pool child) goes too.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            if process.poll() is None:
                say(f"{name} did not stop within {STOP_GRACE}s and was killed")
            process.wait()
        for thread in self.pumps:
            thread.join(timeout=2)


def _pump(prefix: str, stream: IO[bytes], ready: threading.Event | None = None) -> None:
    for raw in iter(stream.readline, b""):
        sys.stdout.write(prefix + raw.decode(errors="replace"))
        sys.stdout.flush()
        if ready is not None and not ready.is_set() and WORKER_READY.search(raw):
            ready.set()


def wait_for_worker(supervisor: Supervisor, timeout: float = START_TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while not supervisor.worker_ready.wait(0.5):
        if supervisor.first_exited() is not None or time.monotonic() > deadline:
            return False
    return True


def banner(lines: list[str]) -> str:
    """The start-up summary in a frame, so it stands out of the three processes' output."""
    width = max(len(line) for line in lines) + 2
    rule = "=" * width
    return "\n".join(["", rule, *(f" {line}" for line in lines), rule, ""])


def wait_until_serving(url: str, supervisor: Supervisor) -> bool:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if supervisor.first_exited() is not None:
            return False
        with (
            contextlib.suppress(urllib.error.URLError, OSError),
            # Generous: the first request imports every view module, which takes seconds.
            urllib.request.urlopen(url, timeout=30) as response,  # noqa: S310 - our own loopback URL
        ):
            if response.status == 200:
                return True
        time.sleep(0.5)
    return False


def install_stop_handlers() -> None:
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # Explicit for SIGINT too: a shell that starts us in the background leaves SIGINT ignored.
    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def main() -> int:
    host = os.environ.get("HOST", "127.0.0.1")
    port = env_positive_int("PORT", 8000)
    # Checked here too, so that a bad value stops `make run` before anything starts.
    env_positive_int("WEB_CONCURRENCY", 2)
    env_positive_int("WEB_THREADS", 4)
    env_positive_int("WEB_READ_TIMEOUT", 10)
    task_workers = env_positive_int("WORKER_CONCURRENCY", 2)
    data = data_dir()
    supervisor = Supervisor()
    install_stop_handlers()
    try:
        prepare_folders(data)
        ensure_secret_key(data)
        summary_lines = prepare()

        # Workers, threads, timeouts: deploy/gunicorn.conf.py, shared with the image and compose.
        supervisor.start(
            "web", [PYTHON, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py", "--bind", f"{host}:{port}"]
        )
        supervisor.start(
            "worker",
            [PYTHON, "-m", "celery", "-A", "mlops_site", "worker", "--loglevel=INFO",
             f"--concurrency={task_workers}", "-n", "worker@%h"],
        )  # fmt: skip
        supervisor.start("beat", [PYTHON, "-m", "celery", "-A", "mlops_site", "beat", "--loglevel=INFO"])
        supervisor.pump_output()

        shown_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104 - a name to show
        url = f"http://{shown_host}:{port}/"
        if not wait_until_serving(url + "healthz", supervisor):
            say("gunicorn did not start serving; stopping")
            return 1
        if not wait_for_worker(supervisor):
            say("the Celery worker did not report ready; training and batch jobs wait until it does")
        summary = [
            f"MLOps is running at {url}",
            *summary_lines,
            f"Health: {url}readyz   Admin: {url}admin/   API docs: {url}api/docs/",
            "Ctrl-C stops the web server, the worker and beat.",
        ]
        print(banner(summary), flush=True)

        while True:
            exited = supervisor.first_exited()
            if exited is not None:
                name, code = exited
                say(f"{name} exited with code {code}; stopping the others")
                return code if code > 0 else 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        return 0
    finally:
        # Ctrl-C during the shutdown itself must not leave orphans behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        supervisor.stop()
        if supervisor.processes:
            say("stopped")


if __name__ == "__main__":
    sys.exit(main())
