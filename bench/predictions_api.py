"""Single-row prediction benchmark: our predict API against `mlflow models serve` on the same model.

    python bench/predictions_api.py [--seconds 10] [--warmup 3] [--workers 2]

One run, side by side, with the same load generator (wrk and a Lua POST script) and the same row:
- ours: gunicorn with deploy/gunicorn.conf.py (`mlops_site.wsgi`, 2 workers, DEBUG=False) serving
  `POST /api/models/<name>/predict/` with token auth, throttling, validation, the version lookup, the
  onnxruntime model call and the prediction stored; SQLite and local files in a temp DATA_DIR, or the
  PostgreSQL of DATABASE_URL (and the Redis cache of REDIS_URL) when given;
- mlflow: `mlflow models serve -w 2 --env-manager local` of `models:/<name>/<mlflow version>` in the same
  tracking store, with its `dataframe_split` JSON; as shipped (keep-alive) and with a new connection per
  request (`Connection: close`), since uvicorn's kept-alive responses wait on delayed ACKs;
- floor: bench/floor_app.py, a bare Django view under the same gunicorn making the same model call.

The model is a 100-tree random forest on scikit-learn's breast-cancer data, trained through our training
service (so it is in our registry and in MLflow) and promoted to production. Each server gets a warm-up,
then a fixed-duration run at 1 connection (p50 latency) and at 8 (requests per second). Targets: our p50
at most half of mlflow's better p50; our requests/s at least three times mlflow's better figure.
Results: a table on stdout and bench/results/predictions_api.json. Every server binds 127.0.0.1 and is
stopped at the end, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import predict_common as common
from bench import report, wrk_load

RESULTS = common.ROOT / "bench" / "results" / "predictions_api.json"


def _payloads(model: common.TrainedModel) -> tuple[bytes, bytes, dict[str, float]]:
    frame = common.breast_cancer_frame()
    row = {name: float(frame.iloc[0][name]) for name in model.feature_names}
    ours = json.dumps({"inputs": row}).encode()
    mlflow = json.dumps(
        {"dataframe_split": {"columns": model.feature_names, "data": [list(row.values())]}}
    ).encode()
    return ours, mlflow, row


def _row_line(result: dict[str, Any]) -> str:
    c1, c8 = result["c1"], result["c8"]
    return (
        f"{result['label']:<26} {c1['p50_ms']:>9.2f} {c1['p99_ms']:>9.2f} {c1['requests_per_second']:>9.1f} "
        f"{c8['requests_per_second']:>10.1f} {c8['p50_ms']:>9.2f} {c8['server_cpu_ms_per_request']:>10.2f} "
        f"{c1['errors'] + c8['errors']:>7d}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=int, default=10, help="length of each measured run")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of load before measuring each server")
    parser.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("WEB_CONCURRENCY", "2")),
        help="gunicorn and mlflow worker processes (the README's recommendation for 2 cores: 2)",
    )
    parser.add_argument("--rounds", type=int, default=5, help="short runs per server, taken in turn")
    parser.add_argument("--clients", type=int, default=50, help="API users (tokens) the load is spread over")
    parser.add_argument(
        "--settings",
        default="mlops_site.settings",
        help="settings module of our server (to try a change: import mlops_site.settings, alter it)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    if not 1 <= args.seconds <= 60 or not 1 <= args.warmup <= 30 or not 1 <= args.rounds <= args.seconds:
        parser.error("--seconds must be 1..60, --warmup 1..30 and --rounds 1..seconds: the run stays bounded")
    wrk_load.wrk_path()
    common.sigterm_unwinds()
    started = time.monotonic()

    with common.temp_dir("bench-predictions-") as tmp, contextlib.ExitStack() as servers:
        data_dir = Path(tmp)
        env = common.django_configure(data_dir)
        ours_env = {**env, "DJANGO_SETTINGS_MODULE": args.settings}
        database = common.database_label()
        # One token per simulated client: each stays under the configured per-user rate, as real clients
        # would; the throttle still runs on every request.
        owner, clients, tokens = common.api_users(args.clients)
        common.say(f"training the forest through the training service ({database})")
        model = common.forest_train_and_promote(data_dir=data_dir, user=owner)
        ours_body, mlflow_body, _ = _payloads(model)
        spec = data_dir / "floor_model.json"
        spec.write_text(
            json.dumps(
                {
                    "onnx_path": str(model.onnx_path),
                    "onnx_sha256": model.onnx_sha256,
                    "feature_schema": model.feature_schema,
                    "classes": model.classes,
                }
            )
        )
        json_headers = {"Content-Type": "application/json"}
        answers: dict[str, Any] = {}

        ours_port, mlflow_port, floor_port = common.free_ports(3)
        common.say(
            f"starting ours and the floor (gunicorn -w {args.workers}), mlflow serve -w {args.workers}"
        )
        ours = servers.enter_context(
            common.server_running(
                "ours", common.gunicorn_command(ours_port, workers=args.workers), ours_env, data_dir
            )
        )
        mlflow_env = {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{data_dir / 'mlflow.db'}"}
        mlflow_command = [
            str(common.VENV_BIN / "mlflow"),
            "models",
            "serve",
            "-m",
            f"models:/{model.name}/{model.mlflow_version}",
            "-w",
            str(args.workers),
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(mlflow_port),
        ]
        mlflow = servers.enter_context(common.server_running("mlflow", mlflow_command, mlflow_env, data_dir))
        floor_env = {**env, "DJANGO_SETTINGS_MODULE": "bench.floor_settings", "BENCH_FLOOR_MODEL": str(spec)}
        floor = servers.enter_context(
            common.server_running(
                "floor",
                common.gunicorn_command(floor_port, workers=args.workers, app="bench.floor_app:application"),
                floor_env,
                data_dir,
            )
        )

        ours_url = f"http://127.0.0.1:{ours_port}/api/models/{model.name}/predict/"
        ours_headers = [{**json_headers, "Authorization": f"Token {token}"} for token in tokens]
        mlflow_url = f"http://127.0.0.1:{mlflow_port}/invocations"
        floor_url = f"http://127.0.0.1:{floor_port}/predict/"
        answers["ours"] = json.loads(ours.wait_ready(ours_url, ours_body, ours_headers[0]))
        answers["mlflow"] = json.loads(mlflow.wait_ready(mlflow_url, mlflow_body, json_headers))
        answers["floor"] = json.loads(floor.wait_ready(floor_url, ours_body, json_headers))

        def script(name: str, body: bytes, header_sets: list[dict[str, str]]) -> Path:
            return wrk_load.wrk_script(data_dir / f"{name}.lua", body=body, header_sets=header_sets)

        mlflow_script = script("mlflow", mlflow_body, [json_headers])
        targets = [
            wrk_load.Target("ours", ours, ours_url, script("ours", ours_body, ours_headers)),
            wrk_load.Target("mlflow (keep-alive)", mlflow, mlflow_url, mlflow_script),
            wrk_load.Target(
                "mlflow (Connection: close)", mlflow, mlflow_url, mlflow_script, ("-H", "Connection: close")
            ),
            wrk_load.Target("floor", floor, floor_url, script("floor", ours_body, [json_headers])),
        ]
        load_before = report.load_average()
        wrk_load.warm_up(targets, seconds=args.warmup)
        measured = wrk_load.interleaved(targets, seconds=args.seconds, rounds=args.rounds)
        load_after = report.load_average()
        results = [{"label": label, **runs} for label, runs in measured.items()]
        from predictions.models import Prediction

        stored = Prediction.objects.filter(user__in=clients).count()
        sent = sum(r[c]["requests"] - r[c]["non_2xx"] for r in results[:1] for c in ("c1", "c8"))

    by_label = {r["label"]: r for r in results}
    ours = by_label["ours"]
    floor_runs = by_label["floor"]
    mlflow_runs = [by_label["mlflow (keep-alive)"], by_label["mlflow (Connection: close)"]]
    mlflow_p50 = min(r["c1"]["p50_ms"] for r in mlflow_runs)
    mlflow_rps = max(r["c8"]["requests_per_second"] for r in mlflow_runs)
    predictions = {
        "ours": answers["ours"]["predictions"][0]["prediction"],
        "mlflow": answers["mlflow"]["predictions"][0],
        "floor": answers["floor"]["prediction"],
    }
    summary = {
        "our_p50_ms": ours["c1"]["p50_ms"],
        "mlflow_best_p50_ms": mlflow_p50,
        "p50_ratio": round(ours["c1"]["p50_ms"] / mlflow_p50, 3),
        "p50_target": "ours <= 0.5 x mlflow",
        "p50_target_met": ours["c1"]["p50_ms"] <= 0.5 * mlflow_p50,
        "our_rps_c8": ours["c8"]["requests_per_second"],
        "mlflow_best_rps_c8": mlflow_rps,
        "rps_ratio": round(ours["c8"]["requests_per_second"] / mlflow_rps, 2),
        "rps_target": "ours >= 3 x mlflow",
        "rps_target_met": ours["c8"]["requests_per_second"] >= 3 * mlflow_rps,
        # The bare Django view making the same onnxruntime call: what any Django answer costs at least.
        "cpu_ratio_to_floor_c1": round(
            ours["c1"]["server_cpu_ms_per_request"] / floor_runs["c1"]["server_cpu_ms_per_request"], 2
        ),
        "cpu_ratio_to_floor_c8": round(
            ours["c8"]["server_cpu_ms_per_request"] / floor_runs["c8"]["server_cpu_ms_per_request"], 2
        ),
        "cpu_ratio_target": "ours <= 2.5 x floor",
        "predictions_stored": stored,
        "successful_requests_measured": sent,
        "same_prediction": len({json.dumps(p) for p in predictions.values()}) == 1,
    }
    header = (
        f"{'server':<26} {'c1 p50 ms':>9} {'c1 p99 ms':>9} {'c1 req/s':>9} {'c8 req/s':>10} "
        f"{'c8 p50 ms':>9} {'cpu ms/req':>10} {'errors':>7}"
    )
    print()
    print(header)
    print("-" * len(header))
    for result in results:
        print(_row_line(result))
    print()
    print(
        f"p50 at c=1: ours {summary['our_p50_ms']:.2f} ms vs mlflow's best {mlflow_p50:.2f} ms "
        f"-> {summary['p50_ratio']:.2f}x (target <= 0.50: {'met' if summary['p50_target_met'] else 'MISSED'})"
    )
    print(
        f"req/s at c=8: ours {summary['our_rps_c8']:.1f} vs mlflow's best {mlflow_rps:.1f} "
        f"-> {summary['rps_ratio']:.2f}x (target >= 3: {'met' if summary['rps_target_met'] else 'MISSED'})"
    )
    print(
        f"server CPU per request: ours / floor {summary['cpu_ratio_to_floor_c1']:.2f}x at c=1, "
        f"{summary['cpu_ratio_to_floor_c8']:.2f}x at c=8 (target <= 2.5)"
    )
    print(f"predictions stored by ours: {stored}; same prediction everywhere: {summary['same_prediction']}")

    report.results_write(
        args.output,
        benchmark="predictions_api",
        environment={
            "database": database,
            "settings": args.settings,
            "cache": "redis" if os.environ.get("REDIS_URL") else "file-based",
            "prediction_log_durable": os.environ.get("PREDICTION_LOG_DURABLE", "True"),
            "prediction_rollup_delay_seconds": os.environ.get("PREDICTION_ROLLUP_DELAY_SECONDS", "1"),
            "workers": args.workers,
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
            "version": model.version,
            "mlflow_version": model.mlflow_version,
            "algorithm": "random_forest",
            "n_estimators": 100,
            "features": len(model.feature_names),
        },
        predictions=predictions,
        summary=summary,
        results=results,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
