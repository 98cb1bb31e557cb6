"""Predictions: single rows from the page and the API, and batch CSV jobs."""
