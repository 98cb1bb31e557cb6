"""Drop the single-column indexes Django made for four foreign keys that already lead a composite index.

Prediction.request leads prediction_unique_row, Prediction.user prediction_user_keyset, and
Prediction.model_version and PredictionRequest.model_version prediction_version_created and
prediction_request_version: those serve the same lookups, joins and cascading deletes. Each index is
written on every stored row, so the three on Prediction made up close to a third of a row's B-tree writes.

The database side drops the indexes by name and nothing else: an AlterField would make SQLite copy the
whole table to change an index.
"""

from django.conf import settings
from django.db import migrations, models

#: (model, field) pairs whose own index goes.
_FIELDS = (
    ("prediction", "request"),
    ("prediction", "user"),
    ("prediction", "model_version"),
    ("predictionrequest", "model_version"),
)


def _single_column_indexes(schema_editor, model, field):
    return schema_editor._constraint_names(model, [field.column], index=True, unique=False, primary_key=False)


def indexes_drop(apps, schema_editor):
    for model_name, field_name in _FIELDS:
        model = apps.get_model("predictions", model_name)
        field = model._meta.get_field(field_name)
        for name in _single_column_indexes(schema_editor, model, field):
            schema_editor.execute(schema_editor._delete_index_sql(model, name))


def indexes_create(apps, schema_editor):
    for model_name, field_name in _FIELDS:
        model = apps.get_model("predictions", model_name)
        field = model._meta.get_field(field_name)
        if not _single_column_indexes(schema_editor, model, field):
            schema_editor.execute(schema_editor._create_index_sql(model, fields=[field]))


class Migration(migrations.Migration):
    dependencies = [
        ("models_registry", "0007_registeredmodel_triton"),
        ("predictions", "0006_batch_chunks"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(indexes_drop, indexes_create)],
            state_operations=[
                migrations.AlterField(
                    model_name="prediction",
                    name="model_version",
                    field=models.ForeignKey(
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
            ],
        ),
    ]
