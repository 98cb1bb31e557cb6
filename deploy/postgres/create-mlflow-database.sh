#!/bin/sh
# Runs once, when the PostgreSQL volume is first initialised: MLflow keeps its tables in their own database.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -c "CREATE DATABASE ${MLFLOW_DATABASE:-mlflow} OWNER \"$POSTGRES_USER\";"
