"""What /proc says of a server's process group: its live processes, their CPU time and resident memory."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path


def _group_stats(pgid: int) -> Iterator[tuple[int, list[str]]]:
    """(pid, the fields after "pid (command)") of each live process of one process group."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        # After "pid (command)": state, ppid, pgrp, ...; the command may itself hold spaces and brackets.
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid:
            yield int(entry.name), fields


def group_pids(pgid: int) -> list[int]:
    return [pid for pid, _ in _group_stats(pgid)]


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds used so far by the live processes of one process group (from /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    # utime and stime are the 12th and 13th fields after the command.
    return sum(int(fields[11]) + int(fields[12]) for _, fields in _group_stats(pgid)) / ticks


def _status_bytes(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {name} for process {pid}")


def vm_hwm_bytes(pid: int) -> int:
    """Peak resident memory (VmHWM) of a live process."""
    return _status_bytes(pid, "VmHWM")


def vm_rss_bytes(pid: int) -> int:
    """Resident memory now (VmRSS) of a live process."""
    return _status_bytes(pid, "VmRSS")
