"""Feedback: ground-truth labels and corrections for predictions."""
