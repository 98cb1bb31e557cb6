"""Health and status endpoints."""

app_name = "monitoring"
urlpatterns: list = []
