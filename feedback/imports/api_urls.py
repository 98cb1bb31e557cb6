"""API routes of feedback imports, mounted under /api/."""

urlpatterns: list = []
