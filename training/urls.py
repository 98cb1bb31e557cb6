"""Training pages, mounted under /training/."""

from django.urls import path

from training import views

app_name = "training"
urlpatterns = [
    path("", views.training_list, name="list"),
    path("new", views.training_create, name="create"),
    path("<int:run_id>/", views.training_detail, name="detail"),
    path("<int:run_id>/status", views.training_status, name="status"),
]
