"""Pure training core: catalogue, pipeline, metrics, artifacts and predictors, with no Django imports."""
