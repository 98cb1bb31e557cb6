"""Datasets, training runs and the model registry."""
