"""Smoke test of a deployed site, run after each deploy: is it up, does it serve pages, files, predictions?

Usage: python deploy/smoke_test.py https://mlops.example.com [--token-file FILE] [--model NAME]

Checks, one line each (ok, FAIL or skip), in this order:
  healthz      /healthz answers 200 (the process is up)
  readyz       /readyz answers 200 (database, cache, storage and registry reachable); with
               --max-worker-age, a Celery worker has also reported within that many seconds
  login page   /accounts/login/ renders the sign-in form
  static       a content-hashed file the login page links is served with an immutable cache header
  api models   with a token: GET /api/models/ lists the registered models
  predict      with a token: one prediction from the production version of --model, or of the first
               model that has one, with a row built from that version's feature schema

A fresh deploy takes a while to answer: connection errors, 502, 503 and 504 are retried until
--deadline seconds have passed since the start. The prediction is stored like any other, with a
request id starting "smoke-test-". Standard library only: it runs on a CI runner without the app.
Exit code 0 when every check passed or was skipped, 1 when one failed, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

USER_AGENT = "mlops-smoke-test/1"
#: Answers a proxy or a starting server gives before the app is ready: worth waiting for.
TRANSIENT_STATUSES = frozenset({502, 503, 504})
#: ManifestStaticFilesStorage's names: the file's name, a dot, 12 hex digits of its hash, the suffix.
HASHED_ASSET = re.compile(r"""(?:href|src)=["']([^"']+\.[0-9a-f]{12}\.[A-Za-z0-9]+)["']""")
#: Pages of /api/models/ read while looking for a model with a production version.
MAX_MODEL_PAGES = 20


class CheckFailed(Exception):
    """The check did not pass; the message says what was seen."""


class Skipped(Exception):
    """The check does not apply here; the message says why."""


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    url: str

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            raise CheckFailed(f"{self.url} answered {self.status} with a body that is not JSON") from None

    def describe(self) -> str:
        """The status and, for a JSON error, its detail (the API's error envelope)."""
        text = f"{self.url} answered {self.status}"
        try:
            detail = json.loads(self.body).get("detail")
        except (ValueError, AttributeError):
            detail = None
        return f"{text}: {detail}" if detail else text


@dataclass
class Client:
    base_url: str
    deadline: float
    timeout: float
    token: str | None = None
    context: ssl.SSLContext | None = None
    opener: urllib.request.OpenerDirector = field(init=False)

    def __post_init__(self) -> None:
        handlers: list[urllib.request.BaseHandler] = [urllib.request.HTTPSHandler(context=self.context)]
        self.opener = urllib.request.build_opener(*handlers)

    def url(self, path: str) -> str:
        return urllib.parse.urljoin(self.base_url, path)

    def request(
        self,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        token: bool = False,
        until: Callable[[Answer], bool] | None = None,
    ) -> Answer:
        """One request, repeated while the site is not up yet (or `until` is not met) and time remains."""
        url = self.url(path)
        # Links followed come from the site's answers (next pages, asset names): only the web's schemes.
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise CheckFailed(f"refusing to follow {url!r}: not an http(s) URL")
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json, text/html;q=0.9"}
        if token and self.token:
            headers["Authorization"] = f"Token {self.token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        attempt = 0
        while True:
            attempt += 1
            problem: str
            try:
                answer = self._send(urllib.request.Request(url, data=data, headers=headers))  # noqa: S310
            except urllib.error.URLError as exc:
                reason = exc.reason
                text = reason.strerror if isinstance(reason, OSError) and reason.strerror else reason
                problem = f"{url}: {text}"
            except (TimeoutError, ConnectionError, http.client.HTTPException) as exc:
                problem = f"{url}: {exc or type(exc).__name__}"
            else:
                waiting = answer.status in TRANSIENT_STATUSES or (until is not None and not until(answer))
                if not waiting:
                    return answer
                if time.monotonic() >= self.deadline:
                    return answer
                problem = answer.describe()
            if time.monotonic() >= self.deadline:
                raise CheckFailed(f"{problem} (after {attempt} attempt(s))")
            time.sleep(min(2.0, max(0.0, self.deadline - time.monotonic())))

    def _send(self, request: urllib.request.Request) -> Answer:
        try:
            with self.opener.open(request, timeout=self.timeout) as response:
                return Answer(response.status, dict(response.headers), response.read(), response.url)
        except urllib.error.HTTPError as exc:
            with exc:
                return Answer(exc.code, dict(exc.headers), exc.read(), exc.url)


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    failed: int = 0

    def run(self, name: str, check: Callable[[], str]) -> bool:
        try:
            detail = check()
        except Skipped as exc:
            self.say(f"skip  {name}: {exc}")
            return True
        except CheckFailed as exc:
            self.failed += 1
            self.say(f"FAIL  {name}: {exc}")
            return False
        self.say(f"ok    {name}: {detail}")
        return True

    def say(self, line: str) -> None:
        self.lines.append(line)
        print(line, flush=True)


def check_healthz(client: Client) -> str:
    answer = client.request("/healthz")
    if answer.status != 200:
        raise CheckFailed(answer.describe())
    return "200"


def check_readyz(client: Client, *, max_worker_age: float | None) -> str:
    def workers_seen(answer: Answer) -> list[dict[str, Any]]:
        try:
            workers = json.loads(answer.body).get("workers")
        except (ValueError, AttributeError):
            return []
        if not isinstance(workers, list):
            return []
        return [w for w in workers if max_worker_age is None or w.get("seconds_ago", 1e9) <= max_worker_age]

    def ready(answer: Answer) -> bool:
        return answer.status == 200 and (max_worker_age is None or bool(workers_seen(answer)))

    answer = client.request("/readyz", until=ready)
    if answer.status != 200:
        failing = ""
        try:
            payload = json.loads(answer.body)
            failing = "; ".join(
                f"{name}: {payload['checks'][name].get('error', '?')}" for name in payload.get("failing", [])
            )
        except (ValueError, KeyError, AttributeError, TypeError):
            pass
        raise CheckFailed(answer.describe() + (f" ({failing})" if failing else ""))
    seen = workers_seen(answer)
    if max_worker_age is not None and not seen:
        raise CheckFailed(f"ready, but no Celery worker has reported in the last {max_worker_age:g} s")
    return f"200, {len(seen)} worker(s) seen" if max_worker_age is not None else "200"


def check_login_page(client: Client, found: dict[str, Any]) -> str:
    answer = client.request("/accounts/login/")
    if answer.status != 200:
        raise CheckFailed(answer.describe())
    page = answer.body.decode("utf-8", errors="replace")
    if "csrfmiddlewaretoken" not in page or 'name="username"' not in page:
        raise CheckFailed(f"{answer.url} answered 200 without the sign-in form")
    found["login_page"] = (answer.url, page)
    return "200, sign-in form rendered"


def check_static(client: Client, found: dict[str, Any]) -> str:
    if "login_page" not in found:
        raise Skipped("the login page did not render")
    page_url, page = found["login_page"]
    assets = HASHED_ASSET.findall(page)
    if not assets:
        raise CheckFailed(
            "the login page links no content-hashed static file (STATIC_MANIFEST=True and collectstatic "
            "give hashed names)"
        )
    asset_url = urllib.parse.urljoin(page_url, assets[0])
    answer = client.request(asset_url)
    if answer.status != 200:
        raise CheckFailed(answer.describe())
    cache_control = next((v for k, v in answer.headers.items() if k.lower() == "cache-control"), "")
    if "immutable" not in cache_control:
        raise CheckFailed(f"{asset_url} is served with Cache-Control {cache_control!r}, not immutable")
    return f"{urllib.parse.urlsplit(asset_url).path}: Cache-Control {cache_control}"


def check_api_models(client: Client, found: dict[str, Any], *, model: str | None) -> str:
    if client.token is None:
        raise Skipped("no --token-file")
    answer = client.request("/api/models/", token=True)
    if answer.status != 200:
        raise CheckFailed(answer.describe())
    page = answer.json()
    if not isinstance(page, dict) or not isinstance(page.get("results"), list):
        raise CheckFailed(f"{answer.url} answered 200 without a list of results")
    count = page.get("count", len(page["results"]))
    if model is not None:
        chosen = client.request(f"/api/models/{urllib.parse.quote(model)}/", token=True)
        if chosen.status != 200:
            raise CheckFailed(chosen.describe())
        found["model"] = chosen.json()
        return f"{count} model(s); {model} found"
    for _ in range(MAX_MODEL_PAGES):
        for entry in page["results"]:
            if entry.get("production_version") is not None:
                found["model"] = entry
                version = entry["production_version"]
                return f"{count} model(s); {entry['name']} has production version {version}"
        if not page.get("next"):
            break
        next_page = client.request(page["next"], token=True)
        if next_page.status != 200:
            raise CheckFailed(next_page.describe())
        page = next_page.json()
    return f"{count} model(s), none with a production version"


def example_row(feature_schema: list[dict[str, Any]]) -> dict[str, Any]:
    """One plausible row: the middle of each numeric feature's training range, each categorical feature's
    first category; None (a missing value the model imputes) where the schema knows neither."""
    row: dict[str, Any] = {}
    for feature in feature_schema:
        if feature.get("kind") == "numeric":
            low, high = feature.get("min"), feature.get("max")
            if low is not None and high is not None:
                row[feature["name"]] = (low + high) / 2
            else:
                row[feature["name"]] = low if low is not None else high
        else:
            categories = feature.get("categories") or []
            row[feature["name"]] = categories[0] if categories else None
    return row


def check_predict(client: Client, found: dict[str, Any], *, model: str | None) -> str:
    if client.token is None:
        raise Skipped("no --token-file")
    entry = found.get("model")
    if entry is None:
        if model is not None:
            raise Skipped(f"model {model} was not read")
        raise Skipped("no model has a production version yet (name one with --model to require it)")
    name, version = entry["name"], entry.get("production_version")
    if version is None:
        raise CheckFailed(f"model {name} has no production version")
    quoted = urllib.parse.quote(name)
    detail = client.request(f"/api/models/{quoted}/versions/{version}/", token=True)
    if detail.status != 200:
        raise CheckFailed(detail.describe())
    schema = detail.json().get("feature_schema") or []
    if not schema:
        raise CheckFailed(f"{name} version {version} has no feature schema")
    body = {
        "inputs": example_row(schema),
        "version": version,
        "request_id": f"smoke-test-{int(time.time())}",
    }
    answer = client.request(f"/api/models/{quoted}/predict/", body=body, token=True)
    if answer.status != 200:
        raise CheckFailed(answer.describe())
    predictions = answer.json().get("predictions") or []
    if len(predictions) != 1 or "prediction" not in predictions[0]:
        raise CheckFailed(f"{answer.url} answered 200 without one prediction")
    return f"{name} version {version} predicted {predictions[0]['prediction']!r}"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Smoke test of a deployed site: health, readiness, pages, static files, API predictions.",
    )
    parser.add_argument("url", help="the site's base URL, e.g. https://mlops.example.com")
    parser.add_argument(
        "--token-file",
        type=Path,
        help="a file holding an API token (Authorization: Token); without it the API checks are skipped",
    )
    parser.add_argument(
        "--model", help="predict with this model's production version (default: the first that has one)"
    )
    parser.add_argument(
        "--deadline", type=float, default=300.0, help="seconds to keep retrying while the site starts (300)"
    )
    parser.add_argument("--timeout", type=float, default=15.0, help="seconds per request (15)")
    parser.add_argument(
        "--max-worker-age",
        type=float,
        metavar="SECONDS",
        help="also require a Celery worker that reported within this many seconds (heartbeats come every 60)",
    )
    parser.add_argument("--cafile", type=Path, help="trust this CA certificate (a self-signed staging host)")
    args = parser.parse_args(argv)
    if urllib.parse.urlsplit(args.url).scheme not in ("http", "https"):
        parser.error(f"the URL must start with http:// or https://, not {args.url!r}")
    return args


def read_token(path: Path) -> str:
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise SystemExit(f"smoke_test: cannot read the token file {path}: {exc.strerror}") from None
    if not token:
        raise SystemExit(f"smoke_test: the token file {path} is empty")
    return token


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    context = ssl.create_default_context(cafile=str(args.cafile) if args.cafile else None)
    client = Client(
        base_url=args.url.rstrip("/") + "/",
        deadline=time.monotonic() + args.deadline,
        timeout=args.timeout,
        token=read_token(args.token_file) if args.token_file else None,
        context=context,
    )
    report = Report()
    found: dict[str, Any] = {}
    started = time.monotonic()
    if report.run("healthz", lambda: check_healthz(client)):
        report.run("readyz", lambda: check_readyz(client, max_worker_age=args.max_worker_age))
        report.run("login page", lambda: check_login_page(client, found))
        report.run("static", lambda: check_static(client, found))
        report.run("api models", lambda: check_api_models(client, found, model=args.model))
        report.run("predict", lambda: check_predict(client, found, model=args.model))
    else:
        report.say("skip  the other checks: the site does not answer")
    elapsed = time.monotonic() - started
    if report.failed:
        print(f"smoke test FAILED for {args.url}: {report.failed} check(s) failed ({elapsed:.1f} s)")
        return 1
    print(f"smoke test passed for {args.url} ({elapsed:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
