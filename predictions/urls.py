"""Pages of the predictions app: the predict form per model and the history of one's predictions."""

from django.urls import path

from predictions import views

app_name = "predictions"

urlpatterns = [
    path("predict/", views.predict_index, name="predict-index"),
    path("predict/<slug:name>/", views.predict, name="predict"),
    path("predictions/", views.prediction_list, name="list"),
    path("predictions/<int:prediction_id>/", views.prediction_detail, name="detail"),
]
