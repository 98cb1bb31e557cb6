"""The drift simulation: synthetic traffic through the app's API, ground truth from a concept that shifts, and
the closed loop reacting on a worker, with a timeline of what happened and the figures it adds up to.

Predictions and outcomes go through the real API (URL routing, token authentication, validation, the
services); the loop's beat pass (the same service the beat runs every minute) runs after every step, and
retrainings and shadow batches run on the Celery worker (or eagerly in this process with `inline`).
Traffic pauses while a retraining or shadow batch is under way, so runs are repeatable.
"""

from __future__ import annotations

import io
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np
from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from datasets import services as dataset_services
from ml import drift_simulation as sim
from models_registry import transition_services
from models_registry.models import ModelVersion, RegisteredModel, Stage
from predictions import shadow
from predictions.models import ShadowBatch
from training import retraining_services
from training import services as training_services
from training.models import Retraining, RetrainingEvent, TrainingRun

USER = "drift-simulator"
CHAMPION_PARAMS = {"n_estimators": 40, "max_depth": 6, "min_samples_leaf": 3}
WORSE_PARAMS = {"n_estimators": 1, "max_depth": 1}
TRAINING_ROWS = 500
#: Rows of the rolling accuracy the timeline shows and recovery is judged on.
ROLLING_ROWS = 100
#: Recovered: rolling accuracy within this of the accuracy before the drift.
RECOVERY_POINTS = 0.02
POLICY = {
    "enabled": True,
    "metric": "accuracy",
    "threshold": 0.9,
    "min_labels": 100,
    "window": "last",
    "last_n": 100,
    "cooldown_minutes": 0,
    "margin": 0.02,
    "alpha": 0.05,
    "auto_promote": True,
    "max_per_day": 20,
    "recent_holdout_share": 0.5,
    "recent_weight": 1,
    "feedback_rows": 150,
    "shadow_min_labels": 100,
    "rollback_labels": 100,
}


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    # From drift_at on: the drifted concept, random labels, or a staff retraining with a crippled model.
    drift: bool = False
    random_labels: bool = False
    worse_challenger: bool = False


SCENARIOS = {
    "concept": Scenario(
        "concept", "the concept flips in one region at the drift row; must recover", drift=True
    ),
    "none": Scenario("none", "no drift at all; must not retrain"),
    "random": Scenario("random", "random labels from the drift row on; must not promote", random_labels=True),
    "worse": Scenario(
        "worse", "a staff retraining with a deliberately weak model at the drift row; must be held back",
        worse_challenger=True,
    ),
}  # fmt: skip


@dataclass
class SimulationResult:
    scenario: str
    seed: int
    model: str
    rows: int
    drift_at: int
    accuracy_before: float | None = None
    accuracy_lowest: float | None = None
    accuracy_after: float | None = None
    rows_to_trigger: int | None = None
    rows_to_promotion: int | None = None
    rows_to_recovery: int | None = None
    retrainings: int = 0
    promotions: int = 0
    rollbacks: int = 0
    seconds: float = 0.0
    events: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


class SimulationError(Exception):
    """The simulation could not go on (a run failed, a worker never answered)."""


def _wait(condition: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SimulationError(f"{what} did not happen within {timeout:.0f} s: is a worker running?")
        time.sleep(0.1)


def _beat_pass() -> None:
    """What the beat runs every minute (the loop's checks) and every ten seconds (the shadow sweep)."""
    retraining_services.retraining_loop_check()
    # The sweep leaves rows younger than SETTLE_SECONDS for later, in case their transaction is still open;
    # the simulation's requests have all returned, so it need not wait for them.
    shadow.shadow_batches_create(now=timezone.now() + timedelta(seconds=shadow.SETTLE_SECONDS))


class Simulation:
    """One run of a scenario for a new registered model named `model`."""

    def __init__(
        self,
        *,
        scenario: Scenario,
        seed: int,
        model: str,
        rows: int,
        drift_at: int,
        step: int,
        timeout: float,
        out: Callable[[str], None] = print,
        beat_pass: Callable[[], Any] | None = None,
        rate: float = 0.0,
    ) -> None:
        if not 0 < drift_at < rows:
            raise SimulationError("The drift row must fall inside the run.")
        self.scenario, self.seed, self.model = scenario, seed, model
        self.rows, self.drift_at, self.step, self.timeout = rows, drift_at, step, timeout
        # Rows per second to send at (0: as fast as the site answers).
        self.rate = rate
        self.out = out
        self.beat_pass = beat_pass or _beat_pass
        self.rng = np.random.default_rng(seed)
        self.correct: deque[bool] = deque(maxlen=ROLLING_ROWS)
        self.result = SimulationResult(
            scenario=scenario.name, seed=seed, model=model, rows=rows, drift_at=drift_at
        )
        self.seen_events: set[int] = set()

    # -- setup ------------------------------------------------------------------------------------------
    def _client(self) -> tuple[APIClient, Any]:
        user, _ = get_user_model().objects.get_or_create(
            username=USER, defaults={"is_staff": True, "email": "drift-simulator@localhost"}
        )
        token, _ = Token.objects.get_or_create(user=user)
        # In process, under a host name the site accepts (the test client's own is "testserver").
        host = next((h.lstrip(".") for h in settings.ALLOWED_HOSTS if h and h != "*"), "localhost")
        client = APIClient(HTTP_HOST=host)
        client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
        return client, user

    def setup(self) -> None:
        if RegisteredModel.objects.filter(name=self.model).exists():
            raise SimulationError(f"Model '{self.model}' exists already; name a new one with --model.")
        self.client, self.user = self._client()
        frame = sim.training_frame(TRAINING_ROWS, seed=self.seed)
        dataset, _ = dataset_services.dataset_version_create(
            name=self.model,
            file=io.BytesIO(frame.to_csv(index=False).encode()),
            target_column=sim.TARGET,
            created_by=self.user,
            original_filename=f"{self.model}.csv",
        )
        run = training_services.training_run_create(
            dataset_version=dataset,
            model_name=self.model,
            algorithm="random_forest",
            params=CHAMPION_PARAMS,
            created_by=self.user,
            seed=self.seed,
        )
        _wait(
            lambda: TrainingRun.objects.get(pk=run.pk).is_terminal,
            "The champion's training run",
            self.timeout,
        )
        run.refresh_from_db()
        if run.status != TrainingRun.Status.SUCCEEDED:
            raise SimulationError(f"The champion's training run failed: {run.error_message}")
        champion = ModelVersion.objects.get(training_run=run)
        transition_services.model_version_transition(
            model_version=champion,
            to_stage=Stage.PRODUCTION,
            user=self.user,
            reason="Drift simulation champion.",
        )
        answer = self.client.put(f"/api/models/{self.model}/retraining-policy/", POLICY, format="json")
        if answer.status_code != 200:
            raise SimulationError(f"The policy was refused: {answer.json()}")
        self.out(
            f"{self.model}: champion v{champion.version} trained on {TRAINING_ROWS} rows "
            f"(holdout accuracy {champion.metrics['accuracy']:.3f}); scenario '{self.scenario.name}': "
            f"{self.scenario.description}; drift at row {self.drift_at} of {self.rows}."
        )

    # -- traffic ----------------------------------------------------------------------------------------
    def _send(self, first_row: int) -> None:
        frame = sim.features_draw(self.step, rng=self.rng)
        after = first_row >= self.drift_at
        if self.scenario.random_labels and after:
            truth = sim.random_labels(self.step, rng=self.rng)
        else:
            truth = sim.labels(frame, drifted=self.scenario.drift and after, rng=self.rng)
        answer = self.client.post(
            f"/api/models/{self.model}/predict/",
            {
                "rows": frame.to_dict("records"),
                "keys": [f"{self.model}-{first_row + i}" for i in range(self.step)],
            },
            format="json",
        )
        if answer.status_code != 200:
            raise SimulationError(f"Prediction refused: {answer.status_code} {answer.content[:500]!r}")
        predictions = answer.json()["predictions"]
        self.correct.extend(p["prediction"] == t for p, t in zip(predictions, truth, strict=True))
        answer = self.client.post(
            "/api/feedback/",
            {
                "items": [
                    {"prediction": p["id"], "true_label": t} for p, t in zip(predictions, truth, strict=True)
                ]
            },
            format="json",
        )
        if answer.status_code not in (200, 201):
            raise SimulationError(f"Feedback refused: {answer.status_code} {answer.content[:500]!r}")

    def _settle(self) -> None:
        """Let the worker finish what the beat pass started before traffic goes on."""
        registered = RegisteredModel.objects.get(name=self.model)
        _wait(
            lambda: (
                not Retraining.objects.filter(
                    registered_model=registered, status__in=["queued", "running"]
                ).exists()
            ),
            "The retraining",
            self.timeout,
        )
        batches = ShadowBatch.objects.filter(registered_model=registered, status__in=["queued", "running"])
        _wait(lambda: not batches.exists(), "The shadow batches", self.timeout)

    def _events(self, row: int) -> list[str]:
        lines = []
        new = RetrainingEvent.objects.filter(registered_model__name=self.model).exclude(
            pk__in=self.seen_events
        )
        for event in new.order_by("id"):
            self.seen_events.add(event.pk)
            since = max(0, row - self.drift_at)
            self.result.events.append({"row": row, "kind": event.kind, "message": event.message})
            if event.kind == RetrainingEvent.Kind.TRIGGERED:
                self.result.retrainings += 1
                if self.result.rows_to_trigger is None and row > self.drift_at:
                    self.result.rows_to_trigger = since
            elif event.kind == RetrainingEvent.Kind.PROMOTED:
                self.result.promotions += 1
                if self.result.rows_to_promotion is None and row > self.drift_at:
                    self.result.rows_to_promotion = since
            elif event.kind == RetrainingEvent.Kind.ROLLED_BACK:
                self.result.rollbacks += 1
            lines.append(f"      {event.kind}: {event.message}")
        return lines

    def run(self) -> SimulationResult:
        started = time.monotonic()
        self.setup()
        before: list[float] = []
        for first_row in range(0, self.rows, self.step):
            if self.scenario.worse_challenger and first_row == self.drift_at:
                answer = self.client.post(
                    f"/api/models/{self.model}/retrain/",
                    {"reason": "Drift simulation: a deliberately weak challenger.", "params": WORSE_PARAMS},
                    format="json",
                )
                if answer.status_code != 202:
                    raise SimulationError(f"The staff retraining was refused: {answer.json()}")
            sent_at = time.monotonic()
            self._send(first_row)
            row = first_row + self.step
            self.beat_pass()
            self._settle()
            rolling = float(np.mean(self.correct))
            if row <= self.drift_at:
                if row > self.drift_at - 2 * ROLLING_ROWS:
                    before.append(rolling)
            else:
                self._after_drift(row, rolling, before)
            production = ModelVersion.objects.get(registered_model__name=self.model, stage=Stage.PRODUCTION)
            marker = "  drift" if first_row < self.drift_at <= row else ""
            self.out(
                f"row {row:5d}  v{production.version} in production  rolling accuracy {rolling:.3f}{marker}"
            )
            for line in self._events(row):
                self.out(line)
            if self.rate > 0:
                time.sleep(max(0.0, self.step / self.rate - (time.monotonic() - sent_at)))
        self.result.accuracy_after = float(np.mean(self.correct))
        self.result.seconds = round(time.monotonic() - started, 1)
        return self.result

    def _after_drift(self, row: int, rolling: float, before: list[float]) -> None:
        result = self.result
        if result.accuracy_before is None:
            result.accuracy_before = float(np.mean(before)) if before else rolling
        result.accuracy_lowest = (
            rolling if result.accuracy_lowest is None else min(result.accuracy_lowest, rolling)
        )
        recovered = rolling >= result.accuracy_before - RECOVERY_POINTS
        # Recovery counts once the window holds only rows served after a promotion.
        if (
            result.rows_to_recovery is None
            and result.rows_to_promotion is not None
            and row - self.drift_at >= result.rows_to_promotion + ROLLING_ROWS
            and recovered
        ):
            result.rows_to_recovery = row - self.drift_at
