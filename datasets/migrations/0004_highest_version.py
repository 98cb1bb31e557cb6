"""Dataset.highest_version, so that deleting a version never lets its number be given to other content."""

from django.db import migrations, models
from django.db.models import Max, OuterRef, Subquery, Value
from django.db.models.functions import Coalesce


def highest_version_fill(apps, schema_editor):
    Dataset = apps.get_model("datasets", "Dataset")
    DatasetVersion = apps.get_model("datasets", "DatasetVersion")
    highest = (
        DatasetVersion.objects.filter(dataset=OuterRef("pk"))
        .values("dataset")
        .annotate(highest=Max("version"))
        .values("highest")
    )
    Dataset.objects.update(highest_version=Coalesce(Subquery(highest), Value(0)))


class Migration(migrations.Migration):
    dependencies = [
        ("datasets", "0003_columnar_copy"),
    ]

    operations = [
        migrations.AddField(
            model_name="dataset",
            name="highest_version",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.RunPython(highest_version_fill, migrations.RunPython.noop),
    ]
