"""`make mlflow`: serve MLflow's tracking UI for the store the app logs to, on 127.0.0.1:5000.

The embedded default logs to a SQLite store and artifact folder in DATA_DIR (settings.py's defaults, read
the same way here); the UI reads the same files, so the app can keep running beside it. When
MLFLOW_TRACKING_URI names a tracking server, that server has its own UI and this says so instead.

Variables: DATA_DIR, MLFLOW_TRACKING_URI, MLFLOW_ARTIFACT_ROOT (as the app reads them), MLFLOW_UI_HOST
(127.0.0.1), MLFLOW_UI_PORT (5000). Set MLFLOW_UI_URL=http://127.0.0.1:5000 for the app to link run ids.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


def store_uris(environ: dict[str, str]) -> tuple[str, str]:
    """The tracking and artifact URIs the app uses under `environ` (see settings.py's MLflow section)."""
    data = Path(environ.get("DATA_DIR") or BASE_DIR / "data").resolve()
    tracking = environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{data / 'mlflow.db'}"
    artifacts = environ.get("MLFLOW_ARTIFACT_ROOT") or (data / "mlflow-artifacts").as_uri()
    return tracking, artifacts


def command(environ: dict[str, str]) -> list[str] | str:
    """The `mlflow server` command line, or the reason there is nothing to serve."""
    tracking, artifacts = store_uris(environ)
    if tracking.startswith(("http://", "https://", "databricks")):
        return f"MLFLOW_TRACKING_URI is a tracking server ({tracking.split('@')[-1]}): open its own UI."
    if tracking.startswith("sqlite:///") and not Path(tracking.removeprefix("sqlite:///")).exists():
        return f"No MLflow store yet at {tracking}: start the app (make run) and train a model first."
    host = environ.get("MLFLOW_UI_HOST", "127.0.0.1")
    port = environ.get("MLFLOW_UI_PORT", "5000")
    return [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", tracking,
        "--default-artifact-root", artifacts,
        "--host", host, "--port", port,
        "--workers", "1",
    ]  # fmt: skip


def main() -> int:
    found = command(dict(os.environ))
    if isinstance(found, str):
        print(f"[mlflow] {found}", file=sys.stderr)
        return 1
    host, port = found[found.index("--host") + 1], found[found.index("--port") + 1]
    print(f"[mlflow] MLflow UI on http://{host}:{port}/ for {found[found.index('--backend-store-uri') + 1]}")
    print(f"[mlflow] For links from the app's pages: MLFLOW_UI_URL=http://{host}:{port} make run")
    os.execv(found[0], found)  # noqa: S606 - our own fixed argv, no shell
    return 0  # not reached: execv replaces this process


if __name__ == "__main__":
    sys.exit(main())
