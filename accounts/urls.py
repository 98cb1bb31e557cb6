"""Account pages beside Django's login/logout views."""

app_name = "accounts"
urlpatterns: list = []
