"""Database tables of the predictions app."""
