from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("datasets", "0002_lineage"),
    ]

    operations = [
        migrations.AddField(
            model_name="datasetversion",
            name="columnar_key",
            field=models.CharField(blank=True, max_length=255),
        ),
        migrations.AddField(
            model_name="datasetversion",
            name="columnar_sha256",
            field=models.CharField(blank=True, max_length=64),
        ),
    ]
