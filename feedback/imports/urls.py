"""Pages of feedback imports (files of true outcomes)."""

urlpatterns: list = []
