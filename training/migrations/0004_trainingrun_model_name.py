"""A training run names its model: the model is registered with the run's first version, not before."""

from django.db import migrations, models
from django.db.models import OuterRef, Subquery
from django.db.models.deletion import SET_NULL


def model_names_copy(apps, schema_editor) -> None:
    TrainingRun = apps.get_model("training", "TrainingRun")
    RegisteredModel = apps.get_model("models_registry", "RegisteredModel")
    TrainingRun.objects.update(
        model_name=Subquery(
            RegisteredModel.objects.filter(pk=OuterRef("registered_model_id")).values("name")[:1]
        )
    )


class Migration(migrations.Migration):
    dependencies = [
        ("models_registry", "0004_modelversion_reference_profile"),
        ("training", "0003_retrainingpolicy_trigger_on_drift"),
    ]

    operations = [
        migrations.AddField(
            model_name="trainingrun",
            name="model_name",
            field=models.CharField(default="", max_length=64),
            preserve_default=False,
        ),
        migrations.RunPython(model_names_copy, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="trainingrun",
            name="registered_model",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=SET_NULL,
                related_name="training_runs",
                to="models_registry.registeredmodel",
            ),
        ),
    ]
