"""Dataset pages, mounted under /datasets/."""

app_name = "datasets"
urlpatterns: list = []
