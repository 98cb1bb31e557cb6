"""Fewer structures written for every stored prediction row.

Indexes: Django gave four foreign keys a single-column index each, although each already leads a composite
index that serves the same lookups, joins and cascading deletes: Prediction.request
(prediction_unique_row), Prediction.user (prediction_user_keyset), Prediction.model_version and
PredictionRequest.model_version (prediction_version_created, prediction_request_version). Each index is
written on every stored row; the three on Prediction made up close to a third of a row's B-tree writes.

Constraints: Prediction's request, user and model_version lose their database foreign key constraints, as
batch_job did before them. PostgreSQL checks each constraint for every inserted row with a locking lookup
of the referenced row: 17 µs a row for these three, 60% of the cost of copying a batch chunk in, for
values that are the same on every row of a chunk. Django still performs the deletes that matter (a
request's rows go with it, a deleted user's rows keep a null user, a version with predictions cannot be
deleted), and only the storing code writes these rows, in the transaction that writes or locks what they
point to.

On PostgreSQL this drops the indexes and constraints in place; SQLite, which cannot drop a constraint,
copies the table once.
"""

from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("models_registry", "0007_registeredmodel_triton"),
        ("predictions", "0006_batch_chunks"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AlterField(
            model_name="prediction",
            name="model_version",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                on_delete=models.deletion.PROTECT,
                related_name="predictions",
                to="models_registry.modelversion",
            ),
        ),
        migrations.AlterField(
            model_name="prediction",
            name="request",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                on_delete=models.deletion.CASCADE,
                related_name="predictions",
                to="predictions.predictionrequest",
            ),
        ),
        migrations.AlterField(
            model_name="prediction",
            name="user",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                db_index=False,
                null=True,
                on_delete=models.deletion.SET_NULL,
                related_name="predictions",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AlterField(
            model_name="predictionrequest",
            name="model_version",
            field=models.ForeignKey(
                db_index=False,
                on_delete=models.deletion.PROTECT,
                related_name="prediction_requests",
                to="models_registry.modelversion",
            ),
        ),
    ]
