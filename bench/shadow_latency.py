"""Shadow scoring and the client's latency: the predict API with the challenger in shadow mode and without.

    python bench/shadow_latency.py [--seconds 10] [--rounds 3] [--workers 2]

One throwaway site: the breast-cancer forest trained through our training service and promoted to
production (the champion), a logistic regression trained on the same data and promoted to staging (the
challenger), served by gunicorn with deploy/gunicorn.conf.py (as bench/predictions_api.py does), with a
real Celery worker and Celery beat beside it on the filesystem broker. Beat sweeps the new production
predictions into shadow batches every 10 s and the worker scores them while the load runs, on the same
cores: that is the point.

Each round measures the same load (wrk, one row per request, the load spread over 50 API users) with the
mode off and then on, at 1 connection (p50 and p99 latency) and at 8 (requests per second, p50, p99);
the order alternates between rounds. After each "on" phase the mode stays on until every production
prediction it made has its shadow prediction (the time this takes after the load stops is recorded),
then goes off, so the worker's leftovers never fall in an "off" measurement. p50 and p99 are medians
over the rounds. The aim: shadow mode does not change the client's latency (ratios near 1).
Results: a table on stdout and bench/results/shadow_latency.json. Every server binds 127.0.0.1 and is
stopped at the end, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import predict_common as common
from bench import report, wrk_load

RESULTS = common.ROOT / "bench" / "results" / "shadow_latency.json"
CONNECTIONS = (1, 8)


def _challenger_train_and_stage(*, model: common.TrainedModel, user: Any) -> int:
    """A logistic regression on the champion's dataset version, through the training service, in staging."""
    from models_registry import transition_services
    from models_registry.models import ModelVersion, Stage

    champion = ModelVersion.objects.get(registered_model__name=model.name, version=model.version)
    version = common.version_trained(
        dataset_version=champion.dataset_version,
        name=model.name,
        algorithm="logistic_regression",
        params={},
        user=user,
    )
    transition_services.model_version_transition(
        model_version=version, to_stage=Stage.STAGING, user=user, reason="benchmark challenger"
    )
    return version.version


def _mode_set(name: str, mode: str) -> Any:
    from models_registry import challenger_services
    from models_registry.models import RegisteredModel

    registered = challenger_services.challenger_mode_set(
        registered_model=RegisteredModel.objects.get(name=name), mode=mode, user=None
    )
    # Web processes see the change within their version-resolution TTL (0.5 s).
    time.sleep(1.0)
    return registered.challenger_since


def _shadow_counts(name: str, since: Any) -> tuple[int, int]:
    """Production API predictions made since the mode started, and how many have a shadow prediction."""
    from models_registry.models import Stage
    from predictions.models import Prediction, ShadowPrediction

    made = Prediction.objects.filter(
        model_version__registered_model__name=name,
        model_version__stage=Stage.PRODUCTION,
        channel="api",
        created_at__gte=since,
    ).count()
    shadowed = ShadowPrediction.objects.filter(
        model_version__registered_model__name=name, prediction_created_at__gte=since
    ).count()
    return made, shadowed


def _drain(name: str, since: Any, *, timeout: float, worker: common.Server) -> dict[str, Any]:
    """Wait until every production prediction since `since` has its shadow; the time it took."""
    started = time.monotonic()
    while True:
        made, shadowed = _shadow_counts(name, since)
        if made and shadowed >= made:
            return {
                "predictions": made,
                "shadowed": shadowed,
                "drained_seconds": round(time.monotonic() - started, 1),
            }
        if worker.process.poll() is not None:
            raise RuntimeError(f"the worker died:\n{worker.log_tail()}")
        if time.monotonic() - started > timeout:
            raise RuntimeError(
                f"{shadowed} of {made} predictions shadowed {timeout:.0f} s after the load:\n"
                + worker.log_tail()
            )
        time.sleep(0.5)


def _phase(url: str, script: Path, server: common.Server, seconds: int) -> dict[str, dict[str, Any]]:
    return {
        f"c{connections}": wrk_load.wrk_measured(
            server, url=url, script=script, connections=connections, seconds=seconds
        )
        for connections in CONNECTIONS
    }


def _row_line(label: str, result: dict[str, Any]) -> str:
    c1, c8 = result["c1"], result["c8"]
    return (
        f"{label:<12} {c1['p50_ms']:>9.2f} {c1['p99_ms']:>9.2f} {c8['p50_ms']:>9.2f} {c8['p99_ms']:>9.2f} "
        f"{c8['requests_per_second']:>9.1f} {c1['errors'] + c8['errors']:>7d}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=int, default=10, help="length of each measured run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of off and on, the order alternating")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of load before measuring")
    parser.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("WEB_CONCURRENCY", "2")),
        help="gunicorn worker processes (the README's recommendation for 2 cores: 2)",
    )
    parser.add_argument("--clients", type=int, default=50, help="API users (tokens) the load is spread over")
    parser.add_argument("--drain-timeout", type=float, default=180.0, help="seconds to wait for the shadows")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    if not 1 <= args.seconds <= 60 or not 1 <= args.rounds <= 10 or not 1 <= args.warmup <= 30:
        parser.error("--seconds must be 1..60, --rounds 1..10 and --warmup 1..30: the run stays bounded")
    wrk_load.wrk_path()
    common.sigterm_unwinds()
    started = time.monotonic()

    with common.temp_dir("bench-shadow-") as tmp, contextlib.ExitStack() as servers:
        data_dir = Path(tmp)
        env = common.django_configure(data_dir)
        database = common.database_label()
        from django.conf import settings

        owner, _, tokens = common.api_users(args.clients)
        common.say(f"training the champion (forest) and the challenger (logistic regression) ({database})")
        model = common.forest_train_and_promote(data_dir=data_dir, user=owner)
        challenger_version = _challenger_train_and_stage(model=model, user=owner)

        site_env = common.celery_broker_ready(data_dir, env)
        (port,) = common.free_ports(1)
        web_command = common.gunicorn_command(port, workers=args.workers)
        worker_command = common.celery_worker_command(f"shadow-{os.getpid()}")
        beat_command = [
            str(common.VENV_BIN / "celery"), "-A", "mlops_site", "beat", "--loglevel", "WARNING",
            "-s", str(data_dir / "celery" / "beat-schedule"),
        ]  # fmt: skip
        common.say(f"starting gunicorn -w {args.workers}, a Celery worker (1 process) and beat")
        web = servers.enter_context(common.server_running("web", web_command, site_env, data_dir))
        worker = servers.enter_context(common.server_running("worker", worker_command, site_env, data_dir))
        servers.enter_context(common.server_running("beat", beat_command, site_env, data_dir))

        frame = common.breast_cancer_frame()
        row = {name: float(frame.iloc[0][name]) for name in model.feature_names}
        body = json.dumps({"inputs": row}).encode()
        url = f"http://127.0.0.1:{port}/api/models/{model.name}/predict/"
        headers = [{"Content-Type": "application/json", "Authorization": f"Token {t}"} for t in tokens]
        answer = json.loads(web.wait_ready(url, body, headers[0]))
        script = wrk_load.wrk_script(data_dir / "ours.lua", body=body, header_sets=headers)

        load_before = report.load_average()
        common.say(f"warm-up {args.warmup}s")
        wrk_load.wrk_run(url=url, script=script, connections=8, seconds=args.warmup)
        runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
        drains: list[dict[str, Any]] = []
        for round_index in range(args.rounds):
            for mode in ("off", "on") if round_index % 2 == 0 else ("on", "off"):
                since = _mode_set(model.name, "shadow" if mode == "on" else "off")
                runs[mode].append(_phase(url, script, web, args.seconds))
                if mode == "on":
                    drains.append(_drain(model.name, since, timeout=args.drain_timeout, worker=worker))
                    _mode_set(model.name, "off")
            common.say(f"round {round_index + 1}/{args.rounds} done")
        load_after = report.load_average()
        from predictions.models import ShadowBatch

        batches = list(ShadowBatch.objects.values_list("status", "rows_scored"))

    results = {
        mode: {
            f"c{c}": {
                "p50_ms": round(statistics.median(r[f"c{c}"]["p50_ms"] for r in by_round), 3),
                "p99_ms": round(statistics.median(r[f"c{c}"]["p99_ms"] for r in by_round), 3),
                "requests_per_second": round(
                    sum(r[f"c{c}"]["requests"] - r[f"c{c}"]["non_2xx"] for r in by_round)
                    / sum(r[f"c{c}"]["seconds"] for r in by_round),
                    1,
                ),
                "errors": sum(r[f"c{c}"]["errors"] for r in by_round),
                "server_cpu_ms_per_request": round(
                    sum(r[f"c{c}"]["server_cpu_seconds"] for r in by_round)
                    * 1000
                    / max(1, sum(r[f"c{c}"]["requests"] for r in by_round)),
                    3,
                ),
                "rounds": [
                    {k: r[f"c{c}"][k] for k in ("p50_ms", "p99_ms", "requests_per_second")} for r in by_round
                ],
            }
            for c in CONNECTIONS
        }
        for mode, by_round in runs.items()
    }
    off, on = results["off"], results["on"]
    summary = {
        "p50_ratio_c1": round(on["c1"]["p50_ms"] / off["c1"]["p50_ms"], 3),
        "p99_ratio_c1": round(on["c1"]["p99_ms"] / off["c1"]["p99_ms"], 3),
        "p50_ratio_c8": round(on["c8"]["p50_ms"] / off["c8"]["p50_ms"], 3),
        "p99_ratio_c8": round(on["c8"]["p99_ms"] / off["c8"]["p99_ms"], 3),
        "rps_ratio_c8": round(on["c8"]["requests_per_second"] / off["c8"]["requests_per_second"], 3),
        "shadow_predictions": sum(d["shadowed"] for d in drains),
        "predictions_in_shadow_mode": sum(d["predictions"] for d in drains),
        "drained_seconds_max": max(d["drained_seconds"] for d in drains),
        "shadow_batches": len(batches),
        "shadow_batches_succeeded": sum(1 for status, _ in batches if status == "succeeded"),
        "shadow_rows_scored": sum(rows for _, rows in batches),
    }
    header = (
        f"{'shadow':<12} {'c1 p50 ms':>9} {'c1 p99 ms':>9} {'c8 p50 ms':>9} {'c8 p99 ms':>9} "
        f"{'c8 req/s':>9} {'errors':>7}"
    )
    print()
    print(header)
    print("-" * len(header))
    print(_row_line("off", off))
    print(_row_line("on", on))
    print()
    print(
        f"on / off: p50 {summary['p50_ratio_c1']:.2f}x and p99 {summary['p99_ratio_c1']:.2f}x at c=1, "
        f"p50 {summary['p50_ratio_c8']:.2f}x, p99 {summary['p99_ratio_c8']:.2f}x and req/s "
        f"{summary['rps_ratio_c8']:.2f}x at c=8"
    )
    print(
        f"shadow: {summary['shadow_predictions']:,} of {summary['predictions_in_shadow_mode']:,} predictions "
        f"scored by the challenger in {summary['shadow_batches']} batches; all in at most "
        f"{summary['drained_seconds_max']:.1f} s after the load stopped"
    )

    report.results_write(
        args.output,
        benchmark="shadow_latency",
        environment={
            "database": database,
            "workers": args.workers,
            "celery": "worker --concurrency 1 and beat (filesystem broker)",
            "shadow_batch_rows": settings.SHADOW_BATCH_ROWS,
            "seconds_per_run": args.seconds,
            "rounds": args.rounds,
            "api_clients": args.clients,
            "load_average_before": load_before,
            "load_average_after": load_after,
            "load_generator": "wrk -t1 with a Lua POST script",
        },
        started=started,
        model={
            "name": model.name,
            "champion": {"version": model.version, "algorithm": "random_forest", "n_estimators": 100},
            "challenger": {"version": challenger_version, "algorithm": "logistic_regression"},
            "features": len(model.feature_names),
        },
        first_answer=answer,
        summary=summary,
        results=results,
        drains=drains,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
