"""What every benchmark records: the commit and the machine it ran on, and its JSON results file."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def git_state() -> dict[str, Any]:
    """The commit measured, and whether the working tree had uncommitted changes to tracked files."""
    # BENCH_NO_GIT=1 skips the two read-only git calls (for runs beside someone else's git work).
    if os.environ.get("BENCH_NO_GIT"):
        return {"commit": None, "uncommitted_changes": None}

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "uncommitted_changes": bool(git("status", "--porcelain", "-uno")),
    }


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def document_write(output: Path, document: dict[str, Any]) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {output} in {document['elapsed_seconds']:.0f} s")


def results_write(
    output: Path, *, benchmark: str, environment: dict[str, Any], started: float, **sections: Any
) -> dict[str, Any]:
    """Write bench/results/<benchmark>.json (or `output`): the command, the commit and machine followed by
    `environment`, then `sections` in the order given and the time since `started` (time.monotonic)."""
    document = {
        "benchmark": benchmark,
        "command": " ".join([f"python bench/{benchmark}.py", *sys.argv[1:]]),
        "environment": {
            **git_state(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            **environment,
        },
        **sections,
        "elapsed_seconds": round(time.monotonic() - started, 1),
    }
    document_write(output, document)
    return document
