"""Database tables of the models_registry app."""
