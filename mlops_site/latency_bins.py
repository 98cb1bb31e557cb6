"""Latency histograms: log-spaced bin edges in milliseconds, and percentiles read from counts per bin.

Kept as counts per bin (predictions.LatencyHourly), latencies can be summed over any period and a
percentile read from the sum instead of sorting every request: it is within one bin (bins are 2^(1/5)
wide, about 15%) of the exact one, and usually within a few per cent after interpolating inside the bin.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence

#: Smallest edge above zero, in milliseconds; every later edge is 2^(1/5) times the one before.
FIRST_EDGE_MS = 0.25
BINS_PER_DOUBLING = 5
#: Bin i holds latencies in [EDGES_MS[i], EDGES_MS[i+1]); the last bin (from about 131 s) is open.
EDGES_MS: tuple[float, ...] = (
    0.0,
    *(FIRST_EDGE_MS * 2 ** (k / BINS_PER_DOUBLING) for k in range(19 * BINS_PER_DOUBLING + 1)),
)
PERCENTILES: tuple[int, ...] = (50, 95, 99)


def latency_bin(milliseconds: float) -> int:
    """The bin of a latency; anything not a finite non-negative number counts in the first bin."""
    if not math.isfinite(milliseconds) or milliseconds <= 0:
        return 0
    return bisect.bisect_right(EDGES_MS, milliseconds) - 1


def percentile(counts: Mapping[int, int], q: float) -> float | None:
    """The q-th percentile (0 < q <= 100) in milliseconds of binned counts; None without counts.

    Inside its bin the value is interpolated geometrically (latencies spread evenly on a log scale), the
    first bin linearly from zero; the open last bin gives its start.
    """
    total = sum(n for n in counts.values() if n > 0)
    if not total:
        return None
    rank = total * q / 100
    seen = 0
    for index in sorted(counts):
        n = counts[index]
        if n <= 0:
            continue
        if seen + n >= rank:
            low = EDGES_MS[index]
            if index + 1 >= len(EDGES_MS):
                return low
            high = EDGES_MS[index + 1]
            share = (rank - seen) / n
            if low == 0:
                return high * share
            return low * (high / low) ** share
        seen += n
    return EDGES_MS[max(counts)]


def percentiles(counts: Mapping[int, int], qs: Sequence[int] = PERCENTILES) -> dict[int, float | None]:
    return {q: percentile(counts, q) for q in qs}
