"""Shared by the prediction benchmarks: a throwaway site, the breast-cancer forest, servers and wrk runs."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
SECRET_KEY = "benchmark-only-secret-key-0123456789abcdef"  # noqa: S105 (a throwaway site)
MODEL_NAME = "bench-breast-cancer"
LABEL = "diagnosis"
#: Variables that would send the benchmark to outside systems; DATABASE_URL and REDIS_URL are honoured.
_OUTSIDE = (
    "CELERY_BROKER_URL",
    "AWS_STORAGE_BUCKET_NAME",
    "AWS_S3_ENDPOINT_URL",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_ARTIFACT_ROOT",
)


def say(message: str) -> None:
    print(f"[bench] {message}", flush=True)


class Interrupted(BaseException):
    """SIGTERM arrived: unwinds like Ctrl-C so every server started here is stopped."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Interrupted(f"signal {signum}")


def sigterm_unwinds() -> None:
    signal.signal(signal.SIGTERM, _on_sigterm)


def site_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of the site under test: DEBUG off, a temp DATA_DIR, embedded unless told otherwise."""
    env = {k: v for k, v in os.environ.items() if k not in _OUTSIDE}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "mlops_site.settings",
            "DATA_DIR": str(data_dir),
            "SECRET_KEY": SECRET_KEY,
            "DEBUG": "False",
            "LOG_LEVEL": "WARNING",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "PYTHONDONTWRITEBYTECODE": "1",
            # mlflow serve starts `uvicorn` by name: the virtualenv's programs come first.
            "PATH": os.pathsep.join([str(VENV_BIN), os.environ.get("PATH", "")]),
        }
    )
    env.update(extra)
    return env


def django_configure(data_dir: Path, **extra: str) -> dict[str, str]:
    """Set up Django in this process (Celery eager) on the throwaway site and migrate it."""
    env = site_env(data_dir, **extra)
    for name in _OUTSIDE:
        os.environ.pop(name, None)
    os.environ.update(env)
    os.environ["CELERY_TASK_ALWAYS_EAGER"] = "True"
    sys.path.insert(0, str(ROOT))
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    return env


def database_label() -> str:
    from django.db import connection

    return connection.vendor


def breast_cancer_frame():
    """scikit-learn's bundled breast-cancer table (569 rows, 30 numeric features) with a text label."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True)
    frame = data.frame.drop(columns="target")
    frame[LABEL] = [str(data.target_names[t]) for t in data.target]
    return frame


@dataclass(frozen=True)
class TrainedModel:
    name: str
    version: int
    mlflow_version: int
    feature_names: list[str]
    onnx_path: Path
    onnx_sha256: str
    feature_schema: list[dict[str, Any]]
    classes: list[Any]
    skops_path: Path
    skops_sha256: str


def forest_train_and_promote(*, data_dir: Path, user: Any, name: str = MODEL_NAME) -> TrainedModel:
    """A 100-tree random forest through our training service, registered here and in MLflow, in production."""
    from datasets import services as dataset_services
    from models_registry import transition_services
    from models_registry.models import ModelVersion, Stage
    from training import services as training_services
    from training.models import TrainingRun

    frame = breast_cancer_frame()
    csv_path = data_dir / "breast_cancer.csv"
    frame.to_csv(csv_path, index=False)
    with csv_path.open("rb") as handle:
        dataset_version, _ = dataset_services.dataset_version_create(
            name=name, file=handle, target_column=LABEL, created_by=user
        )
    run = training_services.training_run_create(
        dataset_version=dataset_version,
        model_name=name,
        algorithm="random_forest",
        params={"n_estimators": 100},
        created_by=user,
        seed=42,
    )
    run = TrainingRun.objects.get(pk=run.pk)
    if run.status != TrainingRun.Status.SUCCEEDED:
        raise SystemExit(f"training run {run.pk} ended {run.status}: {run.error_message}")
    version = ModelVersion.objects.select_related("registered_model").get(training_run=run)
    if not version.has_onnx:
        raise SystemExit(f"{name} v{version.version} has no verified ONNX model ({version.onnx_status})")
    if version.mlflow_version is None:
        raise SystemExit(f"{name} v{version.version} was not registered in MLflow")
    transition_services.model_version_transition(
        model_version=version, to_stage=Stage.PRODUCTION, user=user, reason="benchmark"
    )
    # Copies of the verified files for the bench-only servers (the floor view, the batch baseline).
    from mlops_site import storage

    onnx_path, skops_path = data_dir / "model.onnx", data_dir / "model.skops"
    onnx_path.write_bytes(storage.read_bytes(version.onnx_key))
    skops_path.write_bytes(storage.read_bytes(version.skops_key))
    return TrainedModel(
        name=name,
        version=version.version,
        mlflow_version=version.mlflow_version,
        feature_names=[c["name"] for c in version.feature_schema],
        onnx_path=onnx_path,
        onnx_sha256=version.onnx_sha256,
        feature_schema=version.feature_schema,
        classes=list(version.classes or []),
        skops_path=skops_path,
        skops_sha256=version.skops_sha256,
    )


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports: all are held open until every one is chosen."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def http_post(url: str, body: bytes, headers: dict[str, str], timeout: float = 10.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310 (loopback)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (loopback)
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class Server:
    """A server process in its own process group, bound to 127.0.0.1; stop() ends the whole group."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.command = command
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def wait_ready(self, url: str, body: bytes, headers: dict[str, str], timeout: float = 120.0) -> bytes:
        """Poll until a real request answers 200; the server dying or the deadline passing is an error."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.process.returncode}):\n{self.log_tail()}")
            try:
                status, answer = http_post(url, body, headers, timeout=5)
            except (OSError, urllib.error.URLError) as exc:
                last = str(exc)
            else:
                if status == 200:
                    return answer
                last = f"HTTP {status}: {answer[:300]!r}"
            time.sleep(0.25)
        raise RuntimeError(
            f"{self.name} did not answer 200 within {timeout:.0f}s ({last}):\n{self.log_tail()}"
        )

    def stop(self, grace: float = 15.0) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=grace)
        # Whatever is left of the group (workers of a master that died) goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self._log.close()


@contextlib.contextmanager
def server_running(name: str, command: list[str], env: dict[str, str], log_dir: Path) -> Iterator[Server]:
    server = Server(name, command, env, log_dir)
    try:
        yield server
    finally:
        server.stop()


# wrk writes one line of JSON from the Lua `done` hook, so nothing depends on its human-readable output.
# The requests are formatted once in `init`; with several header sets (one API token per simulated client)
# they are sent in turn, so each client stays within its own rate limit, as many clients would.
_LUA = """
local f = assert(io.open(%(body_path)s, "rb"))
local body = f:read("*a")
f:close()
local header_sets = %(header_sets)s
local requests = {}
local next_request = 0
init = function(args)
  for i, headers in ipairs(header_sets) do
    -- Headers given on the command line (-H "Connection: close") apply to every set.
    for name, value in pairs(wrk.headers) do
      if headers[name] == nil then headers[name] = value end
    end
    requests[i] = wrk.format("POST", nil, headers, body)
  end
end
request = function()
  next_request = next_request %% #requests + 1
  return requests[next_request]
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %%d, "duration_us": %%d, "bytes": %%d, "errors_connect": %%d, ' ..
    '"errors_read": %%d, "errors_write": %%d, "errors_status": %%d, "errors_timeout": %%d, ' ..
    '"p50_us": %%d, "p90_us": %%d, "p99_us": %%d, "mean_us": %%.1f, "max_us": %%d}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
"""


def _lua_string(text: str) -> str:
    return json.dumps(text)  # a JSON string literal is a valid Lua string literal for plain text


def _lua_table(headers: dict[str, str]) -> str:
    return "{" + ", ".join(f"[{_lua_string(k)}] = {_lua_string(v)}" for k, v in headers.items()) + "}"


def wrk_script(path: Path, *, body: bytes, header_sets: list[dict[str, str]]) -> Path:
    """A wrk Lua script POSTing `body`, cycling through the header sets (e.g. one token per client)."""
    body_path = path.with_suffix(".body")
    body_path.write_bytes(body)
    tables = "{" + ", ".join(_lua_table(h) for h in header_sets) + "}"
    path.write_text(_LUA % {"body_path": _lua_string(str(body_path)), "header_sets": tables})
    return path


def wrk_path() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk (Debian) and run the benchmark again.")
    return found


def wrk_run(
    *, url: str, script: Path, connections: int, seconds: int, threads: int = 1, extra: tuple[str, ...] = ()
) -> dict[str, Any]:
    """One bounded wrk run: its counts, latency percentiles (ms) and successful requests per second."""
    command = [
        wrk_path(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        *extra,
        url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30, check=False)
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout[-800:]} {done.stderr[-800:]}")
    raw = json.loads(line.removeprefix("BENCH_JSON "))
    seconds_run = raw["duration_us"] / 1e6
    errors = sum(raw[k] for k in raw if k.startswith("errors_"))
    return {
        "connections": connections,
        "seconds": round(seconds_run, 2),
        "requests": raw["requests"],
        "errors": errors,
        "non_2xx": raw["errors_status"],
        "requests_per_second": round((raw["requests"] - raw["errors_status"]) / seconds_run, 1),
        "p50_ms": round(raw["p50_us"] / 1000, 3),
        "p90_ms": round(raw["p90_us"] / 1000, 3),
        "p99_ms": round(raw["p99_us"] / 1000, 3),
        "mean_ms": round(raw["mean_us"] / 1000, 3),
        "max_ms": round(raw["max_us"] / 1000, 3),
    }


def temp_dir(prefix: str) -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix=prefix)


@dataclass
class Target:
    """One thing to load: a running server, its URL and wrk script (and extra wrk options)."""

    label: str
    server: Server
    url: str
    script: Path
    wrk_extra: tuple[str, ...] = ()


def warm_up(targets: list[Target], *, seconds: int) -> None:
    for target in targets:
        say(f"{target.label}: warm-up {seconds}s")
        wrk_run(url=target.url, script=target.script, connections=8, seconds=seconds, extra=target.wrk_extra)


def interleaved(
    targets: list[Target], *, seconds: int, rounds: int, connections: tuple[int, ...] = (1, 8)
) -> dict[str, dict[str, Any]]:
    """Each target `seconds` at each concurrency, in `rounds` short runs taken in turn (rotating order).

    Load from anything else on the machine then falls on every target alike instead of on whichever ran
    during a busy spell. p50/p90/p99 are medians over the rounds; requests/s counts successful (2xx)
    requests over the total measured time.
    """
    per_run = max(1, seconds // rounds)
    runs: dict[str, dict[int, list[dict[str, Any]]]] = {
        t.label: {c: [] for c in connections} for t in targets
    }
    for round_index in range(rounds):
        shift = round_index % len(targets)
        order = targets[shift:] + targets[:shift]
        for c in connections:
            for target in order:
                server = target.server
                cpu = group_cpu_seconds(server.process.pid)
                run = wrk_run(
                    url=target.url,
                    script=target.script,
                    connections=c,
                    seconds=per_run,
                    extra=target.wrk_extra,
                )
                run["server_cpu_seconds"] = group_cpu_seconds(server.process.pid) - cpu
                if server.process.poll() is not None:
                    raise RuntimeError(f"{server.name} died during the run:\n{server.log_tail()}")
                runs[target.label][c].append(run)
        say(f"round {round_index + 1}/{rounds} done")
    return {label: {f"c{c}": runs_aggregate(by_c[c]) for c in connections} for label, by_c in runs.items()}


def runs_aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    import statistics

    seconds = sum(r["seconds"] for r in runs)
    ok = sum(r["requests"] - r["non_2xx"] for r in runs)
    cpu = sum(r["server_cpu_seconds"] for r in runs)
    return {
        "connections": runs[0]["connections"],
        # CPU time of the server's processes (master and workers) per request: what a request costs,
        # whatever else the machine was doing.
        "server_cpu_ms_per_request": round(cpu * 1000 / max(ok, 1), 3),
        "seconds": round(seconds, 2),
        "requests": sum(r["requests"] for r in runs),
        "errors": sum(r["errors"] for r in runs),
        "non_2xx": sum(r["non_2xx"] for r in runs),
        "requests_per_second": round(ok / seconds, 1),
        "p50_ms": round(statistics.median(r["p50_ms"] for r in runs), 3),
        "p90_ms": round(statistics.median(r["p90_ms"] for r in runs), 3),
        "p99_ms": round(statistics.median(r["p99_ms"] for r in runs), 3),
        "max_ms": max(r["max_ms"] for r in runs),
        "rounds": [{k: r[k] for k in ("requests_per_second", "p50_ms", "p99_ms")} for r in runs],
    }


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds used so far by the live processes of one process group (from /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        # After "pid (command)": state, ppid, pgrp, ..., utime and stime are the 12th and 13th fields.
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / ticks


def git_state() -> dict[str, Any]:
    """The commit measured, and whether the working tree had uncommitted changes to tracked files."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "uncommitted_changes": bool(git("status", "--porcelain", "-uno")),
    }


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]
