"""Drift of a model's inputs and outputs from its training data: reference profiles, binning, tests.

A reference profile holds, per feature, the training rows binned once (numeric: bins between the training
quantiles plus one open end below and one above; categorical: the most frequent categories plus "other"),
so live traffic is binned into the same bins as it is stored, and a drift check only compares two short
histograms. The tests follow Evidently's defaults (docs.evidentlyai.com, "data drift", how it works):

- small samples: two-sample Kolmogorov-Smirnov for numeric features, chi-square for categorical ones (and
  numeric ones with at most DISCRETE_MAX_VALUES distinct values), drifted when p < P_VALUE_THRESHOLD;
- large samples: Wasserstein distance divided by the reference's standard deviation for numeric features,
  Jensen-Shannon distance for categorical ones, drifted when the distance is >= DISTANCE_THRESHOLD;
- PSI is reported for every feature, whichever test decides.

Two deliberate differences from Evidently. The regime is chosen by the smaller of the two samples, not by
the reference alone: here the reference is the whole training set and the window may hold 50 rows, for
which a distance is mostly sampling noise. And chi-square is the test of homogeneity (both samples' counts)
rather than goodness of fit to the reference's shares, because the reference is a sample too.

Binned statistics, against scipy on the raw samples (ml/tests/test_drift.py checks each bound):

- chi-square, Jensen-Shannon and PSI see the same counts as on raw categorical data: exact.
- KS: the statistic is the largest CDF gap at the bin edges, so binned D <= raw D <= binned D + the largest
  share of either sample in one bin (1/NUMERIC_BINS of the reference, plus any pile-up of the current data).
- Wasserstein: each bin's rows stand at their mean (bins keep the sum of their values). Collapsing a bin moves
  every row by at most its distance to the bin mean, so the error is at most the mean such distance over
  both samples: under half the widest inner bin. The open ends are exact: all their mass lies beyond every
  row of the other bin set, where W is linear in each row's position.

scipy is imported by the functions that test, not with this module: scipy.stats costs about a second of
CPU, which every process importing this module at start (web workers, every manage.py) would pay.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ml.drift_bins import Binner, Histogram
from ml.features import MISSING_CATEGORY, NUMERIC

PROFILE_FORMAT = 1
NUMERIC_BINS = 20
PROFILE_DIGITS = 7
#: Training rows a reference is built from: a seeded sample beyond this many. Bin edges and shares from
#: 10,000 rows are within half a percent of the whole set's (a bin of 5% has a standard error of 0.2%),
#: and sorting every column of a large training set cost as much as fitting a linear model on it.
REFERENCE_MAX_ROWS = 10_000
TOP_CATEGORIES = 30
# Evidently tests numeric features with this many distinct values or fewer as categorical.
DISCRETE_MAX_VALUES = 5
# At most this many rows in the smaller sample: p-value tests; more: distances.
SMALL_SAMPLE_MAX = 1000
P_VALUE_THRESHOLD = 0.05
DISTANCE_THRESHOLD = 0.1
PSI_THRESHOLD = 0.1
# Below this many current rows a feature is not tested: any test would be noise.
MIN_ROWS = 30
# Evidently's floor for a zero share in PSI, and for the standard deviation that normalises Wasserstein.
SHARE_FLOOR = 1e-4
STD_FLOOR = 1e-3
# Confidence (highest class probability) bins for prediction confidence and the accuracy estimate.
CONFIDENCE_EDGES = [round(0.05 * i, 2) for i in range(1, 20)]

KS = "ks"
CHI_SQUARE = "chi_square"
WASSERSTEIN = "wasserstein"
JENSEN_SHANNON = "jensen_shannon"


def _rounded(values: np.ndarray) -> np.ndarray:
    """`values` to PROFILE_DIGITS significant digits: a profile is stored on every version row, and full
    precision would nearly double it for nothing a drift test can see."""
    return np.array([float(f"{v:.{PROFILE_DIGITS}g}") for v in values.tolist()], dtype="float64")


def _numeric_spec(values: np.ndarray, *, name: str) -> dict[str, Any]:
    values = np.asarray(values, dtype="float64")
    # One sort serves the distinct values, the quantiles and the bin counts: the profile is built in every
    # training run, where np.unique, np.quantile and binning each sorting again cost tens of milliseconds.
    ordered = np.sort(values[~np.isnan(values)])
    n_distinct = int(np.count_nonzero(np.diff(ordered))) + 1 if len(ordered) else 0
    discrete = n_distinct <= DISCRETE_MAX_VALUES
    if n_distinct == 0:
        cut = np.array([0.0])
    elif discrete:
        distinct = np.unique(ordered)
        # One bin per value seen: edges half way between them (and the only value when there is one).
        cut = (distinct[:-1] + distinct[1:]) / 2 if len(distinct) > 1 else distinct
    else:
        cut = _sorted_quantiles(ordered, np.linspace(0.0, 1.0, NUMERIC_BINS + 1))
        # The outer edges stay exact: no training row lies beyond them, so the open ends mean "unseen".
        cut[1:-1] = _rounded(cut[1:-1])
        cut = np.unique(cut)
    # Bin i holds edges[i-1] < x <= edges[i], as Binner.bin counts: the rows up to each edge, differenced.
    upto = np.concatenate([[0], np.searchsorted(ordered, cut, side="right"), [len(ordered)]])
    running = np.concatenate([[0.0], np.cumsum(ordered)])
    spec: dict[str, Any] = {"name": name, "kind": NUMERIC, "edges": cut.tolist(), "discrete": bool(discrete)}
    spec.update(
        counts=np.diff(upto).tolist(),
        sums=_rounded(running[upto[1:]] - running[upto[:-1]]).tolist(),
        missing=int(len(values) - len(ordered)),
        std=float(_rounded(np.array([np.std(ordered) if len(ordered) else 0.0]))[0]),
    )
    return spec


def _sorted_quantiles(ordered: np.ndarray, q: np.ndarray) -> np.ndarray:
    """np.quantile's default (linear) method on values sorted already, without sorting them again."""
    position = q * (len(ordered) - 1)
    below = np.floor(position).astype(np.intp)
    above = np.minimum(below + 1, len(ordered) - 1)
    fraction = position - below
    return ordered[below] + fraction * (ordered[above] - ordered[below])


def _categorical_spec(
    values: np.ndarray, *, name: str, categories: Sequence[str] | None = None
) -> dict[str, Any]:
    texts = np.asarray(values, dtype=object)
    if categories is None:
        counted = pd.Series(texts[texts != MISSING_CATEGORY]).value_counts()
        # Most frequent first, ties by name, so the same rows give the same profile.
        ordered = sorted(counted.items(), key=lambda item: (-item[1], str(item[0])))
        categories = [str(value) for value, _ in ordered[:TOP_CATEGORIES]]
    spec: dict[str, Any] = {"name": name, "kind": "categorical", "categories": list(categories)}
    histogram = Binner.of(spec).bin(texts)
    spec.update(counts=histogram.counts.tolist(), sums=None, missing=histogram.missing)
    return spec


def column_spec(values: np.ndarray, *, name: str, kind: str) -> dict[str, Any]:
    """The reference entry of one column from its training values."""
    if kind == NUMERIC:
        return _numeric_spec(values, name=name)
    return _categorical_spec(values, name=name)


def labels_as_text(labels: np.ndarray | Sequence[Any]) -> np.ndarray:
    """Class labels as the texts the prediction profile lists (labels are int or text, see ml.train)."""
    return np.asarray([str(label) for label in labels], dtype=object)


def confidences_of(probabilities: np.ndarray | None) -> np.ndarray | None:
    return None if probabilities is None else np.asarray(probabilities, dtype="float64").max(axis=1)


def reference_profile_build(
    *,
    X_train: pd.DataFrame,
    feature_schema: list[dict[str, Any]],
    task: str,
    classes: list[Any] | None,
    holdout_predictions: np.ndarray | None,
    holdout_probabilities: np.ndarray | None,
    y_holdout: pd.Series | None,
) -> dict[str, Any]:
    """The JSON-safe reference of a model version: its training rows binned per feature, and its outputs
    on the holdout (the prediction distribution, and for classifiers the confidence calibration map)."""
    from ml.estimate import calibration_map_build  # a sibling module that imports this one

    training_rows = len(X_train)
    if training_rows > REFERENCE_MAX_ROWS:
        picked = np.random.default_rng(0).choice(training_rows, REFERENCE_MAX_ROWS, replace=False)
        X_train = X_train.iloc[np.sort(picked)]
    features = [
        column_spec(X_train[column["name"]].to_numpy(), name=column["name"], kind=column["kind"])
        for column in feature_schema
    ]
    profile: dict[str, Any] = {
        "format": PROFILE_FORMAT,
        "rows": len(X_train),
        "training_rows": training_rows,
        "features": features,
        "prediction": None,
        "confidence": None,
    }
    if holdout_predictions is not None:
        if classes is not None:
            profile["prediction"] = _categorical_spec(
                labels_as_text(holdout_predictions), name="", categories=[str(c) for c in classes]
            )
        else:
            profile["prediction"] = _numeric_spec(np.asarray(holdout_predictions, dtype="float64"), name="")
            profile["prediction"]["discrete"] = False
    confidences = confidences_of(holdout_probabilities)
    if confidences is not None and holdout_predictions is not None and y_holdout is not None:
        correct = labels_as_text(holdout_predictions) == labels_as_text(y_holdout.to_numpy())
        profile["confidence"] = calibration_map_build(confidences=confidences, correct=correct)
    return profile


def confidence_binner() -> Binner:
    return Binner(NUMERIC, np.asarray(CONFIDENCE_EDGES, dtype="float64"), None)


def _shares(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return counts / total if total else np.zeros(len(counts))


def psi(reference: np.ndarray, current: np.ndarray) -> float:
    """Population stability index over the same bins; empty bins count as SHARE_FLOOR, as in Evidently."""
    r = np.maximum(_shares(np.asarray(reference, dtype="float64")), SHARE_FLOOR)
    c = np.maximum(_shares(np.asarray(current, dtype="float64")), SHARE_FLOOR)
    return float(np.sum((c - r) * np.log(c / r)))


def ks_binned(reference: np.ndarray, current: np.ndarray) -> tuple[float, float]:
    """(D, p-value): the largest gap of the two CDFs at the bin edges, and scipy's asymptotic p-value for
    it (ks_2samp's method="asymp")."""
    r = np.asarray(reference, dtype="float64")
    c = np.asarray(current, dtype="float64")
    n, m = r.sum(), c.sum()
    statistic = float(np.max(np.abs(np.cumsum(r) / n - np.cumsum(c) / m)))
    return statistic, ks_p_value(statistic, n=int(n), m=int(m))


def ks_p_value(statistic: float, *, n: int, m: int) -> float:
    from scipy import stats

    effective = round(n * m / (n + m))
    return float(np.clip(stats.kstwo.sf(statistic, effective), 0.0, 1.0))


def chi_square(reference: np.ndarray, current: np.ndarray) -> tuple[float, float]:
    """(statistic, p-value) of the chi-square test that both samples' counts come from one distribution."""
    table = np.vstack([np.asarray(reference, dtype="float64"), np.asarray(current, dtype="float64")])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return 0.0, 1.0
    from scipy import stats

    result = stats.chi2_contingency(table, correction=False)
    return float(result.statistic), float(result.pvalue)


def jensen_shannon(reference: np.ndarray, current: np.ndarray) -> float:
    """scipy's Jensen-Shannon distance (natural log, so at most sqrt(ln 2) ~ 0.83) of the two shares."""
    from scipy.spatial import distance

    value = distance.jensenshannon(_shares(np.asarray(reference, float)), _shares(np.asarray(current, float)))
    return float(value) if math.isfinite(value) else 0.0


def wasserstein_binned(reference: Histogram, current: Histogram, *, reference_std: float) -> float:
    """Wasserstein-1 distance with each bin's rows at their mean, divided by the reference's std."""
    assert reference.sums is not None
    assert current.sums is not None

    def points(h: Histogram) -> tuple[np.ndarray, np.ndarray]:
        filled = h.counts > 0
        return h.sums[filled] / h.counts[filled], h.counts[filled].astype("float64")

    u, u_weights = points(reference)
    v, v_weights = points(current)
    from scipy import stats

    raw = stats.wasserstein_distance(u, v, u_weights=u_weights, v_weights=v_weights)
    return float(raw / max(reference_std, STD_FLOOR))


def reference_histogram(spec: dict[str, Any]) -> Histogram:
    sums = spec.get("sums")
    return Histogram(
        np.asarray(spec["counts"], dtype="int64"),
        np.asarray(sums, dtype="float64") if sums is not None else None,
        int(spec.get("missing", 0)),
    )


def column_drift(spec: dict[str, Any], current: Histogram) -> dict[str, Any]:
    """One column's drift from its reference: the test chosen by sample size and kind, its statistic,
    p-value or distance, threshold and verdict, plus PSI and the missing shares."""
    reference = reference_histogram(spec)
    n_ref, n_cur = reference.rows, current.rows
    result: dict[str, Any] = {
        "feature": spec["name"],
        "kind": spec["kind"],
        "rows": n_cur,
        "reference_rows": n_ref,
        "missing_share": current.missing / (n_cur + current.missing) if n_cur + current.missing else 0.0,
        "reference_missing_share": reference.missing / (n_ref + reference.missing)
        if n_ref + reference.missing
        else 0.0,
        "test": None,
        "statistic": None,
        "p_value": None,
        "threshold": None,
        "drifted": False,
        "psi": None,
    }
    if n_cur < MIN_ROWS or n_ref == 0:
        result["reason"] = f"fewer than {MIN_ROWS} rows" if n_cur < MIN_ROWS else "no reference rows"
        return result
    result["psi"] = round(psi(reference.counts, current.counts), 6)
    small = min(n_ref, n_cur) <= SMALL_SAMPLE_MAX
    categorical = spec["kind"] != NUMERIC or spec.get("discrete", False)
    if small and categorical:
        statistic, p_value = chi_square(reference.counts, current.counts)
        result.update(test=CHI_SQUARE, statistic=statistic, p_value=p_value, threshold=P_VALUE_THRESHOLD)
        result["drifted"] = p_value < P_VALUE_THRESHOLD
    elif small:
        statistic, p_value = ks_binned(reference.counts, current.counts)
        result.update(test=KS, statistic=statistic, p_value=p_value, threshold=P_VALUE_THRESHOLD)
        result["drifted"] = p_value < P_VALUE_THRESHOLD
    elif categorical:
        statistic = jensen_shannon(reference.counts, current.counts)
        result.update(test=JENSEN_SHANNON, statistic=statistic, threshold=DISTANCE_THRESHOLD)
        result["drifted"] = statistic >= DISTANCE_THRESHOLD
    else:
        statistic = wasserstein_binned(reference, current, reference_std=float(spec.get("std") or 0.0))
        result.update(test=WASSERSTEIN, statistic=statistic, threshold=DISTANCE_THRESHOLD)
        result["drifted"] = statistic >= DISTANCE_THRESHOLD
    result["drifted"] = bool(result["drifted"])
    for name in ("statistic", "p_value"):
        if result[name] is not None:
            result[name] = round(float(result[name]), 6)
    return result


@dataclass(frozen=True)
class DatasetDrift:
    features: list[dict[str, Any]]
    tested: int
    drifted: int
    share: float
    drifting: bool


def dataset_drift(
    profile: dict[str, Any], current: dict[str, Histogram], *, share_threshold: float
) -> DatasetDrift:
    """Every feature's drift; the model drifts when at least `share_threshold` of the tested ones do."""
    results = []
    for spec in profile["features"]:
        histogram = current.get(spec["name"])
        if histogram is None:
            histogram = Histogram(np.zeros(len(spec["counts"]), dtype="int64"), None, 0)
        results.append(column_drift(spec, histogram))
    tested = [r for r in results if r["test"] is not None]
    drifted = sum(1 for r in tested if r["drifted"])
    share = drifted / len(tested) if tested else 0.0
    return DatasetDrift(results, len(tested), drifted, share, bool(tested) and share >= share_threshold)


def bin_labels(spec: dict[str, Any]) -> list[str]:
    """A readable name per bin, for the pages: '<= a', '(a, b]', '> z'; the categories and 'other'."""
    if spec["kind"] != NUMERIC:
        return [*spec["categories"], "other"]
    edges = spec["edges"]
    if not edges:
        return ["all"]
    inner = [f"({low:.4g}, {high:.4g}]" for low, high in itertools.pairwise(edges)]
    return [f"<= {edges[0]:.4g}", *inner, f"> {edges[-1]:.4g}"]
