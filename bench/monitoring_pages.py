"""Monitoring pages and history pages at millions of rows: server time beside the plain query's.

    python bench/monitoring_pages.py [--predictions 5000000] [--feedback 1500000] [--repeats 15]

On PostgreSQL: the server of DATABASE_URL when given, else a throwaway one (bench/postgres.py). Seeded as
bench/feedback_quality.py seeds (its own functions): three versions of one model trained through the
training service, `--predictions` rows over 30 days stored with COPY and counted per hour by the real
`prediction_hours_add`, `--feedback` of them labelled through the real `feedback_check` and
`feedback_store` (so every rollup row is written by the code that keeps it live), owned by `--clients`
API users. A retraining policy (accuracy >= 0.94) gives the threshold line.

Server time is the median wall time of `--repeats` requests through Django's test client in this process
(middleware, view, queries and template; no network), after one untimed request. Measured:

1. GET /monitoring/ (target < 100 ms) beside the plain query it replaces: volume and live accuracy per
   model over 7 days by aggregating prediction rows LEFT JOIN feedback;
2. GET /monitoring/<model>/?period=30d (< 200 ms) beside per-day volume and accuracy over 30 days from
   prediction rows LEFT JOIN feedback;
3. the history: the first page and a deep page, for a user (/api/predictions/ and /predictions/) and for
   staff (everyone's rows, the deep page at row `--deep-row`), by cursor (< 100 ms), beside the same page
   by OFFSET with the count Django's paginator ran (what the pages did before keyset pagination).

Results: a table on stdout and bench/results/monitoring_pages.json (BENCH_NO_GIT=1 leaves the commit out).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import feedback_quality, report
from bench import predict_common as common
from bench.postgres import postgres

RESULTS = common.ROOT / "bench" / "results" / "monitoring_pages.json"
TARGETS_MS = {"overview": 100.0, "model": 200.0, "history": 100.0}
HISTORY_PAGE = 25

OVERVIEW_PLAIN_SQL = """
SELECT mv.registered_model_id, count(*), count(f.id),
       sum(CASE WHEN f.true_label <> '' AND f.true_label = p.prediction #>> '{}' THEN 1 ELSE 0 END)
FROM predictions_prediction p
JOIN models_registry_modelversion mv ON mv.id = p.model_version_id
LEFT JOIN feedback_feedback f ON f.prediction_id = p.id
WHERE p.created_at >= %s
GROUP BY 1
"""
MODEL_PLAIN_SQL = """
SELECT p.model_version_id, date_trunc('day', p.created_at), count(*), count(f.id),
       sum(CASE WHEN f.true_label <> '' AND f.true_label = p.prediction #>> '{}' THEN 1 ELSE 0 END)
FROM predictions_prediction p
JOIN models_registry_modelversion mv ON mv.id = p.model_version_id
LEFT JOIN feedback_feedback f ON f.prediction_id = p.id
WHERE mv.registered_model_id = %s AND p.created_at >= %s
GROUP BY 1, 2
"""


#: CPU milliseconds of this process in the last `timed` calls (median): Django's own work, apart from the
#: database's and from waiting for a core on a shared machine.
LAST_CPU_MS: list[float] = []


def timed(call: Any, repeats: int) -> tuple[float, list[float], Any]:
    """Median milliseconds of `repeats` calls after one untimed call; all the times; the last answer."""
    answer = call()
    times, cpu = [], []
    for _ in range(repeats):
        started, cpu_started = time.perf_counter(), time.process_time()
        answer = call()
        times.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - cpu_started) * 1000)
    LAST_CPU_MS[:] = [statistics.median(cpu)]
    return statistics.median(times), times, answer


def query_profile(call: Any) -> dict[str, Any]:
    """One more call with its queries captured: how many, their database time, and the slowest one's
    EXPLAIN (ANALYZE, BUFFERS) when it took more than 20 ms, so a slow page says why."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        call()
    times = [(float(q["time"]) * 1000, q["sql"]) for q in captured.captured_queries]
    profile: dict[str, Any] = {
        "queries": len(times),
        "db_ms": round(sum(t for t, _ in times), 2),
    }
    if times:
        slowest_ms, slowest_sql = max(times)
        profile["slowest_query_ms"] = round(slowest_ms, 2)
        if slowest_ms > 20:
            profile["slowest_sql"] = slowest_sql
            with connection.cursor() as cursor:
                cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {slowest_sql}")
                profile["slowest_plan"] = [row[0] for row in cursor.fetchall()]
    return profile


def latency_seed() -> int:
    """Hourly latency histograms beside the seeded predictions (COPY writes none): a dozen bins per
    version and hour that has predictions, as the API's requests would leave."""
    from mlops_site import latency_bins
    from predictions.models import LatencyHourly, PredictionHourly

    shape = [(latency_bins.latency_bin(ms), n) for ms, n in ((2, 5), (3, 30), (4, 40), (6, 15), (9, 6),
             (14, 2), (25, 1), (60, 1))]  # fmt: skip
    rows = [
        LatencyHourly(model_version_id=version_id, hour=hour, bin=index, n=n)
        for version_id, hour in PredictionHourly.objects.values_list("model_version_id", "hour")
        for index, n in shape
    ]
    LatencyHourly.objects.bulk_create(rows, batch_size=5_000)
    return len(rows)


def get(client: Any, path: str, params: dict[str, Any] | None = None) -> Any:
    response = client.get(path, params or {}, HTTP_HOST="localhost")
    if response.status_code != 200:
        raise RuntimeError(f"GET {path} {params} answered {response.status_code}: {response.content[:300]!r}")
    return response


def plain_sql(sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def offset_page(queryset: Any, offset: int) -> list[Any]:
    """What the pages did before: the paginator's count, then LIMIT/OFFSET."""
    queryset.count()
    return list(queryset[offset : offset + HISTORY_PAGE])


def cursor_at(queryset: Any, offset: int) -> str:
    """The cursor of the page that starts after row `offset` (found once, untimed, by its keyset index)."""
    from mlops_site import pagination

    row = queryset.order_by("-created_at", "-id").values_list("created_at", "id")[offset - 1 : offset].get()
    return pagination.cursor_encode(pagination.Position(created_at=row[0], id=row[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--predictions", type=int, default=5_000_000)
    parser.add_argument("--feedback", type=int, default=1_500_000)
    parser.add_argument("--clients", type=int, default=20, help="API users owning the predictions")
    parser.add_argument("--repeats", type=int, default=15, help="timed requests per measurement")
    parser.add_argument("--plain-repeats", type=int, default=3, help="timed plain queries per measurement")
    parser.add_argument(
        "--deep-row", type=int, default=150_000, help="the deep page starts after this row (page 6,000 of 25)"
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    if not 10_000 <= args.predictions <= 10_000_000 or not 1_000 <= args.feedback <= args.predictions // 2:
        parser.error("--predictions must be 10,000..10,000,000 and --feedback 1,000..predictions/2")
    if not 1 <= args.repeats <= 500 or not 1 <= args.plain_repeats <= 20:
        parser.error("--repeats must be 1..500 and --plain-repeats 1..20")
    common.sigterm_unwinds()
    started = time.monotonic()
    load_at_start = report.load_average()

    with common.temp_dir("bench-monitoring-") as tmp, postgres("monitoring") as database_started:
        data_dir = Path(tmp)
        common.say(f"PostgreSQL: {database_started}")
        common.django_configure(data_dir)
        if common.database_label() != "postgresql":
            raise SystemExit(f"this benchmark measures PostgreSQL, not {common.database_label()}")
        import datetime as dt

        from django.db import connection
        from django.test import Client
        from django.utils import timezone

        from predictions import selectors as prediction_selectors
        from training.models import RetrainingPolicy

        owner, clients, _ = common.api_users(args.clients, prefix="monitoring")
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            server_version = cursor.fetchone()[0]

        clock = time.perf_counter()
        common.say("training three versions through the training service")
        feedback_quality.MODEL_NAME = f"bench-monitoring-{os.getpid()}"
        versions = feedback_quality.versions_train(data_dir=data_dir, user=owner)
        model = versions[-1].registered_model
        RetrainingPolicy.objects.create(registered_model=model, metric="accuracy", threshold=0.94)
        train_seconds = time.perf_counter() - clock

        common.say(f"seeding {args.predictions:,} predictions (COPY, hourly counts by prediction_hours_add)")
        clock = time.perf_counter()
        seeded, extra = feedback_quality.predictions_seed(
            versions=versions, clients=clients, total=args.predictions
        )
        predictions_seconds = time.perf_counter() - clock
        common.say(f"predictions: {predictions_seconds:.1f} s")
        common.say(f"seeding {args.feedback:,} feedback rows through feedback_check + feedback_store")
        seed_feedback = feedback_quality.feedback_seed(
            seeded=seeded, version_index=extra["version_index"], count=args.feedback, user=owner
        )
        common.say(f"feedback: {seed_feedback['seconds']:.1f} s")
        latency_rows = latency_seed()
        clock = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")
        vacuum_seconds = time.perf_counter() - clock

        staff_client, user_client = Client(), Client()
        staff_client.force_login(owner)
        user = clients[0]
        user_client.force_login(user)
        now = timezone.now()
        user_rows = prediction_selectors.prediction_list(user=user)
        staff_rows = prediction_selectors.prediction_list(user=owner)
        user_count = user_rows.count()
        user_deep = min(args.deep_row, max(HISTORY_PAGE, user_count - HISTORY_PAGE))
        staff_deep = min(args.deep_row, args.predictions - HISTORY_PAGE)
        user_cursor = cursor_at(user_rows, user_deep)
        staff_cursor = cursor_at(staff_rows, staff_deep)

        measured: dict[str, dict[str, Any]] = {}

        def measure(name: str, target: str | None, ours: Any, plain: Any | None, plain_label: str) -> None:
            common.say(f"{name}: ours x{args.repeats}" + (f", plain x{args.plain_repeats}" if plain else ""))
            ours_ms, ours_all, _ = timed(ours, args.repeats)
            ours_cpu = LAST_CPU_MS[0]
            entry: dict[str, Any] = {
                "server_ms": round(ours_ms, 2),
                "server_ms_all": [round(t, 2) for t in ours_all],
            }
            entry["django_cpu_ms"] = round(ours_cpu, 2)
            if target:
                entry["target_ms"] = TARGETS_MS[target]
                entry["met"] = ours_ms < TARGETS_MS[target]
            if plain is not None:
                plain_ms, plain_all, _ = timed(plain, args.plain_repeats)
                entry.update(
                    plain=plain_label,
                    plain_ms=round(plain_ms, 1),
                    plain_ms_all=[round(t, 1) for t in plain_all],
                    plain_over_ours=round(plain_ms / ours_ms, 1),
                )
            entry.update(query_profile(ours))
            measured[name] = entry
            common.say(f"{name}: {entry}")

        week = now - dt.timedelta(days=7)
        month = now - dt.timedelta(days=30)
        measure(
            "overview", "overview",
            lambda: get(staff_client, "/monitoring/"),
            lambda: plain_sql(OVERVIEW_PLAIN_SQL, [week]),
            "per model over 7 days: prediction rows LEFT JOIN feedback, counted and grouped",
        )  # fmt: skip
        measure(
            "model page 30d", "model",
            lambda: get(staff_client, f"/monitoring/{model.name}/", {"period": "30d"}),
            lambda: plain_sql(MODEL_PLAIN_SQL, [model.pk, month]),
            "per version and day over 30 days: prediction rows LEFT JOIN feedback",
        )  # fmt: skip
        measure(
            "model page 7d (hourly)", "model",
            lambda: get(staff_client, f"/monitoring/{model.name}/", {"period": "7d"}),
            None, "",
        )  # fmt: skip
        offset_label = "the paginator's count, then LIMIT 25 OFFSET n (the pages before keyset pagination)"
        measure(
            "history API first page (user)", "history",
            lambda: get(user_client, "/api/predictions/", {"page_size": HISTORY_PAGE}),
            lambda: offset_page(user_rows, 0), offset_label,
        )  # fmt: skip
        measure(
            f"history API deep page (user, row {user_deep:,})", "history",
            lambda: get(user_client, "/api/predictions/", {"page_size": HISTORY_PAGE, "cursor": user_cursor}),
            lambda: offset_page(user_rows, user_deep), offset_label,
        )  # fmt: skip
        measure(
            "history page first page (user)", "history",
            lambda: get(user_client, "/predictions/"),
            None, "",
        )  # fmt: skip
        measure(
            f"history page deep page (user, row {user_deep:,})", "history",
            lambda: get(user_client, "/predictions/", {"cursor": user_cursor}),
            None, "",
        )  # fmt: skip
        measure(
            "history API first page (staff)", "history",
            lambda: get(staff_client, "/api/predictions/", {"page_size": HISTORY_PAGE}),
            lambda: offset_page(staff_rows, 0), offset_label,
        )  # fmt: skip
        measure(
            f"history API deep page (staff, row {staff_deep:,})", "history",
            lambda: get(staff_client, "/api/predictions/", {"page_size": HISTORY_PAGE, "cursor": staff_cursor}),  # noqa: E501
            lambda: offset_page(staff_rows, staff_deep), offset_label,
        )  # fmt: skip
        measure(
            f"history page deep page (staff, row {staff_deep:,})", "history",
            lambda: get(staff_client, "/predictions/", {"cursor": staff_cursor}),
            None, "",
        )  # fmt: skip
        measure(
            f"history API deep page, channel=api (user, row {user_deep:,})", "history",
            lambda: get(user_client, "/api/predictions/", {"page_size": HISTORY_PAGE, "cursor": user_cursor,
                                                           "channel": "api"}),
            None, "",
        )  # fmt: skip
        measure(
            f"history API deep page, feedback=labelled (user, row {user_deep:,})", "history",
            lambda: get(user_client, "/api/predictions/", {"page_size": HISTORY_PAGE, "cursor": user_cursor,
                                                           "feedback": "labelled"}),
            None, "",
        )  # fmt: skip

    print()
    print(f"{'server time, median':<58} {'ours ms':>9} {'plain ms':>10} {'plain/ours':>11} target")
    print("-" * 100)
    for name, entry in measured.items():
        plain = (
            f"{entry['plain_ms']:>10.1f} {entry['plain_over_ours']:>10.0f}x"
            if "plain_ms" in entry
            else " " * 22
        )
        target = (
            f"< {entry['target_ms']:g} ms {'met' if entry['met'] else 'MISSED'}"
            if "target_ms" in entry
            else ""
        )
        print(f"{name:<58} {entry['server_ms']:>9.2f} {plain} {target}")
        print(f"{'':<4}{entry['queries']} queries, {entry['db_ms']:.1f} ms in the database, Django CPU "
              f"{entry['django_cpu_ms']:.1f} ms")  # fmt: skip

    report.results_write(
        args.output,
        benchmark="monitoring_pages",
        environment={
            "database": f"PostgreSQL {server_version} ({database_started})",
            "load_average_at_start": load_at_start,
            "load_average_at_end": report.load_average(),
            "timing": "Django test client in-process: middleware, view, queries, template; no network",
            "repeats": args.repeats,
            "plain_repeats": args.plain_repeats,
        },
        started=started,
        data={
            "predictions": args.predictions,
            "feedback": args.feedback,
            "clients": args.clients,
            "user_rows": user_count,
            "latency_hourly_rows": latency_rows,
            "seconds": {
                "training": round(train_seconds, 1),
                "predictions_copy": round(predictions_seconds, 1),
                "feedback_store": seed_feedback["seconds"],
                "vacuum_analyze": round(vacuum_seconds, 1),
            },
        },
        measured=measured,
        summary={
            "targets_met": {name: entry["met"] for name, entry in measured.items() if "met" in entry},
            "plain_sql": {
                "overview": " ".join(OVERVIEW_PLAIN_SQL.split()),
                "model": " ".join(MODEL_PLAIN_SQL.split()),
            },
        },
    )
    return 0 if all(e.get("met", True) for e in measured.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
