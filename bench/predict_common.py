"""Shared by the prediction benchmarks: a throwaway site, its users, the breast-cancer forest, and servers
(gunicorn, a Celery worker) in their own process groups. wrk runs are in bench/wrk_load.py."""

from __future__ import annotations

import contextlib
import os
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


def api_users(count: int, *, prefix: str = "bench") -> tuple[Any, list[Any], list[str]]:
    """A staff owner and `count` API users, each with a token; the names are this process's own."""
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    users = get_user_model()
    owner = users.objects.create_user(f"{prefix}-owner-{os.getpid()}", is_staff=True)
    clients = [users.objects.create_user(f"{prefix}-{os.getpid()}-{i}") for i in range(count)]
    tokens = [Token.objects.create(user=user).key for user in clients]
    return owner, clients, tokens


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


def breast_cancer_dataset_version(*, data_dir: Path, user: Any, name: str) -> Any:
    """The breast-cancer table uploaded through our dataset service as a dataset version named `name`."""
    from datasets import services as dataset_services

    csv_path = data_dir / "breast_cancer.csv"
    breast_cancer_frame().to_csv(csv_path, index=False)
    with csv_path.open("rb") as handle:
        dataset_version, _ = dataset_services.dataset_version_create(
            name=name, file=handle, target_column=LABEL, created_by=user
        )
    return dataset_version


def version_trained(
    *, dataset_version: Any, name: str, algorithm: str, params: dict[str, Any], user: Any, seed: int = 42
) -> Any:
    """The model version a training run makes (Celery eager: in this process); exits when the run fails."""
    from models_registry.models import ModelVersion
    from training import services as training_services
    from training.models import TrainingRun

    run = training_services.training_run_create(
        dataset_version=dataset_version,
        model_name=name,
        algorithm=algorithm,
        params=params,
        created_by=user,
        seed=seed,
    )
    run = TrainingRun.objects.get(pk=run.pk)
    if run.status != TrainingRun.Status.SUCCEEDED:
        raise SystemExit(f"training run {run.pk} ended {run.status}: {run.error_message}")
    return ModelVersion.objects.select_related("registered_model").get(training_run=run)


def forest_train_and_promote(*, data_dir: Path, user: Any, name: str = MODEL_NAME) -> TrainedModel:
    """A 100-tree random forest through our training service, registered here and in MLflow, in production."""
    from models_registry import transition_services
    from models_registry.models import Stage

    dataset_version = breast_cancer_dataset_version(data_dir=data_dir, user=user, name=name)
    version = version_trained(
        dataset_version=dataset_version,
        name=name,
        algorithm="random_forest",
        params={"n_estimators": 100},
        user=user,
    )
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


def job_wait(
    model: Any, job_id: int, *, deadline: float, worker: Server, label: str, name: str, poll_seconds: float
) -> Any:
    """Poll a leased job (a jobs.models.LeasedJob `model`) that `worker` runs until it ends, saying how many
    rows it has done; the worker exiting or `deadline` (time.monotonic) passing is an error."""
    last = -1
    while time.monotonic() < deadline:
        job = model.objects.get(pk=job_id)
        if job.is_terminal:
            return job
        if worker.process.poll() is not None:
            raise RuntimeError(f"the worker exited ({worker.process.returncode}):\n{worker.log_tail()}")
        if job.rows_done != last and job.rows_done:
            say(f"{label}: {job.rows_done:,} of ~{job.rows_total:,} rows")
            last = job.rows_done
        time.sleep(poll_seconds)
    raise RuntimeError(f"{name} {job_id} did not finish in time:\n{worker.log_tail()}")


def gunicorn_command(
    port: int, *, workers: int | None, app: str | None = "mlops_site.wsgi:application"
) -> list[str]:
    """gunicorn on 127.0.0.1:`port` with the project's settings (worker class, threads, timeouts), as `make
    run` and compose use them; None leaves the app or the worker count to deploy/gunicorn.conf.py."""
    command = [str(VENV_BIN / "gunicorn"), "-c", str(ROOT / "deploy" / "gunicorn.conf.py")]
    if app is not None:
        command.append(app)
    if workers is not None:
        command += ["-w", str(workers)]
    return [*command, "-b", f"127.0.0.1:{port}", "--access-logfile", "/dev/null"]


def celery_broker_ready(data_dir: Path, env: dict[str, str]) -> dict[str, str]:
    """From now on this process sends tasks through the filesystem broker in `data_dir` instead of running
    them; returns the environment for the site's own processes (web, worker, beat)."""
    from mlops_site.celery import app

    app.conf.task_always_eager = False
    for folder in ("queue", "processed", "control"):  # the filesystem broker's folders, as make run does
        (data_dir / "celery" / folder).mkdir(parents=True, exist_ok=True)
    return {**env, "CELERY_TASK_ALWAYS_EAGER": "False"}


def celery_worker_command(name: str, *extra: str) -> list[str]:
    """A Celery worker of one process, named `name`@host."""
    return [
        str(VENV_BIN / "celery"), "-A", "mlops_site", "worker", "--concurrency", "1",
        "--loglevel", "WARNING", "-n", f"{name}@%h", *extra,
    ]  # fmt: skip


def temp_dir(prefix: str) -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix=prefix)
