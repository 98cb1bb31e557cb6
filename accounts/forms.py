"""Forms of the accounts pages."""

from django import forms


class TokenActionForm(forms.Form):
    action = forms.ChoiceField(
        choices=[("create", "Create"), ("regenerate", "Regenerate"), ("revoke", "Revoke")],
        error_messages={
            "required": "The form did not say which token action to take (create, regenerate or revoke).",
            "invalid_choice": "Unknown token action %(value)s: use create, regenerate or revoke.",
        },
    )
