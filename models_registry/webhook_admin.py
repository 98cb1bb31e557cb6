"""Django admin for webhooks and their deliveries; secrets are written once and never shown again."""

from __future__ import annotations

import secrets

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from mlops_site.admin import ReadOnlyAdmin, ReadOnlyInline
from models_registry import webhook_services
from models_registry.models import Webhook, WebhookAttempt, WebhookDelivery, WebhookEvent

WEBHOOK_SECRET_MIN_LENGTH = 16


class WebhookAdminForm(forms.ModelForm):
    """The secret is write-only: never shown again, and an empty field keeps the stored one."""

    url = forms.URLField(
        max_length=500,
        assume_scheme="https",
        help_text="http:// or https:// only.",
        widget=forms.URLInput(attrs={"size": 70}),
    )
    events = forms.MultipleChoiceField(choices=WebhookEvent.choices, widget=forms.CheckboxSelectMultiple)
    secret = forms.CharField(
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text=(
            "Shared with the receiver to check the X-MLOps-Signature header "
            f"(at least {WEBHOOK_SECRET_MIN_LENGTH} "
            "characters). Leave empty to keep the current secret; on a new webhook, empty generates one."
        ),
    )

    class Meta:
        model = Webhook
        fields = ["url", "events", "secret", "is_active"]

    def clean_secret(self) -> str:
        secret = self.cleaned_data.get("secret") or ""
        if not secret:
            return self.instance.secret if self.instance.pk else secrets.token_urlsafe(32)
        if len(secret) < WEBHOOK_SECRET_MIN_LENGTH:
            raise ValidationError(f"Use at least {WEBHOOK_SECRET_MIN_LENGTH} characters.")
        return secret


class WebhookInline(admin.StackedInline):
    model = Webhook
    form = WebhookAdminForm
    extra = 0
    fields = ["url", "events", "secret", "is_active", "deliveries_link"]
    readonly_fields = ["deliveries_link"]

    @admin.display(description="Deliveries")
    def deliveries_link(self, obj: Webhook) -> SafeString | str:
        if not obj.pk:
            return "—"
        url = reverse("admin:models_registry_webhookdelivery_changelist") + f"?webhook__id__exact={obj.pk}"
        return format_html('<a href="{}">Deliveries and attempts</a>', url)


RECENT_DELIVERIES = 20


@admin.register(Webhook)
class WebhookAdmin(admin.ModelAdmin):
    form = WebhookAdminForm
    list_display = ["registered_model", "url", "event_list", "is_active", "failed_deliveries", "created_at"]
    list_select_related = ["registered_model"]
    list_filter = ["is_active", "registered_model"]
    search_fields = ["url", "registered_model__name"]
    readonly_fields = ["recent_deliveries"]

    def get_fields(self, request: HttpRequest, obj: Webhook | None = None) -> list[str]:
        fields = ["registered_model", "url", "events", "secret", "is_active"]
        return [*fields, "recent_deliveries"] if obj else fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[Webhook]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                failed_total=Count("deliveries", filter=Q(deliveries__status=WebhookDelivery.Status.FAILED))
            )
        )

    def get_form(
        self, request: HttpRequest, obj: Webhook | None = None, **kwargs: object
    ) -> type[forms.ModelForm]:
        kwargs["fields"] = ["registered_model", "url", "events", "secret", "is_active"]
        return super().get_form(request, obj, **kwargs)

    @admin.display(description="Recent deliveries")
    def recent_deliveries(self, obj: Webhook) -> SafeString:
        deliveries = obj.deliveries.order_by("-created_at", "-id")[:RECENT_DELIVERIES]
        rows = format_html_join(
            "",
            '<tr><td><a href="{}">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>',
            (
                (
                    reverse("admin:models_registry_webhookdelivery_change", args=[d.pk]),
                    d.event,
                    d.status,
                    d.attempts,
                    d.last_status_code or "—",
                    d.last_error or "—",
                    d.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                )
                for d in deliveries
            ),
        )
        everything = (
            reverse("admin:models_registry_webhookdelivery_changelist") + f"?webhook__id__exact={obj.pk}"
        )
        return format_html(
            "<table><thead><tr><th>Event</th><th>Status</th><th>Attempts</th><th>Last HTTP status</th>"
            "<th>Last error</th><th>Created</th></tr></thead><tbody>{}</tbody></table>"
            '<a href="{}">All deliveries</a>',
            rows,
            everything,
        )

    @admin.display(description="Events")
    def event_list(self, obj: Webhook) -> str:
        return ", ".join(obj.events or [])

    @admin.display(description="Failed deliveries", ordering="failed_total")
    def failed_deliveries(self, obj: Webhook) -> int:
        return obj.failed_total


class WebhookAttemptInline(ReadOnlyInline):
    model = WebhookAttempt
    fields = ["number", "status_code", "error", "duration_ms", "created_at"]
    readonly_fields = fields
    ordering = ["number"]


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    list_display = [
        "event",
        "webhook",
        "status",
        "attempts",
        "last_status_code",
        "created_at",
        "delivered_at",
    ]
    list_select_related = ["webhook__registered_model"]
    list_filter = ["status", "event", "webhook__registered_model"]
    search_fields = ["=event_id", "webhook__url"]
    fields = [
        "webhook",
        "event",
        "event_id",
        "status",
        "attempts",
        "next_attempt_at",
        "last_status_code",
        "last_error",
        "created_at",
        "delivered_at",
        "payload_json",
    ]
    readonly_fields = fields
    inlines = [WebhookAttemptInline]
    actions = ["send_again"]

    @admin.display(description="Payload")
    def payload_json(self, obj: WebhookDelivery) -> SafeString:
        import json

        return format_html("<pre>{}</pre>", json.dumps(obj.payload, indent=2, sort_keys=True))

    @admin.action(description="Send failed deliveries again (one more attempt)")
    def send_again(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        failed = [d for d in queryset if d.status == WebhookDelivery.Status.FAILED]
        for delivery in failed:
            webhook_services.webhook_delivery_resend(delivery=delivery)
        skipped = queryset.count() - len(failed)
        self.message_user(request, f"{len(failed)} failed deliveries sent again.", messages.SUCCESS)
        if skipped:
            self.message_user(
                request, f"{skipped} deliveries were not failed and were left alone.", messages.WARNING
            )
