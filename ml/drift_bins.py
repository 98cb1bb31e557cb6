"""Binning live values into a reference profile's bins: numeric edges or known categories, missing rows
apart, one histogram per column (what ml.drift compares and monitoring's hourly rollups store)."""

from __future__ import annotations

import bisect
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ml.features import MISSING_CATEGORY, NUMERIC

MISSING_BIN = -1
# Up to this many values, categories are looked up one by one: cheaper than hashing the batch first.
SMALL_BATCH = 64
# Up to this many values, Binner.bin_few counts them in plain Python: numpy's fixed cost per call (about 6 µs
# per column) is most of a single-row request's binning otherwise.
FEW_VALUES = 16


@dataclass
class Histogram:
    """One column binned: rows per bin, the sum of the values per bin (numeric only), missing rows."""

    counts: np.ndarray
    sums: np.ndarray | None
    missing: int

    @property
    def rows(self) -> int:
        return int(self.counts.sum())


@dataclass(frozen=True)
class Binner:
    """A profile entry ready to bin values: numeric edges, or each category's bin."""

    kind: str
    edges: np.ndarray | None
    categories: dict[str, int] | None

    @property
    def n_bins(self) -> int:
        if self.edges is not None:
            return len(self.edges) + 1
        assert self.categories is not None
        return len(self.categories) + 1

    @classmethod
    def of(cls, spec: dict[str, Any]) -> Binner:
        if spec["kind"] == NUMERIC:
            return cls(NUMERIC, np.asarray(spec["edges"], dtype="float64"), None)
        return cls(spec["kind"], None, {str(c): i for i, c in enumerate(spec["categories"])})

    @functools.cached_property
    def edges_list(self) -> list[float]:
        return [] if self.edges is None else self.edges.tolist()

    def bin_few(self, values: Sequence[Any]) -> dict[int, tuple[int, float]]:
        """What bin() counts, as {bin: (rows, sum of its values)} for the bins that got rows, missing rows
        under MISSING_BIN with a sum of 0: the same bins and sums, for a handful of values (FEW_VALUES)."""
        found: dict[int, tuple[int, float]] = {}
        if self.edges is not None:
            edges = self.edges_list
            for value in values:
                number = float(value)
                if number != number:  # NaN: missing
                    rows, _ = found.get(MISSING_BIN, (0, 0.0))
                    found[MISSING_BIN] = (rows + 1, 0.0)
                    continue
                # bisect_left is numpy's searchsorted(side="left"): bin i holds edges[i-1] < x <= edges[i].
                index = bisect.bisect_left(edges, number)
                rows, total = found.get(index, (0, 0.0))
                found[index] = (rows + 1, total + number)
            return found
        assert self.categories is not None
        other = len(self.categories)
        for value in values:
            index = MISSING_BIN if value == MISSING_CATEGORY else self.categories.get(value, other)
            rows, _ = found.get(index, (0, 0.0))
            found[index] = (rows + 1, 0.0)
        return found

    def bin(self, values: np.ndarray | Sequence[Any]) -> Histogram:
        """Bin `values` (float64 with NaN for missing; or canonical texts with "" for missing)."""
        if self.edges is not None:
            numbers = np.asarray(values, dtype="float64")
            present = ~np.isnan(numbers)
            kept = numbers[present] if not present.all() else numbers
            # side="left": bin i holds edges[i-1] < x <= edges[i]; bin 0 is at or below the first edge.
            index = np.searchsorted(self.edges, kept, side="left")
            counts = np.bincount(index, minlength=self.n_bins)
            sums = np.bincount(index, weights=kept, minlength=self.n_bins)
            return Histogram(counts, sums, int(len(numbers) - len(kept)))
        assert self.categories is not None
        texts = np.asarray(values, dtype=object)
        missing = texts == MISSING_CATEGORY
        kept = texts[~missing] if missing.any() else texts
        # Unknown categories go to the last bin, "other".
        other = len(self.categories)
        if len(kept) <= SMALL_BATCH:
            index = np.fromiter((self.categories.get(v, other) for v in kept), dtype=np.intp, count=len(kept))
        else:
            # One dictionary lookup per distinct value: a batch holds few distinct categories.
            codes, uniques = pd.factorize(kept)
            index = np.fromiter((self.categories.get(v, other) for v in uniques), dtype=np.intp)[codes]
        return Histogram(np.bincount(index, minlength=self.n_bins), None, int(missing.sum()))
