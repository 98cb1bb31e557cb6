"""Indexes in the history's keyset order (created_at, id), led by the filters the history uses.

The history and GET /api/predictions/ page by (created_at, id) newest first: a user's list walks
(user, created_at, id); staff's walks (created_at, id); a channel filter (user, channel, created_at, id).
The old two-column indexes are prefixes of the new ones and go.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("predictions", "0003_shadow"),
    ]

    operations = [
        migrations.RemoveIndex(model_name="prediction", name="prediction_user_created"),
        migrations.RemoveIndex(model_name="prediction", name="prediction_created"),
        migrations.AddIndex(
            model_name="prediction",
            index=models.Index(fields=["user", "-created_at", "-id"], name="prediction_user_keyset"),
        ),
        migrations.AddIndex(
            model_name="prediction",
            index=models.Index(fields=["-created_at", "-id"], name="prediction_keyset"),
        ),
        migrations.AddIndex(
            model_name="prediction",
            index=models.Index(
                fields=["user", "channel", "-created_at", "-id"], name="prediction_user_channel_keyset"
            ),
        ),
    ]
