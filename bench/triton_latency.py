"""One prediction through Triton's HTTP API against the same call to onnxruntime in-process.

    python bench/triton_latency.py [--requests 2000] [--warmup 200]

One throwaway site: the breast-cancer forest (100 trees) trained through our training service and promoted
to production, exported with `manage.py triton_export --production --backend python` and served by the
tritonserver of nvidia-pytriton (requirements-triton.txt; CPU, Python backend: model.py around the same
model.onnx with onnxruntime) on loopback, with the exported config (dynamic batching, one CPU instance).
The client sends one row per request over one kept-alive HTTP connection (KServe v2 JSON, the body
built beforehand), one request at a time; in-process is `InferenceSession.run` on the same row with the
session the app loads (artifacts.onnx_load). Both sides cycle over the same rows; medians and p99 over
`--requests` calls after `--warmup`. Triton's own statistics split its side into queueing (the dynamic
batcher's wait) and compute; the rest is HTTP, JSON and the Python backend's hand-over to its stub process.
The first rows' answers are compared: Triton's must equal in-process ones. Results: a table on stdout and
bench/results/triton_latency.json. tritonserver binds 127.0.0.1 and is stopped at the end, also on failure.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from bench import predict_common as common
from bench import report

RESULTS = common.ROOT / "bench" / "results" / "triton_latency.json"
CHECKED_ROWS = 50


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_us": round(statistics.median(ordered) * 1e6, 1),
        "p99_us": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e6, 1),
        "mean_us": round(statistics.fmean(ordered) * 1e6, 1),
    }


def _row_feeds(frame: Any, inputs: dict[str, str], index: int) -> dict[str, np.ndarray]:
    """One row as the graph's inputs: {input name: [[value]]} for each schema column."""
    return {
        name: np.asarray([[frame[column].iloc[index]]], dtype=np.float32) for column, name in inputs.items()
    }


def _body(feeds: dict[str, np.ndarray]) -> bytes:
    inputs = [
        {"name": n, "shape": list(v.shape), "datatype": "FP32", "data": v.ravel().tolist()}
        for n, v in feeds.items()
    ]
    return json.dumps({"inputs": inputs}).encode()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--requests", type=int, default=2000, help="measured calls on each side")
    parser.add_argument("--warmup", type=int, default=200, help="calls on each side before measuring")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    if not 100 <= args.requests <= 100_000 or not 0 <= args.warmup <= 10_000:
        parser.error("--requests must be 100..100000 and --warmup 0..10000: the run stays bounded")
    common.sigterm_unwinds()
    started = time.monotonic()
    load_before = report.load_average()

    with common.temp_dir("bench-triton-") as tmp:
        data_dir = Path(tmp)
        common.django_configure(data_dir)
        from django.core.management import call_command

        from ml import artifacts
        from models_registry.triton import local_server

        try:
            installation = local_server.installation()
        except local_server.TritonUnavailable as exc:
            raise SystemExit(str(exc)) from None
        owner, _, _ = common.api_users(0)
        common.say(f"training the forest through the training service ({common.database_label()})")
        model = common.forest_train_and_promote(data_dir=data_dir, user=owner)
        repository = data_dir / "triton"
        call_command(
            "triton_export",
            "--production",
            "--backend",
            "python",
            "--output",
            str(repository),
            stdout=io.StringIO(),
        )
        session = artifacts.onnx_load(model.onnx_path.read_bytes(), sha256=model.onnx_sha256)
        # Graph inputs keep the feature schema's order (ml.onnx_export); their names may be sanitised.
        inputs = dict(zip(model.feature_names, [i.name for i in session.get_inputs()], strict=True))
        outputs = [o.name for o in session.get_outputs()]
        frame = common.breast_cancer_frame()
        feeds = [_row_feeds(frame, inputs, i) for i in range(len(frame))]
        bodies = [_body(f) for f in feeds]
        total = args.warmup + args.requests

        common.say(f"in-process onnxruntime: {total} calls of one row")
        in_process = []
        for i in range(total):
            row = feeds[i % len(feeds)]
            begin = time.perf_counter()
            session.run(outputs, row)
            in_process.append(time.perf_counter() - begin)
        in_process = in_process[args.warmup :]

        common.say("starting tritonserver (nvidia-pytriton, CPU, Python backend)")
        with local_server.start(repository, models=[model.name], home=installation.home) as triton:
            for i in range(CHECKED_ROWS):
                answer = triton.infer(model.name, feeds[i])
                expected = session.run(outputs, feeds[i])
                if answer["label"].ravel().tolist() != list(expected[0]) or not np.array_equal(
                    answer["probabilities"], expected[1]
                ):
                    raise SystemExit(f"row {i}: Triton answered {answer}, onnxruntime {expected}")
            path = f"/v2/models/{model.name}/infer"
            connection = http.client.HTTPConnection("127.0.0.1", triton.http_port, timeout=10)
            headers = {"Content-Type": "application/json"}
            common.say(f"Triton over HTTP: {total} requests of one row, one at a time")
            through_triton = []
            stats_before: dict[str, Any] = {}
            for i in range(total):
                if i == args.warmup:
                    stats_before = triton.request("GET", f"/v2/models/{model.name}/stats")
                body = bodies[i % len(bodies)]
                begin = time.perf_counter()
                connection.request("POST", path, body, headers)
                answer = connection.getresponse()
                answer.read()
                through_triton.append(time.perf_counter() - begin)
                if answer.status != 200:
                    raise SystemExit(f"Triton answered {answer.status}")
            connection.close()
            stats_after = triton.request("GET", f"/v2/models/{model.name}/stats")
        through_triton = through_triton[args.warmup :]

    def server_side(key: str) -> float:
        def of(stats: dict[str, Any]) -> tuple[int, int]:
            entry = stats["model_stats"][0]["inference_stats"][key]
            return int(entry["count"]), int(entry["ns"])

        count_after, ns_after = of(stats_after)
        count_before, ns_before = of(stats_before) if stats_before else (0, 0)
        return round((ns_after - ns_before) / max(1, count_after - count_before) / 1e3, 1)

    triton_side = {
        "queue_mean_us": server_side("queue"),
        "compute_input_mean_us": server_side("compute_input"),
        "compute_infer_mean_us": server_side("compute_infer"),
        "compute_output_mean_us": server_side("compute_output"),
    }
    summary = {
        "in_process": _percentiles(in_process),
        "triton_http": _percentiles(through_triton),
        "triton_server_side": triton_side,
    }
    summary["median_ratio"] = round(
        summary["triton_http"]["median_us"] / summary["in_process"]["median_us"], 1
    )
    summary["median_overhead_us"] = round(
        summary["triton_http"]["median_us"] - summary["in_process"]["median_us"], 1
    )

    print()
    print(f"{'one row':<34}{'median':>10}{'p99':>10}{'mean':>10}")
    for label, key in (
        ("in-process onnxruntime", "in_process"),
        ("Triton HTTP (Python backend)", "triton_http"),
    ):
        side = summary[key]
        print(f"{label:<34}{side['median_us']:>8.0f}µs{side['p99_us']:>8.0f}µs{side['mean_us']:>8.0f}µs")
    queue, compute = triton_side["queue_mean_us"], triton_side["compute_infer_mean_us"]
    print(
        f"Triton: {summary['median_ratio']}x in-process at the median "
        f"(+{summary['median_overhead_us']:.0f} µs); "
        f"its own mean queue {queue:.0f} µs, compute {compute:.0f} µs"
    )
    report.results_write(
        args.output,
        benchmark="triton_latency",
        environment={
            "tritonserver": "nvidia-pytriton 0.7.0 (Triton 2.51.0), CPU, Python backend",
            "requests": args.requests,
            "warmup": args.warmup,
            "client": "http.client, one kept-alive connection, one request at a time, KServe v2 JSON",
            "load_average_before": load_before,
            "load_average_after": report.load_average(),
        },
        started=started,
        model={
            "name": model.name,
            "algorithm": "random_forest",
            "n_estimators": 100,
            "features": len(model.feature_names),
        },
        summary=summary,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
