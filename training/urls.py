"""Training pages, mounted under /training/: runs, and a model's retraining page with its staff actions."""

from django.urls import path

from training import loop_views, views

app_name = "training"
urlpatterns = [
    path("", views.training_list, name="list"),
    path("new", views.training_create, name="create"),
    path("<int:run_id>/", views.training_detail, name="detail"),
    path("<int:run_id>/status", views.training_status, name="status"),
    path("demo/remove", views.demo_remove, name="demo-remove"),
    path("models/<str:name>/retraining/", loop_views.retraining_page, name="retraining"),
    path("models/<str:name>/retraining/policy", loop_views.retraining_policy_save, name="retraining-policy"),
    path("models/<str:name>/retraining/retrain", loop_views.retraining_retrain, name="retraining-retrain"),
    path(
        "retrainings/<int:retraining_id>/approve",
        loop_views.retraining_approve,
        name="retraining-approve",
    ),
]
