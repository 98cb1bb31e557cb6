"""Monitoring: health endpoints, worker heartbeats, metrics and charts."""
