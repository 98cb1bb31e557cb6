"""Bench-only floor: a bare Django view making the same onnxruntime model call as the predict API.

No authentication, throttling, validation, version lookup or storage: what is left is Django's request
handling, JSON in and out, and the model call. Served by gunicorn with bench.floor_settings:

    DJANGO_SETTINGS_MODULE=bench.floor_settings BENCH_FLOOR_MODEL=spec.json gunicorn bench.floor_app

The spec file names the ONNX file, its sha256, the feature schema and the classes (written by
bench/predictions_api.py from the registered version).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from django.core.wsgi import get_wsgi_application
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from ml import predictor as predictor_module
from ml.pipeline import columns_from_rows


def _predictor() -> predictor_module.OnnxPredictor | predictor_module.SklearnPredictor:
    spec = json.loads(Path(os.environ["BENCH_FLOOR_MODEL"]).read_text())
    return predictor_module.predictor_from_artifacts(
        feature_schema=spec["feature_schema"],
        onnx_bytes=Path(spec["onnx_path"]).read_bytes(),
        onnx_sha256=spec["onnx_sha256"],
        classes=spec["classes"],
    )


# Loaded at import, once per worker process, like the API's warm cache.
PREDICTOR = _predictor()


@csrf_exempt
def predict(request: HttpRequest) -> HttpResponse:
    row = json.loads(request.body)["inputs"]
    labels, probabilities = PREDICTOR.predict_columns(columns_from_rows([row], PREDICTOR.feature_schema))
    classes = PREDICTOR.classes or []
    return JsonResponse(
        {
            "prediction": labels[0],
            "probabilities": dict(zip(map(str, classes), probabilities[0], strict=True))
            if probabilities
            else None,
        }
    )


urlpatterns = [path("predict/", predict)]

application = get_wsgi_application()
