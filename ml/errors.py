"""Exceptions raised by the training core, with messages meant for the person who gave the input."""

from __future__ import annotations


class TrainingInputError(ValueError):
    """The dataset, target, algorithm or hyperparameters cannot be used; the message says why."""


class ArtifactError(Exception):
    """A stored or uploaded model file is refused: checksum mismatch, untrusted type or unsupported format."""


class PredictionInputError(ValueError):
    """An input row cannot be turned into the model's features; the message names the row and column."""
