"""Load from wrk against a server: the Lua script, one bounded run, and runs of several targets in turn."""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.predict_common import Server, say
from bench.processes import group_cpu_seconds

# wrk writes one line of JSON from the Lua `done` hook, so nothing depends on its human-readable output.
# The requests are formatted once in `init`; with several header sets (one API token per simulated client)
# they are sent in turn, so each client stays within its own rate limit, as many clients would.
_LUA = """
local f = assert(io.open(%(body_path)s, "rb"))
local body = f:read("*a")
f:close()
local header_sets = %(header_sets)s
local requests = {}
local next_request = 0
init = function(args)
  for i, headers in ipairs(header_sets) do
    -- Headers given on the command line (-H "Connection: close") apply to every set.
    for name, value in pairs(wrk.headers) do
      if headers[name] == nil then headers[name] = value end
    end
    requests[i] = wrk.format("POST", nil, headers, body)
  end
end
request = function()
  next_request = next_request %% #requests + 1
  return requests[next_request]
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %%d, "duration_us": %%d, "bytes": %%d, "errors_connect": %%d, ' ..
    '"errors_read": %%d, "errors_write": %%d, "errors_status": %%d, "errors_timeout": %%d, ' ..
    '"p50_us": %%d, "p90_us": %%d, "p99_us": %%d, "mean_us": %%.1f, "max_us": %%d}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
"""


def _lua_string(text: str) -> str:
    return json.dumps(text)  # a JSON string literal is a valid Lua string literal for plain text


def _lua_table(headers: dict[str, str]) -> str:
    return "{" + ", ".join(f"[{_lua_string(k)}] = {_lua_string(v)}" for k, v in headers.items()) + "}"


def wrk_script(path: Path, *, body: bytes, header_sets: list[dict[str, str]]) -> Path:
    """A wrk Lua script POSTing `body`, cycling through the header sets (e.g. one token per client)."""
    body_path = path.with_suffix(".body")
    body_path.write_bytes(body)
    tables = "{" + ", ".join(_lua_table(h) for h in header_sets) + "}"
    path.write_text(_LUA % {"body_path": _lua_string(str(body_path)), "header_sets": tables})
    return path


def wrk_path() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk (Debian) and run the benchmark again.")
    return found


def wrk_run(
    *, url: str, script: Path, connections: int, seconds: int, threads: int = 1, extra: tuple[str, ...] = ()
) -> dict[str, Any]:
    """One bounded wrk run: its counts, latency percentiles (ms) and successful requests per second."""
    command = [
        wrk_path(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        *extra,
        url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30, check=False)
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout[-800:]} {done.stderr[-800:]}")
    raw = json.loads(line.removeprefix("BENCH_JSON "))
    seconds_run = raw["duration_us"] / 1e6
    errors = sum(raw[k] for k in raw if k.startswith("errors_"))
    return {
        "connections": connections,
        "seconds": round(seconds_run, 2),
        "requests": raw["requests"],
        "errors": errors,
        "non_2xx": raw["errors_status"],
        "requests_per_second": round((raw["requests"] - raw["errors_status"]) / seconds_run, 1),
        "p50_ms": round(raw["p50_us"] / 1000, 3),
        "p90_ms": round(raw["p90_us"] / 1000, 3),
        "p99_ms": round(raw["p99_us"] / 1000, 3),
        "mean_ms": round(raw["mean_us"] / 1000, 3),
        "max_ms": round(raw["max_us"] / 1000, 3),
    }


def wrk_measured(
    server: Server, *, url: str, script: Path, connections: int, seconds: int, extra: tuple[str, ...] = ()
) -> dict[str, Any]:
    """One wrk run with the CPU time the server's processes spent during it; the server dying is an error."""
    cpu = group_cpu_seconds(server.process.pid)
    run = wrk_run(url=url, script=script, connections=connections, seconds=seconds, extra=extra)
    run["server_cpu_seconds"] = group_cpu_seconds(server.process.pid) - cpu
    if server.process.poll() is not None:
        raise RuntimeError(f"{server.name} died during the run:\n{server.log_tail()}")
    return run


@dataclass
class Target:
    """One thing to load: a running server, its URL and wrk script (and extra wrk options)."""

    label: str
    server: Server
    url: str
    script: Path
    wrk_extra: tuple[str, ...] = ()


def warm_up(targets: list[Target], *, seconds: int) -> None:
    for target in targets:
        say(f"{target.label}: warm-up {seconds}s")
        wrk_run(url=target.url, script=target.script, connections=8, seconds=seconds, extra=target.wrk_extra)


def interleaved(
    targets: list[Target], *, seconds: int, rounds: int, connections: tuple[int, ...] = (1, 8)
) -> dict[str, dict[str, Any]]:
    """Each target `seconds` at each concurrency, in `rounds` short runs taken in turn (rotating order).

    Load from anything else on the machine then falls on every target alike instead of on whichever ran
    during a busy spell. p50/p90/p99 are medians over the rounds; requests/s counts successful (2xx)
    requests over the total measured time.
    """
    per_run = max(1, seconds // rounds)
    runs: dict[str, dict[int, list[dict[str, Any]]]] = {
        t.label: {c: [] for c in connections} for t in targets
    }
    for round_index in range(rounds):
        shift = round_index % len(targets)
        order = targets[shift:] + targets[:shift]
        for c in connections:
            for target in order:
                run = wrk_measured(
                    target.server,
                    url=target.url,
                    script=target.script,
                    connections=c,
                    seconds=per_run,
                    extra=target.wrk_extra,
                )
                runs[target.label][c].append(run)
        say(f"round {round_index + 1}/{rounds} done")
    return {label: {f"c{c}": runs_aggregate(by_c[c]) for c in connections} for label, by_c in runs.items()}


def runs_aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    seconds = sum(r["seconds"] for r in runs)
    ok = sum(r["requests"] - r["non_2xx"] for r in runs)
    cpu = sum(r["server_cpu_seconds"] for r in runs)
    return {
        "connections": runs[0]["connections"],
        # CPU time of the server's processes (master and workers) per request: what a request costs,
        # whatever else the machine was doing.
        "server_cpu_ms_per_request": round(cpu * 1000 / max(ok, 1), 3),
        "seconds": round(seconds, 2),
        "requests": sum(r["requests"] for r in runs),
        "errors": sum(r["errors"] for r in runs),
        "non_2xx": sum(r["non_2xx"] for r in runs),
        "requests_per_second": round(ok / seconds, 1),
        "p50_ms": round(statistics.median(r["p50_ms"] for r in runs), 3),
        "p90_ms": round(statistics.median(r["p90_ms"] for r in runs), 3),
        "p99_ms": round(statistics.median(r["p99_ms"] for r in runs), 3),
        "max_ms": max(r["max_ms"] for r in runs),
        "rounds": [{k: r[k] for k in ("requests_per_second", "p50_ms", "p99_ms")} for r in runs],
    }
