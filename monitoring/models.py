"""Database tables of the monitoring app."""
