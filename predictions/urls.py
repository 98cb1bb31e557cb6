"""Pages of the predictions app: the predict form per model, the history, and batch jobs."""

from django.urls import path

from predictions import views
from predictions.batch import views as batch_views

app_name = "predictions"

urlpatterns = [
    path("predict/", views.predict_index, name="predict-index"),
    path("predict/<slug:name>/", views.predict, name="predict"),
    path("predict/<slug:name>/batch/", batch_views.batch_new, name="batch-new"),
    path("predictions/", views.prediction_list, name="list"),
    path("predictions/<int:prediction_id>/", views.prediction_detail, name="detail"),
    path("batch/", batch_views.batch_list, name="batch-list"),
    path("batch/<uuid:job_uuid>/", batch_views.batch_detail, name="batch-detail"),
    path("batch/<uuid:job_uuid>/status/", batch_views.batch_status, name="batch-status"),
    path("batch/<uuid:job_uuid>/result/", batch_views.batch_result, name="batch-result"),
    path("batch/<uuid:job_uuid>/errors/", batch_views.batch_errors, name="batch-errors"),
]
