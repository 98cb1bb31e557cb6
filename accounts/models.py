"""Database tables of the accounts app."""
