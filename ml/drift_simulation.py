"""Synthetic traffic with a concept that shifts in one region of feature space, for the drift simulation.

Two informative features and a noise feature. The original training data covers x0 up to TRAINING_X0_MAX;
live traffic covers the whole range. Before the drift a row is positive when x1 > 0; after it, every row
in the drift region (x0 > DRIFT_X0_MIN, beyond the original data) is positive (a segment that now always
churns, say), so half the region's answers turn wrong. A model that learns the new concept
therefore loses nothing on the original holdout, which is what the loop's guardrail checks. LABEL_NOISE of
the labels are flipped at random, so no model is perfect and the tests have something to weigh.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

X0_RANGE = (-3.0, 3.0)
TRAINING_X0_MAX = 1.0
DRIFT_X0_MIN = 1.0
LABEL_NOISE = 0.03
TARGET = "label"
FEATURES = ("x0", "x1", "x2")
CLASSES = ("no", "yes")


def features_draw(n: int, *, rng: np.random.Generator, x0_max: float = X0_RANGE[1]) -> pd.DataFrame:
    """`n` rows of inputs; x0 uniform on [-3, x0_max], x1 uniform on [-3, 3], x2 pure noise."""
    return pd.DataFrame(
        {
            "x0": np.round(rng.uniform(X0_RANGE[0], x0_max, n), 4),
            "x1": np.round(rng.uniform(-3.0, 3.0, n), 4),
            "x2": np.round(rng.normal(0.0, 1.0, n), 4),
        }
    )


def labels(frame: pd.DataFrame, *, drifted: bool, rng: np.random.Generator | None = None) -> np.ndarray:
    """The true class of each row under the old concept, or the new one after the drift.

    With `rng`, LABEL_NOISE of the rows get the other class.
    """
    positive = frame["x1"].to_numpy() > 0
    if drifted:
        positive = positive | (frame["x0"].to_numpy() > DRIFT_X0_MIN)
    if rng is not None:
        positive = np.where(rng.random(len(positive)) < LABEL_NOISE, ~positive, positive)
    return np.where(positive, CLASSES[1], CLASSES[0])


def random_labels(n: int, *, rng: np.random.Generator) -> np.ndarray:
    return rng.choice(np.array(CLASSES), n)


def training_frame(n: int, *, seed: int) -> pd.DataFrame:
    """The champion's training data: the old concept on the original range of x0."""
    rng = np.random.default_rng(seed)
    frame = features_draw(n, rng=rng, x0_max=TRAINING_X0_MAX)
    frame[TARGET] = labels(frame, drifted=False, rng=rng)
    return frame
