"""gunicorn's settings, the same for `make run`, the image's CMD and compose's web service (-c this file).

Each runner gives only `--bind`. Variables: WEB_CONCURRENCY (worker processes, 2), WEB_THREADS (threads
per worker, 4), WEB_READ_TIMEOUT (seconds a client has to send its request, 10), PROMETHEUS_MULTIPROC_DIR
(the workers' metric files, cleaned of dead processes' files at start), LOG_FORMAT (json: access and error
lines as JSON objects).
"""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    # The `gunicorn` script does not put the working folder on sys.path while it reads this file.
    sys.path.insert(0, str(ROOT))

from deploy.gunicorn_worker import read_timeout_from_env  # noqa: E402


def _positive_int(name: str, default: int) -> int:
    raw = os.environ.get(name, str(default))
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{name} must be a whole number of at least 1, not {raw!r}")
    return value


wsgi_app = "mlops_site.wsgi:application"
chdir = str(ROOT)
# gthread with a poller that reads each request before a thread takes it: an idle or slow client holds
# a connection slot, never a thread, and is dropped after WEB_READ_TIMEOUT (see gunicorn_worker.py).
worker_class = "deploy.gunicorn_worker.BoundedReadWorker"
workers = _positive_int("WEB_CONCURRENCY", 2)
threads = _positive_int("WEB_THREADS", 4)
# Checked here so that a bad value stops the start instead of every worker.
read_timeout_from_env()
# Open connections per worker, idle and slow ones included; beyond that the kernel's backlog queues them.
worker_connections = 1000
# A gthread worker's main loop reports every second whatever its threads do: this only catches a hung loop.
timeout = 60
graceful_timeout = 20
keepalive = 5
# Workers are replaced now and then, a few at a time, so nothing that grows slowly (a leak, a fragmented
# heap) lasts; the jitter keeps them from restarting together.
max_requests = 100_000
max_requests_jitter = 10_000
accesslog = "-"
# LOG_FORMAT=json makes the access and error lines JSON objects like the application's (gunicorn_logging.py).
logger_class = "deploy.gunicorn_logging.Logger"
# The default control socket is one path per user: a second checkout or a benchmark could not start.
control_socket_disable = True


def on_starting(server: object) -> None:
    # PROMETHEUS_MULTIPROC_DIR: every worker writes its metrics to a file there and /metrics adds them up.
    # A previous run's files would be added to this one's.
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        from monitoring.multiprocess import multiprocess_dir_prepare

        multiprocess_dir_prepare(path)


def child_exit(server: object, worker: object) -> None:
    # A dead worker's counters still count; only its live gauges must go (prometheus_client's bookkeeping).
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[attr-defined]


def worker_exit(server: object, worker: object) -> None:
    # PREDICTION_ROLLUP_DELAY_SECONDS above 0: the worker's rollup sums not yet written are written as it
    # stops (a restart after max_requests included). Loaded only if this worker served a prediction.
    rollups = sys.modules.get("predictions.live_rollups")
    if rollups is not None:
        rollups.pending.write()
