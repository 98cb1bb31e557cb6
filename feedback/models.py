"""Database tables of the feedback app."""
