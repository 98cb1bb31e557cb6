"""Run the tritonserver binary of the nvidia-pytriton package on loopback, and talk to it over HTTP.

Used by the Triton proof (tests/test_tritonserver.py) and bench/triton_latency.py; an operator can use it
to try an exported repository (`--backend python`) without NVIDIA's container. nvidia-pytriton is not
installed in the app's virtualenv: it pins numpy below 2 because its Python-backend stub is built against
numpy 1.x (with numpy 2 the stub hands model.py garbled arrays), while the app runs numpy 2. So
requirements-triton.txt is installed into a folder of its own,

    .venv/bin/pip install --no-deps --target .venv/triton -r requirements-triton.txt

which holds the pytriton package (tritonserver, the Python backend, one stub per Python version) and
numpy 1.26. tritonserver is started in that folder: the stub's embedded Python has the working folder first
on sys.path, so it imports that numpy, and model.py (python_model.py) adds the app's site-packages, given
in MLOPS_TRITON_PYTHONPATH, for onnxruntime: the same onnxruntime the app predicts with.

pytriton itself prepares a backend folder per run the same way: the package's Python backend with the
stub of the running interpreter's version copied beside it; here the files are linked, not copied.
The HTTP calls are client.Client's (KServe v2 with urllib; tritonclient pins protobuf below 5).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from models_registry.triton import client
from models_registry.triton.client import TritonError

#: Where requirements-triton.txt is installed (override with TRITON_HOME).
DEFAULT_HOME = Path(sys.prefix) / "triton"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0


class TritonUnavailable(Exception):
    """The tritonserver binary, its Python stub or the Python library the stub links is not installed."""


@dataclass(frozen=True)
class Installation:
    home: Path
    server: Path
    backend: Path
    stub: Path
    libpython_dir: Path

    @property
    def libs(self) -> Path:
        return self.home / "nvidia_pytriton.libs"


def installation(home: Path | None = None) -> Installation:
    """The tritonserver binary, the Python backend and this interpreter's stub; TritonUnavailable if not."""
    home = Path(home or os.environ.get("TRITON_HOME") or DEFAULT_HOME)
    hint = "install it with: .venv/bin/pip install --no-deps --target .venv/triton -r requirements-triton.txt"
    root = home / "pytriton" / "tritonserver"
    server = root / "bin" / "tritonserver"
    if not server.is_file():
        raise TritonUnavailable(f"nvidia-pytriton's tritonserver is not in {home} ({hint})")
    if not (home / "numpy").is_dir():
        raise TritonUnavailable(f"numpy 1.x for Triton's Python stub is not in {home} ({hint})")
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise TritonUnavailable(f"nvidia-pytriton has no Python-backend stub for Python {version}")
    library = sysconfig.get_config_var("INSTSONAME") or f"libpython{version}.so.1.0"
    libdir = Path(sysconfig.get_config_var("LIBDIR") or "")
    if not (libdir / library).exists():
        raise TritonUnavailable(f"The stub needs {library}, which this Python does not have in {libdir}")
    return Installation(home, server, root / "backends" / "python", stub, libdir)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _site_packages() -> list[str]:
    """Folders of this environment Triton's model.py adds to sys.path (for onnxruntime)."""
    paths = sysconfig.get_paths()
    return list(dict.fromkeys([paths["purelib"], paths["platlib"]]))


class Server(client.Client):
    """A running tritonserver on loopback, in explicit model control mode; use `start`; its HTTP API
    through client.Client."""

    def __init__(
        self,
        *,
        process: subprocess.Popen[bytes],
        http_port: int,
        grpc_port: int,
        metrics_port: int,
        log: Path,
    ) -> None:
        self.process = process
        self.http_port = http_port
        self.grpc_port = grpc_port
        self.metrics_port = metrics_port
        self.log = log
        super().__init__(f"http://127.0.0.1:{http_port}", timeout=30.0)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@contextlib.contextmanager
def start(
    repository: Path,
    *,
    models: list[str] | tuple[str, ...] = (),
    home: Path | None = None,
    work: Path | None = None,
) -> Iterator[Server]:
    """tritonserver serving `repository` on free loopback ports with `models` loaded; stopped on exit."""
    found = installation(home)
    with contextlib.ExitStack() as stack:
        folder = (
            Path(work) if work else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="triton-")))
        )
        backends = folder / "backends" / "python"
        backends.mkdir(parents=True, exist_ok=True)
        sources = [found.backend / "libtriton_python.so", found.backend / "triton_python_backend_utils.py"]
        for source in [*sources, found.stub]:
            link = backends / source.name
            if not link.exists():
                link.symlink_to(source)
        http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
        log = folder / "tritonserver.log"
        command = [
            str(found.server),
            f"--model-repository={repository}",
            f"--backend-directory={folder / 'backends'}",
            "--model-control-mode=explicit",
            *[f"--load-model={m}" for m in models],
            "--http-address=127.0.0.1",
            f"--http-port={http_port}",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={grpc_port}",
            "--allow-metrics=true",
            f"--metrics-port={metrics_port}",
            "--exit-timeout-secs=5",
            "--log-info=false",
        ]
        environment = {
            **os.environ,
            "LD_LIBRARY_PATH": os.pathsep.join(
                filter(None, [str(found.libpython_dir), str(found.libs), os.environ.get("LD_LIBRARY_PATH")])
            ),
            "MLOPS_TRITON_PYTHONPATH": os.pathsep.join(_site_packages()),
        }
        with log.open("wb") as log_file:
            process = subprocess.Popen(  # noqa: S603 (the installed tritonserver, our arguments)
                command,
                cwd=found.home,
                env=environment,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        server = Server(
            process=process, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port, log=log
        )
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while not server.ready():
                if process.poll() is not None:
                    raise TritonError(
                        0, f"tritonserver exited with {process.returncode}:\n{server.log_tail()}"
                    )
                if time.monotonic() > deadline:
                    raise TritonError(
                        0, f"tritonserver not ready after {START_TIMEOUT_S} s:\n{server.log_tail()}"
                    )
                time.sleep(0.1)
            yield server
        finally:
            server.stop()
