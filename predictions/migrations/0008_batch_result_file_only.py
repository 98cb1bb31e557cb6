from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("predictions", "0007_prediction_lighter_writes"),
    ]

    operations = [
        migrations.AddField(
            model_name="batchpredictionjob",
            name="store_predictions",
            field=models.BooleanField(default=True),
        ),
        migrations.AddField(
            model_name="batchpredictionchunk",
            name="predicted_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="batchpredictionchunk",
            name="walked_from",
            field=models.PositiveBigIntegerField(blank=True, null=True),
        ),
    ]
