"""Live-quality benchmark: the rollups against a join of predictions and feedback, and the feedback API.

    python bench/feedback_quality.py [--predictions 1000000] [--feedback 200000] [--seconds 10]

On PostgreSQL: the server of DATABASE_URL when given, else a throwaway one started the way
deploy/test_services.py starts it (loopback only, stopped at the end). Three versions of one model (the
breast-cancer forest trained through our training service three times; the newest promoted), then:

- predictions: `--predictions` rows over the last 30 days (v1 30 to 10 days ago, v2 20 to 3, v3 the last
  8), one request per version and hour owned by one of `--clients` API users, stored with COPY (inputs {}
  as batch rows store them); the hourly prediction counts through the real `prediction_hours_add`;
- feedback: `--feedback` of them, picked at random and labelled oldest first (as labels tend to arrive)
  through the real `feedback_check` and `feedback_store` in chunks of 5,000, so every rollup row is
  written by the code that keeps it live; about 15% only say right or wrong.

1. Live quality: `model_quality` for windows all and 7d (median of `--repeats` calls) against the same
   figures (n, correct, accuracy, confusion counts, coverage) from one plain SQL query, predictions LEFT
   JOIN feedback grouped by version, predicted and true class (median of `--join-repeats`). The
   benchmark fails unless both give the same numbers, before and after the API runs below.
2. HTTP, one gunicorn (deploy/gunicorn.conf.py, `--workers`, DEBUG=False) on the same database, wrk at
   one connection, `--rounds` short runs per target taken in turn: `POST /api/models/<name>/predict/`,
   `POST /api/predictions/<id>/feedback/` naming a new prediction each call (created) and one already
   labelled with the same outcome (unchanged), and `GET /api/models/<name>/quality/` for both windows.

Targets: quality under 50 ms (selector and HTTP p50); the join at least 20x slower than the selector;
a feedback call's p50 at most 1.5x a prediction call's. Results: a table on stdout and
bench/results/feedback_quality.json. Exits 1 when a correctness check fails (not when a target is missed).
BENCH_NO_GIT=1 leaves the commit out of the JSON (no `git` is run).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import copy_seed, report, wrk_load
from bench import predict_common as common
from bench.postgres import postgres
from bench.processes import group_cpu_seconds

RESULTS = common.ROOT / "bench" / "results" / "feedback_quality.json"
MODEL_NAME = f"bench-feedback-{os.getpid()}"
#: Per version: the forest's size, the prediction window (hours before now: from, to), share of the
#: predictions, and how often the labelled predictions were right.
VERSIONS = (
    {"n_estimators": 20, "hours": (720, 240), "share": 0.3, "accuracy": 0.90},
    {"n_estimators": 50, "hours": (480, 72), "share": 0.3, "accuracy": 0.93},
    {"n_estimators": 100, "hours": (192, 0), "share": 0.4, "accuracy": 0.95},
)
QUALITY_TARGET_MS = 50.0
JOIN_RATIO_TARGET = 20.0
FEEDBACK_RATIO_TARGET = 1.5
STORE_CHUNK = 5000
#: Feedback ids handed to one wrk run per second of it: more than a single connection can use.
IDS_PER_SECOND = 3000


# --------------------------------------------------------------------------------------------------
# Seeding
# --------------------------------------------------------------------------------------------------
def versions_train(*, data_dir: Path, user: Any) -> list[Any]:
    """Three versions of one model through the training service; the newest is promoted to production."""
    from models_registry import transition_services
    from models_registry.models import Stage

    dataset_version = common.breast_cancer_dataset_version(data_dir=data_dir, user=user, name=MODEL_NAME)
    versions = [
        common.version_trained(
            dataset_version=dataset_version,
            name=MODEL_NAME,
            algorithm="random_forest",
            params={"n_estimators": spec["n_estimators"]},
            user=user,
            seed=42 + index,
        )
        for index, spec in enumerate(VERSIONS)
    ]
    newest = versions[-1]
    if not newest.has_onnx:
        raise SystemExit(f"{MODEL_NAME} v{newest.version} has no verified ONNX model ({newest.onnx_status})")
    transition_services.model_version_transition(
        model_version=newest, to_stage=Stage.PRODUCTION, user=user, reason="benchmark"
    )
    return versions


@dataclass
class Seeded:
    """What the benchmark needs to remember of the seeded rows."""

    classes: list[str]
    prediction_ids: Any  # numpy arrays, in id order
    owner_index: Any
    predicted: Any  # index into classes
    labelled: Any  # bool per prediction
    true_index: Any  # index into classes, -1 when not labelled


def predictions_seed(
    *, versions: list[Any], clients: list[Any], total: int, seed: int = 0
) -> tuple[Seeded, dict[str, Any]]:
    """COPY `total` predictions (one request per version and hour), count them per hour with the service."""
    import numpy as np
    from django.db.models import Max
    from django.utils import timezone

    from predictions.models import Prediction, PredictionRequest

    # Ids after any already there (a DATABASE_URL given may hold rows of other runs).
    first_request = (PredictionRequest.objects.aggregate(top=Max("id"))["top"] or 0) + 1
    first_prediction = (Prediction.objects.aggregate(top=Max("id"))["top"] or 0) + 1
    rng = np.random.default_rng(seed)
    now = timezone.now()
    classes = [str(c) for c in versions[-1].classes]
    if len(classes) != 2:
        raise SystemExit(f"expected a binary model, got classes {classes}")
    counts = [int(total * spec["share"]) for spec in VERSIONS]
    counts[-1] = total - sum(counts[:-1])
    version_index = np.concatenate([np.full(n, i) for i, n in enumerate(counts)])
    hours_ago = np.concatenate(
        [rng.uniform(spec["hours"][1], spec["hours"][0], n) for spec, n in zip(VERSIONS, counts, strict=True)]
    )
    # Ids grow with time, as they would.
    order = np.argsort(-hours_ago, kind="stable")
    version_index, hours_ago = version_index[order], hours_ago[order]
    now_us = np.datetime64(now.replace(tzinfo=None), "us")
    created = now_us - np.round(hours_ago * 3600e6).astype("timedelta64[us]")
    hours = created.astype("datetime64[h]")
    predicted = (rng.random(total) < 0.37).astype(np.int64)  # 1: the second class
    confidence = np.round(rng.uniform(0.5, 1.0, total), 6)
    first = np.where(predicted == 0, confidence, np.round(1 - confidence, 6))

    # One request per (version, hour), owned by one API user; rows numbered from 0 within it.
    keys = version_index * 10**8 + hours.astype(np.int64)
    request_keys, inverse, request_sizes = np.unique(keys, return_inverse=True, return_counts=True)
    request_ids = inverse + first_request
    by_request = np.argsort(inverse, kind="stable")
    starts = np.concatenate([[0], np.cumsum(request_sizes)[:-1]])
    row_index = np.empty(total, dtype=np.int64)
    row_index[by_request] = np.arange(total) - starts[inverse[by_request]]
    request_owner = rng.integers(len(clients), size=len(request_keys))
    owner_index = request_owner[inverse]
    request_version = request_keys // 10**8
    request_hour = (request_keys % 10**8).astype("datetime64[h]")

    client_ids = np.array([c.pk for c in clients])
    version_ids = np.array([v.pk for v in versions])
    request_lines = [
        f"{rid}\tbench-{rid}\t{user}\tapi\t{version}\t\t{n}\t1.0\t{hour}:00:00+00:00\n"
        for rid, user, version, n, hour in zip(
            range(first_request, first_request + len(request_keys)),
            client_ids[request_owner].tolist(),
            version_ids[request_version].tolist(),
            request_sizes.tolist(),
            np.datetime_as_string(request_hour).tolist(),
            strict=True,
        )
    ]
    labels = np.array([f'"{c}"' for c in classes])[predicted]
    prediction_lines = [
        f"{pk}\t{rid}\t{row}\t{user}\t{version}\tapi\t{{}}\t{label}\t"
        f'{{"{classes[0]}": {p0}, "{classes[1]}": {round(1 - p0, 6)}}}\t[]\t{p}\t{at}+00:00\n'
        for pk, rid, row, user, version, label, p0, p, at in zip(
            range(first_prediction, first_prediction + total),
            request_ids.tolist(),
            row_index.tolist(),
            client_ids[owner_index].tolist(),
            version_ids[version_index].tolist(),
            labels.tolist(),
            first.tolist(),
            confidence.tolist(),
            np.datetime_as_string(created, unit="us").tolist(),
            strict=True,
        )
    ]
    copy_seed.predictions_copy(
        request_lines=request_lines,
        prediction_lines=prediction_lines,
        hours=[
            (int(version_ids[version]), hour.astype("datetime64[us]").item().replace(tzinfo=dt.UTC), int(n))
            for version, hour, n in zip(request_version, request_hour, request_sizes, strict=True)
        ],
    )
    seeded = Seeded(
        classes=classes,
        prediction_ids=np.arange(first_prediction, first_prediction + total),
        owner_index=owner_index,
        predicted=predicted,
        labelled=np.zeros(total, dtype=bool),
        true_index=np.full(total, -1, dtype=np.int64),
    )
    return seeded, {"requests": len(request_keys), "version_index": version_index}


def feedback_seed(
    *, seeded: Seeded, version_index: Any, count: int, user: Any, seed: int = 1
) -> dict[str, Any]:
    """Label `count` predictions picked at random through feedback_check and feedback_store, in chunks."""
    import numpy as np

    from feedback import services as feedback_services
    from feedback.models import Source

    rng = np.random.default_rng(seed)
    total = len(seeded.prediction_ids)
    # Labels arrive roughly in the order of the predictions they name (oldest first), as an import would.
    chosen = np.sort(rng.choice(total, size=count, replace=False))
    accuracy = np.array([spec["accuracy"] for spec in VERSIONS])[version_index[chosen]]
    right = rng.random(count) < accuracy
    true_index = np.where(right, seeded.predicted[chosen], 1 - seeded.predicted[chosen])
    # Most name the true class; some only say right or wrong (binary: "wrong" names the other class).
    only_correct = rng.random(count) < 0.15
    created = 0
    started = time.perf_counter()
    for start in range(0, count, STORE_CHUNK):
        items = []
        for j in range(start, min(start + STORE_CHUNK, count)):
            item: dict[str, Any] = {"prediction": int(seeded.prediction_ids[chosen[j]])}
            if only_correct[j]:
                item["correct"] = bool(right[j])
            else:
                item["true_label"] = seeded.classes[true_index[j]]
            items.append(item)
        result = feedback_services.feedback_check(items, user=user)
        if result.problems:
            raise RuntimeError(f"seeding feedback was refused: {result.problems[:3]}")
        stored = feedback_services.feedback_store(result.valid, user=user, source=Source.FILE)
        created += sum(1 for s in stored if s.status == "created")
        if (start // STORE_CHUNK) % 10 == 9:
            common.say(f"feedback: {start + STORE_CHUNK:,} of {count:,}")
    seconds = time.perf_counter() - started
    seeded.labelled[chosen] = True
    seeded.true_index[chosen] = true_index
    if created != count:
        raise RuntimeError(f"seeding created {created} feedback rows, expected {count}")
    return {"rows": count, "seconds": round(seconds, 2), "rows_per_second": round(count / seconds, 1)}


# --------------------------------------------------------------------------------------------------
# Part 1: rollups against the join
# --------------------------------------------------------------------------------------------------
JOIN_SQL = """
SELECT p.model_version_id, p.prediction #>> '{}', f.true_label, count(*)
FROM predictions_prediction p
LEFT JOIN feedback_feedback f ON f.prediction_id = p.id
WHERE p.model_version_id = ANY(%s) AND p.created_at >= %s
GROUP BY 1, 2, 3
"""


def join_figures(version_ids: list[int], since: dt.datetime | None) -> dict[int, dict[str, Any]]:
    """Per version: labelled cells {(predicted, true): n}, n, correct and coverage, by one plain query."""
    from django.db import connection

    lower = since or dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    figures: dict[int, dict[str, Any]] = {
        pk: {"cells": {}, "n": 0, "correct": 0, "predicted": 0} for pk in version_ids
    }
    with connection.cursor() as cursor:
        cursor.execute(JOIN_SQL, [version_ids, lower])
        for version_id, predicted, actual, n in cursor.fetchall():
            one = figures[version_id]
            one["predicted"] += n
            if actual is None:
                continue
            one["cells"][(predicted, actual)] = n
            one["n"] += n
            one["correct"] += n if predicted == actual else 0
    for one in figures.values():
        one["accuracy"] = one["correct"] / one["n"] if one["n"] else None
    return figures


def selector_figures(answer: list[dict[str, Any]], versions: list[Any]) -> dict[int, dict[str, Any]]:
    """The same figures read from model_quality's (or the API's) answer."""
    by_number = {v.version: v.pk for v in versions}
    figures = {}
    for entry in answer:
        live = entry["live"]
        labels, matrix = live["confusion"]["labels"], live["confusion"]["matrix"]
        cells = {
            (predicted, actual): matrix[i][j]
            for i, predicted in enumerate(labels[: len(matrix)])
            for j, actual in enumerate(labels)
            if matrix[i][j]
        }
        figures[by_number[entry["version"]]] = {
            "cells": cells,
            "n": live["n"],
            "correct": live["correct"],
            "accuracy": live["accuracy"],
            "predicted": live["coverage"]["predicted"],
            "labelled": live["coverage"]["labelled"],
        }
    return figures


def figures_compare(ours: dict[int, dict[str, Any]], join: dict[int, dict[str, Any]]) -> list[str]:
    """Every difference between the two, as text; empty when they agree."""
    problems = []
    for pk, theirs in join.items():
        mine = ours.get(pk)
        if mine is None:
            problems.append(f"version id {pk}: missing from the rollup answer")
            continue
        for name in ("n", "correct", "predicted", "cells"):
            if mine[name] != theirs[name]:
                problems.append(f"version id {pk}: {name} rollups {mine[name]} != join {theirs[name]}")
        if mine["labelled"] != theirs["n"]:
            problems.append(f"version id {pk}: labelled {mine['labelled']} != join {theirs['n']}")
        if (mine["accuracy"] is None) != (theirs["accuracy"] is None) or (
            mine["accuracy"] is not None and abs(mine["accuracy"] - theirs["accuracy"]) > 1e-12
        ):
            problems.append(f"version id {pk}: accuracy {mine['accuracy']} != join {theirs['accuracy']}")
    return problems


def seeded_figures(seeded: Seeded, version_index: Any, versions: list[Any]) -> dict[int, dict[str, Any]]:
    """Window all as the seeding meant it, from the numpy arrays: a third count, not from the database."""
    import numpy as np

    figures = {}
    for vi, version in enumerate(versions):
        mask = version_index == vi
        labelled = mask & seeded.labelled
        pairs = seeded.predicted[labelled] * 2 + seeded.true_index[labelled]
        cells = {
            (seeded.classes[code // 2], seeded.classes[code % 2]): int(n)
            for code, n in zip(*np.unique(pairs, return_counts=True), strict=True)
        }
        n = int(labelled.sum())
        correct = int((seeded.predicted[labelled] == seeded.true_index[labelled]).sum())
        figures[version.pk] = {
            "cells": cells,
            "n": n,
            "correct": correct,
            "accuracy": correct / n if n else None,
            "predicted": int(mask.sum()),
        }
    return figures


def differences(a: Any, b: Any, path: str = "") -> list[str]:
    """Where the API's answer `a` differs from the selector's `b`, as paths (at most 10).

    The output serializer gives every figure of both tasks (a classifier's mae is null): a null only in
    `a` is no difference.
    """
    if isinstance(a, dict) and isinstance(b, dict):
        found = [f"{path}/{k}: only in the API" for k in sorted(set(a) - set(b), key=str) if a[k] is not None]
        found += [f"{path}/{k}: missing from the API" for k in sorted(set(b) - set(a), key=str)]
        for key in sorted(set(a) & set(b), key=str):
            found += differences(a[key], b[key], f"{path}/{key}")
        return found[:10]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [
            d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in differences(x, y, f"{path}/{i}")
        ][:10]
    return [] if a == b else [f"{path}: {a!r:.80} != {b!r:.80}"]


def timed(call: Any, repeats: int) -> tuple[float, list[float], Any]:
    """Median milliseconds of `repeats` calls (after one untimed call), all the times, the last answer."""
    answer = call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        answer = call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), times, answer


# --------------------------------------------------------------------------------------------------
# Part 2: HTTP through wrk
# --------------------------------------------------------------------------------------------------
# Requests are formatted once in `init`, as in bench/wrk_load.py; each is sent once (created feedback must
# name a new prediction each time), and statuses are counted so the run can be checked afterwards.
_LUA = """
local method = %(method)s
local paths = %(paths)s
local header_sets = %(header_sets)s
local which = %(which)s
local body = %(body)s
local requests = {}
local next_request = 0
status_2xx, status_201, status_other, wrapped = 0, 0, 0, 0
local threads = {}
setup = function(thread) table.insert(threads, thread) end
init = function(args)
  for i, path in ipairs(paths) do
    local headers = {}
    for name, value in pairs(header_sets[which[i]]) do headers[name] = value end
    requests[i] = wrk.format(method, path, headers, body)
  end
end
request = function()
  next_request = next_request + 1
  if next_request > #requests then
    next_request = 1
    wrapped = wrapped + 1
  end
  return requests[next_request]
end
response = function(status, headers, body)
  if status == 201 then status_201 = status_201 + 1 end
  if status >= 200 and status < 300 then status_2xx = status_2xx + 1 else status_other = status_other + 1 end
end
done = function(summary, latency, requests)
  local s2, s201, so, w = 0, 0, 0, 0
  for _, t in ipairs(threads) do
    s2 = s2 + t:get("status_2xx"); s201 = s201 + t:get("status_201")
    so = so + t:get("status_other"); w = w + t:get("wrapped")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %%d, "duration_us": %%d, "errors_connect": %%d, "errors_read": %%d, ' ..
    '"errors_write": %%d, "errors_status": %%d, "errors_timeout": %%d, "p50_us": %%d, "p90_us": %%d, ' ..
    '"p99_us": %%d, "max_us": %%d, "status_2xx": %%d, "status_201": %%d, "status_other": %%d, ' ..
    '"wrapped": %%d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, s2, s201, so, w))
end
"""


def _lua(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"[{_lua(k)}] = {_lua(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "{" + ", ".join(_lua(v) for v in value) + "}"
    if isinstance(value, int):
        return str(value)
    if value is None:
        return "nil"
    return json.dumps(str(value))


@dataclass
class HttpTarget:
    """One kind of request: a method, and per run the paths to send (each with its header set)."""

    label: str
    method: str
    header_sets: list[dict[str, str]]
    body: str | None
    # Called with the run's number; returns [(path, header set index from 1)].
    requests_for: Any
    runs: list[dict[str, Any]] = field(default_factory=list)
    warmup: dict[str, Any] = field(default_factory=dict)


def wrk_once(target: HttpTarget, *, base: str, run: int, seconds: int, script_dir: Path, pgid: int):
    pairs = target.requests_for(run)
    script = script_dir / f"{target.label.replace(' ', '_')}_{run}.lua"
    script.write_text(
        _LUA
        % {
            "method": _lua(target.method),
            "paths": _lua([p for p, _ in pairs]),
            "header_sets": _lua(target.header_sets),
            "which": _lua([w for _, w in pairs]),
            "body": _lua(target.body),
        }
    )
    command = [
        wrk_load.wrk_path(), "-t1", "-c1", f"-d{seconds}s", "--timeout", "10s", "-s", str(script), base
    ]  # fmt: skip
    cpu = group_cpu_seconds(pgid)
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30, check=False)
    cpu = group_cpu_seconds(pgid) - cpu
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout[-800:]} {done.stderr[-800:]}")
    raw = json.loads(line.removeprefix("BENCH_JSON "))
    raw["server_cpu_seconds"] = cpu
    return raw


def http_aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = sum(r["status_2xx"] for r in runs)
    seconds = sum(r["duration_us"] for r in runs) / 1e6
    return {
        "requests": sum(r["requests"] for r in runs),
        "status_2xx": ok,
        "status_201": sum(r["status_201"] for r in runs),
        "status_other": sum(r["status_other"] for r in runs),
        "socket_errors": sum(
            r[k] for r in runs for k in ("errors_connect", "errors_read", "errors_write", "errors_timeout")
        ),
        "wrapped": sum(r["wrapped"] for r in runs),
        "requests_per_second": round(ok / seconds, 1) if seconds else 0.0,
        "p50_ms": round(statistics.median(r["p50_us"] for r in runs) / 1000, 3),
        "p90_ms": round(statistics.median(r["p90_us"] for r in runs) / 1000, 3),
        "p99_ms": round(statistics.median(r["p99_us"] for r in runs) / 1000, 3),
        "max_ms": round(max(r["max_us"] for r in runs) / 1000, 3),
        "server_cpu_ms_per_request": round(sum(r["server_cpu_seconds"] for r in runs) * 1000 / max(ok, 1), 3),
        "rounds_p50_ms": [round(r["p50_us"] / 1000, 3) for r in runs],
    }


def http_get(url: str, headers: dict[str, str]) -> Any:
    import urllib.request

    request = urllib.request.Request(url, headers=headers)  # noqa: S310 (loopback)
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (loopback)
        return json.loads(response.read())


# --------------------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--predictions", type=int, default=1_000_000)
    parser.add_argument("--feedback", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=20, help="timed model_quality calls per window")
    parser.add_argument("--join-repeats", type=int, default=5, help="timed join queries per window")
    parser.add_argument("--seconds", type=int, default=10, help="measured seconds per HTTP target")
    parser.add_argument("--rounds", type=int, default=5, help="short runs per HTTP target, taken in turn")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up per HTTP target")
    parser.add_argument("--workers", type=int, default=int(os.environ.get("WEB_CONCURRENCY", "2")))
    parser.add_argument("--clients", type=int, default=50, help="API users (tokens) owning the predictions")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    if not 10_000 <= args.predictions <= 5_000_000 or not 1_000 <= args.feedback <= args.predictions // 2:
        parser.error("--predictions must be 10,000..5,000,000 and --feedback 1,000..predictions/2")
    if not 1 <= args.seconds <= 60 or not 1 <= args.rounds <= args.seconds or not 1 <= args.warmup <= 30:
        parser.error("--seconds must be 1..60, --rounds 1..seconds, --warmup 1..30: the run stays bounded")
    if not 1 <= args.repeats <= 1000 or not 1 <= args.join_repeats <= 50:
        parser.error("--repeats must be 1..1000 and --join-repeats 1..50")
    wrk_load.wrk_path()
    common.sigterm_unwinds()
    started = time.monotonic()
    load_at_start = report.load_average()
    failures: list[str] = []

    with (
        common.temp_dir("bench-feedback-") as tmp,
        postgres("feedback") as database_started,
        contextlib.ExitStack() as servers,
    ):
        data_dir = Path(tmp)
        common.say(f"PostgreSQL: {database_started}")
        env = common.django_configure(data_dir)
        if common.database_label() != "postgresql":
            raise SystemExit(f"this benchmark measures PostgreSQL, not {common.database_label()}")
        import numpy as np
        from django.db import connection
        from django.utils import timezone

        from feedback import selectors as feedback_selectors
        from feedback.models import Feedback, FeedbackChange, QualityHourly, Source
        from mlops_site import rollups
        from predictions.models import Prediction, PredictionHourly

        owner, clients, tokens = common.api_users(args.clients)
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            server_version = cursor.fetchone()[0]

        common.say("training three versions through the training service")
        clock = time.perf_counter()
        versions = versions_train(data_dir=data_dir, user=owner)
        train_seconds = time.perf_counter() - clock
        model = versions[-1].registered_model
        version_ids = [v.pk for v in versions]

        common.say(f"seeding {args.predictions:,} predictions (COPY, hourly counts by prediction_hours_add)")
        clock = time.perf_counter()
        seeded, extra = predictions_seed(versions=versions, clients=clients, total=args.predictions)
        seed_predictions_seconds = time.perf_counter() - clock
        version_index = extra["version_index"]
        common.say(
            f"{args.predictions:,} predictions in {extra['requests']:,} requests: "
            f"{seed_predictions_seconds:.1f} s"
        )
        common.say(f"seeding {args.feedback:,} feedback rows through feedback_check + feedback_store")
        seed_feedback = feedback_seed(
            seeded=seeded, version_index=version_index, count=args.feedback, user=owner
        )
        common.say(
            f"feedback: {seed_feedback['seconds']:.1f} s ({seed_feedback['rows_per_second']:,.0f} rows/s)"
        )
        clock = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")
        vacuum_seconds = time.perf_counter() - clock
        sizes = {}
        with connection.cursor() as cursor:
            for model_class in (Prediction, Feedback, QualityHourly, PredictionHourly):
                table = model_class._meta.db_table
                cursor.execute("SELECT count(*), pg_total_relation_size(%s) FROM " + table, [table])  # noqa: S608
                rows, size = cursor.fetchone()
                sizes[table] = {"rows": rows, "bytes": size}

        # ---- Part 1 ------------------------------------------------------------------------------
        now = timezone.now()
        checks: dict[str, Any] = {}
        quality: dict[str, Any] = {}
        expected_all = seeded_figures(seeded, version_index, versions)
        for window in ("all", "7d"):
            since = None if window == "all" else rollups.hour_of(now - dt.timedelta(days=7))
            common.say(f"window {window}: model_quality x{args.repeats}, the join x{args.join_repeats}")
            ours_ms, ours_times, answer = timed(
                lambda w=window: feedback_selectors.model_quality(registered_model=model, window=w, now=now),
                args.repeats,
            )
            join_ms, join_times, join = timed(lambda s=since: join_figures(version_ids, s), args.join_repeats)
            ours = selector_figures(answer, versions)
            problems = figures_compare(ours, join)
            if window == "all":
                problems += [f"seeding: {p}" for p in figures_compare(ours, expected_all)]
            checks[f"rollups_equal_join_{window}"] = not problems
            failures += [f"window {window}: {p}" for p in problems]
            quality[window] = {
                "selector_ms": round(ours_ms, 3),
                "selector_ms_all": [round(t, 3) for t in ours_times],
                "join_ms": round(join_ms, 2),
                "join_ms_all": [round(t, 2) for t in join_times],
                "join_over_selector": round(join_ms / ours_ms, 1),
                "figures": {
                    f"v{v.version}": {
                        "n": join[v.pk]["n"],
                        "correct": join[v.pk]["correct"],
                        "accuracy": join[v.pk]["accuracy"],
                        "predicted": join[v.pk]["predicted"],
                        "confusion": {f"{p}->{a}": n for (p, a), n in sorted(join[v.pk]["cells"].items())},
                    }
                    for v in versions
                },
            }
            common.say(
                f"window {window}: model_quality {ours_ms:.2f} ms, join {join_ms:.0f} ms "
                f"({join_ms / ours_ms:.0f}x); same figures: {not problems}"
            )
        with connection.cursor() as cursor:
            cursor.execute(
                "EXPLAIN (ANALYZE, BUFFERS) " + JOIN_SQL,
                [version_ids, dt.datetime(1970, 1, 1, tzinfo=dt.UTC)],
            )
            join_plan = [row[0] for row in cursor.fetchall()]

        # ---- Part 2 ------------------------------------------------------------------------------
        port = common.free_ports(1)[0]
        base = f"http://127.0.0.1:{port}"
        common.say(f"starting gunicorn -w {args.workers} on PostgreSQL")
        server = servers.enter_context(
            common.server_running("ours", common.gunicorn_command(port, workers=args.workers), env, data_dir)
        )
        json_headers = {"Content-Type": "application/json"}
        header_sets = [{**json_headers, "Authorization": f"Token {token}"} for token in tokens]
        frame = common.breast_cancer_frame()
        features = [c["name"] for c in versions[-1].feature_schema]
        predict_body = json.dumps({"inputs": {n: float(frame.iloc[0][n]) for n in features}})
        predict_path = f"/api/models/{model.name}/predict/"
        server.wait_ready(base + predict_path, predict_body.encode(), header_sets[0])

        total_runs = args.rounds + 1  # the warm-up run, then the rounds
        per_run = max(1, args.seconds // args.rounds)
        feedback_body = json.dumps({"true_label": seeded.classes[1]})
        rng = np.random.default_rng(2)
        unlabelled = np.flatnonzero(~seeded.labelled)
        ids_per_run = IDS_PER_SECOND * max(per_run, args.warmup)
        new = rng.choice(unlabelled, size=ids_per_run * total_runs, replace=False)
        # Labelled already with the class the body names: the same outcome again.
        same = np.flatnonzero(seeded.labelled & (seeded.true_index == 1))
        same = rng.choice(same, size=min(len(same), ids_per_run * total_runs), replace=False)

        def feedback_requests(pool: Any) -> Any:
            def take(run: int) -> list[tuple[str, int]]:
                chunk = pool[run * ids_per_run : (run + 1) * ids_per_run]
                if len(chunk) == 0:
                    chunk = pool[:ids_per_run]
                return [
                    (
                        f"/api/predictions/{int(seeded.prediction_ids[i])}/feedback/",
                        int(seeded.owner_index[i]) + 1,
                    )
                    for i in chunk
                ]

            return take

        reader = {"Authorization": f"Token {tokens[0]}"}
        targets = [
            HttpTarget(
                "predict", "POST", header_sets, predict_body,
                lambda run: [(predict_path, i + 1) for i in range(len(header_sets))],
            ),
            HttpTarget("feedback created", "POST", header_sets, feedback_body, feedback_requests(new)),
            HttpTarget("feedback unchanged", "POST", header_sets, feedback_body, feedback_requests(same)),
            HttpTarget(
                "quality all", "GET", [reader], None,
                lambda run: [(f"/api/models/{model.name}/quality/?window=all", 1)],
            ),
            HttpTarget(
                "quality 7d", "GET", [reader], None,
                lambda run: [(f"/api/models/{model.name}/quality/?window=7d", 1)],
            ),
        ]  # fmt: skip
        script_dir = data_dir / "wrk"
        script_dir.mkdir()
        load_before = report.load_average()
        for target in targets:
            common.say(f"{target.label}: warm-up {args.warmup}s")
            target.warmup = wrk_once(
                target, base=base, run=0, seconds=args.warmup, script_dir=script_dir, pgid=server.process.pid
            )
        for round_index in range(args.rounds):
            shift = round_index % len(targets)
            for target in targets[shift:] + targets[:shift]:
                target.runs.append(
                    wrk_once(
                        target, base=base, run=round_index + 1, seconds=per_run, script_dir=script_dir,
                        pgid=server.process.pid,
                    )
                )  # fmt: skip
                if server.process.poll() is not None:
                    raise RuntimeError(f"gunicorn died during the run:\n{server.log_tail()}")
            common.say(f"round {round_index + 1}/{args.rounds} done")
        load_after = report.load_average()
        http = {t.label: http_aggregate(t.runs) for t in targets}
        for window in ("all", "7d"):
            quality[window]["api_p50_ms"] = http[f"quality {window}"]["p50_ms"]
            quality[window]["join_over_api_p50"] = round(
                quality[window]["join_ms"] / http[f"quality {window}"]["p50_ms"], 1
            )

        # The API's answer is the selector's, and the rollups still equal the join after the API writes.
        api_answer = http_get(f"{base}/api/models/{model.name}/quality/?window=all", reader)
        selector_answer = json.loads(
            json.dumps(feedback_selectors.model_quality(registered_model=model, window="all"))
        )
        answer_differences = differences(api_answer["versions"], selector_answer)
        checks["api_answer_equals_selector"] = not answer_differences
        failures += [
            f"the quality API's answer differs from model_quality's: {d}" for d in answer_differences
        ]
        after = figures_compare(selector_figures(selector_answer, versions), join_figures(version_ids, None))
        checks["rollups_equal_join_after_api_writes"] = not after
        failures += [f"after the API runs: {p}" for p in after]
        api_created = Feedback.objects.filter(source=Source.API).count()
        created_runs = http["feedback created"]
        created_runs_all = [targets[1].warmup, *targets[1].runs]
        checks["every_created_call_created"] = (
            created_runs["status_201"] == created_runs["status_2xx"]
            and created_runs["wrapped"] == 0
            and targets[1].warmup["wrapped"] == 0
            # The warm-up run's feedback is in the table too. wrk stops with at most one request in flight
            # per run (one connection): the server may have stored it without wrk counting its answer.
            and 0
            <= api_created - created_runs["status_201"] - targets[1].warmup["status_201"]
            <= len(created_runs_all)
        )
        unchanged_runs = http["feedback unchanged"]
        checks["every_unchanged_call_unchanged"] = (
            unchanged_runs["status_201"] == 0 and FeedbackChange.objects.count() == 0
        )
        checks["no_errors"] = all(h["status_other"] == 0 and h["socket_errors"] == 0 for h in http.values())
        for name in ("every_created_call_created", "every_unchanged_call_unchanged", "no_errors"):
            if not checks[name]:
                failures.append(f"check failed: {name} ({json.dumps(http)[:600]})")

    # ---- Summary -------------------------------------------------------------------------------------
    predict_p50 = http["predict"]["p50_ms"]
    # (name, key, measured, shown, target shown, met)
    rows: list[tuple[str, str, float, str, str, bool]] = []
    for window in ("all", "7d"):
        ms = quality[window]["selector_ms"]
        name = f"model_quality, window {window}"
        rows.append(
            (name, f"selector_{window}_under_50ms", ms, f"{ms:.2f} ms", "< 50 ms", ms < QUALITY_TARGET_MS)
        )
    for window in ("all", "7d"):
        ms = http[f"quality {window}"]["p50_ms"]
        name = f"GET quality/ p50, window {window}"
        rows.append((name, f"api_{window}_under_50ms", ms, f"{ms:.2f} ms", "< 50 ms", ms < QUALITY_TARGET_MS))
    for window in ("all", "7d"):
        ratio = quality[window]["join_over_selector"]
        met = ratio >= JOIN_RATIO_TARGET
        rows.append(
            (f"join / model_quality, {window}", f"join_20x_{window}", ratio, f"{ratio:.0f}x", ">= 20x", met)
        )
    for path in ("created", "unchanged"):
        ratio = round(http[f"feedback {path}"]["p50_ms"] / predict_p50, 3)
        name, met = f"feedback {path} / predict p50", ratio <= FEEDBACK_RATIO_TARGET
        rows.append((name, f"feedback_{path}_le_1_5x_predict", ratio, f"{ratio:.2f}x", "<= 1.5x", met))
    targets_met = {key: met for _, key, _, _, _, met in rows}

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    print()
    print(
        f"{'live quality, median ms':<26} {'model_quality':>13} {'GET p50':>9} {'join':>9} "
        f"{'join/model_quality':>19} {'join/GET':>9}"
    )
    print("-" * 90)
    for window in ("all", "7d"):
        q, api_ms = quality[window], http[f"quality {window}"]["p50_ms"]
        print(
            f"{'window ' + window:<26} {q['selector_ms']:>13.2f} {api_ms:>9.2f} {q['join_ms']:>9.1f} "
            f"{q['join_over_selector']:>18.0f}x {q['join_ms'] / api_ms:>8.0f}x"
        )
    print()
    header = f"{'HTTP at 1 connection':<28} {'p50 ms':>9} {'p99 ms':>9} {'req/s':>9} {'cpu ms/req':>11}"
    print(f"{header} {'x predict':>10}")
    print("-" * 80)
    for label in ("predict", "feedback created", "feedback unchanged", "quality all", "quality 7d"):
        h = http[label]
        print(
            f"{label:<28} {h['p50_ms']:>9.2f} {h['p99_ms']:>9.2f} {h['requests_per_second']:>9.1f} "
            f"{h['server_cpu_ms_per_request']:>11.2f} {h['p50_ms'] / predict_p50:>9.2f}x"
        )
    print()
    print(f"{'target':<32} {'measured':>10} {'target':>9}  result")
    print("-" * 62)
    for name, _, _, shown, target, ok in rows:
        print(f"{name:<32} {shown:>10} {target:>9}  {verdict(ok)}")
    print()
    print(f"correctness checks: {', '.join(f'{k}={v}' for k, v in checks.items())}")
    for failure in failures[:20]:
        print(f"  FAILED: {failure}")

    report.results_write(
        args.output,
        benchmark="feedback_quality",
        environment={
            "database": f"PostgreSQL {server_version} ({database_started})",
            "workers": args.workers,
            "seconds_per_target": args.seconds,
            "rounds": args.rounds,
            "api_clients": args.clients,
            "load_average_at_start": load_at_start,
            "load_average_before_http": load_before,
            "load_average_after_http": load_after,
            "load_generator": "wrk -t1 -c1 with a Lua script (each request sent once)",
        },
        started=started,
        data={
            "predictions": args.predictions,
            "feedback": args.feedback,
            "versions": [
                {
                    "version": v.version,
                    "n_estimators": spec["n_estimators"],
                    "hours_ago": spec["hours"],
                    "share": spec["share"],
                    "seeded_accuracy": spec["accuracy"],
                }
                for v, spec in zip(versions, VERSIONS, strict=True)
            ],
            "tables": sizes,
            "seconds": {
                "training": round(train_seconds, 1),
                "predictions_copy": round(seed_predictions_seconds, 1),
                "feedback_store": seed_feedback["seconds"],
                "vacuum_analyze": round(vacuum_seconds, 1),
            },
            "feedback_store_rows_per_second": seed_feedback["rows_per_second"],
        },
        quality=quality,
        join_sql=" ".join(JOIN_SQL.split()),
        join_plan=join_plan,
        http=http,
        summary={
            "targets": {
                "quality_ms": f"< {QUALITY_TARGET_MS:g}",
                "join_over_model_quality": f">= {JOIN_RATIO_TARGET:g}",
                "feedback_over_predict_p50": f"<= {FEEDBACK_RATIO_TARGET:g}",
            },
            # Server CPU per request does not swing with other load the way wall time does.
            "feedback_over_predict_cpu": {
                path: round(
                    http[f"feedback {path}"]["server_cpu_ms_per_request"]
                    / http["predict"]["server_cpu_ms_per_request"],
                    3,
                )
                for path in ("created", "unchanged")
            },
            "measured": {key: value for _, key, value, _, _, _ in rows},
            "targets_met": targets_met,
            "checks": checks,
            "failures": failures[:50],
        },
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
