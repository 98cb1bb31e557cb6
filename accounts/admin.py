"""Admin of the accounts app: the sign-in audit trail, read-only, and the admin's own login form."""

from __future__ import annotations

from django.contrib import admin

from accounts.forms import AdminLoginForm
from accounts.models import SignInEvent
from mlops_site.admin import ReadOnlyAdmin

# The admin login calls authenticate() like every login path; this form only names a lockout as such.
admin.site.login_form = AdminLoginForm


@admin.register(SignInEvent)
class SignInEventAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "username", "user", "client_address", "outcome", "path"]
    list_filter = ["outcome"]
    search_fields = ["username"]
    list_select_related = ["user"]
    show_full_result_count = False
