"""Export model versions as a Triton model repository (config.pbtxt and model.onnx per model)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from models_registry import selectors
from models_registry.triton import model_config, services


class Command(BaseCommand):
    help = (
        "Write a model version, or with --production the production version of every model, into a Triton "
        "model repository: <output>/<model>/config.pbtxt and <output>/<model>/<version>/model.onnx. The "
        "config is written from the ONNX graph's real inputs and outputs and checked against them."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", nargs="?", help="The registered model's name.")
        parser.add_argument("version", nargs="?", type=int, help="The version number to export.")
        parser.add_argument(
            "--production",
            action="store_true",
            help="Export the production version of every model (instead of NAME VERSION).",
        )
        parser.add_argument(
            "--output",
            required=True,
            help="The model repository folder (created if needed; other models kept).",
        )
        parser.add_argument(
            "--backend",
            choices=[model_config.ONNX_BACKEND, model_config.PYTHON_BACKEND],
            default=model_config.ONNX_BACKEND,
            help="onnxruntime (Triton's ONNX Runtime backend, the default) or python (a model.py serving the "
            "same model.onnx with onnxruntime, for a Triton with only the Python backend).",
        )
        parser.add_argument(
            "--max-batch-size",
            type=int,
            default=model_config.DEFAULT_MAX_BATCH_SIZE,
            help="Rows per batch Triton's dynamic batcher may form "
            f"(default {model_config.DEFAULT_MAX_BATCH_SIZE}).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        name, number = options["name"], options["version"]
        if options["production"]:
            if name is not None:
                raise CommandError("Give either NAME VERSION or --production, not both.")
            versions = services.triton_production_versions()
            if not versions:
                raise CommandError("No model has a production version; nothing was exported.")
        else:
            if name is None or number is None:
                raise CommandError("Give NAME VERSION, or --production for every model's production version.")
            found = selectors.model_version_list(model_name=name).filter(version=number).first()
            if found is None:
                raise CommandError(f"Model {name!r} has no version {number}.")
            versions = [found]
        output = Path(options["output"])
        if output.exists() and not output.is_dir():
            raise CommandError(f"{output} exists and is not a folder.")
        try:
            written = services.triton_repository_write(
                model_versions=versions,
                output=output,
                backend=options["backend"],
                max_batch_size=options["max_batch_size"],
            )
        except services.ExportRefused as exc:
            raise CommandError("Nothing was exported. " + " ".join(exc.messages)) from None
        for version in versions:
            self.stdout.write(f"Exported {version} to {output / version.registered_model.name}")
        self.stdout.write(self.style.SUCCESS(f"{len(written)} files written under {output}."))
