"""The drift simulation over many seeds: how fast the loop recovers from concept drift, and that it never
promotes when it must not.

    python bench/drift_simulation.py [--seeds 10] [--scenarios concept,none,random,worse]

Each run is `manage.py simulate_drift --inline` (training.simulation): a new model trained on synthetic
data, 1,200 predictions and their outcomes through the API, the concept flipping in one region at row
400 for the concept scenario. The embedded default in a throwaway folder, tasks run in this process.
Targets (issue 10): recovery to within 2 points of the pre-drift accuracy within 500 feedback rows after
the drift starts; no promotion in the no-drift, random-label and worse-challenger scenarios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RECOVERY_TARGET_ROWS = 500

from bench import embedded  # noqa: E402  (after the path is set)


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--scenarios", default="concept,none,random,worse")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "drift_simulation.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-drift-") as folder:
        embedded.django_configure(Path(folder))
        from training import simulation

        runs = []
        started = time.monotonic()
        for scenario in args.scenarios.split(","):
            for seed in range(args.seeds):
                run = simulation.Simulation(
                    scenario=simulation.SCENARIOS[scenario],
                    seed=seed,
                    model=f"bench-{scenario}-{seed}",
                    rows=1200,
                    drift_at=400,
                    step=25,
                    timeout=300,
                    out=lambda line: None,
                )
                result = run.run().as_dict()
                result.pop("events")
                runs.append(result)
                print(
                    f"{scenario:8s} seed {seed}: trigger {result['rows_to_trigger']}, promotion "
                    f"{result['rows_to_promotion']}, recovery {result['rows_to_recovery']}, accuracy "
                    f"{result['accuracy_before']} -> lowest {result['accuracy_lowest']} -> "
                    f"{result['accuracy_after']}, "
                    f"{result['retrainings']} retrainings, {result['promotions']} promotions",
                    flush=True,
                )

    summary = {}
    for scenario in args.scenarios.split(","):
        mine = [r for r in runs if r["scenario"] == scenario]
        recovered = [r["rows_to_recovery"] for r in mine if r["rows_to_recovery"] is not None]
        summary[scenario] = {
            "runs": len(mine),
            "promotions": sum(r["promotions"] for r in mine),
            "runs_with_a_promotion": sum(1 for r in mine if r["promotions"]),
            "retrainings": sum(r["retrainings"] for r in mine),
            "median_rows_to_trigger": _median(
                [r["rows_to_trigger"] for r in mine if r["rows_to_trigger"] is not None]
            ),
            "median_rows_to_promotion": _median(
                [r["rows_to_promotion"] for r in mine if r["rows_to_promotion"] is not None]
            ),
            "median_rows_to_recovery": _median(recovered),
            "recovered_within_target": sum(1 for rows in recovered if rows <= RECOVERY_TARGET_ROWS),
            "median_accuracy_before": _median(
                [r["accuracy_before"] for r in mine if r["accuracy_before"] is not None]
            ),
            "median_accuracy_lowest": _median(
                [r["accuracy_lowest"] for r in mine if r["accuracy_lowest"] is not None]
            ),
            "median_accuracy_after": _median(
                [r["accuracy_after"] for r in mine if r["accuracy_after"] is not None]
            ),
        }
    report = {
        "benchmark": "drift_simulation",
        "seconds": round(time.monotonic() - started, 1),
        "recovery_target_rows": RECOVERY_TARGET_ROWS,
        "summary": summary,
        "runs": runs,
    }
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
