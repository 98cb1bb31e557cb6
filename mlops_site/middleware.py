"""Our middleware: chunked request bodies made readable (or refused), no slash redirects under /api/, and
message storage made only for requests that use messages."""

from __future__ import annotations

import tempfile
from collections.abc import Callable

from django.conf import settings
from django.contrib.messages import middleware as messages_middleware
from django.contrib.messages.storage import default_storage
from django.core.handlers.wsgi import LimitedStream
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware import common
from django.utils.functional import SimpleLazyObject, empty

from mlops_site.errors import ErrorAnswer
from mlops_site.views import API_PREFIX

_BLOCK = 64 * 1024


def body_limit(content_type: str) -> int:
    """Bytes a body of this type may have: the largest upload for forms with files, else the JSON limit."""
    if content_type.lower().startswith("multipart/"):
        largest_mb = max(
            settings.DATASET_MAX_UPLOAD_MB, settings.BATCH_MAX_UPLOAD_MB, settings.MODEL_MAX_UPLOAD_MB
        )
        # Room for the form's other fields and the multipart boundaries around the file.
        return largest_mb * 1024 * 1024 + settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return settings.DATA_UPLOAD_MAX_MEMORY_SIZE


def _refusal(status: int, code: str, detail: str) -> HttpResponse:
    return JsonResponse(ErrorAnswer(status, code, detail).body(), status=status)


class ChunkedBodyMiddleware:
    """Gives a chunked request body a Content-Length, since Django reads no body without one.

    Without this a chunked JSON body was read as empty. The body is only readable to its end when the
    server ends the input stream at the last chunk and says so with `wsgi.input_terminated` (gunicorn
    does); otherwise reading could block or run into the next request, so the request is refused with 411.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        environ = request.META
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        if not chunked or environ.get("CONTENT_LENGTH"):
            return self.get_response(request)
        if not environ.get("wsgi.input_terminated"):
            return _refusal(
                411,
                "length_required",
                "This server cannot read a chunked request body; send the body with a Content-Length header.",
            )
        limit = body_limit(environ.get("CONTENT_TYPE", ""))
        source = environ["wsgi.input"]
        with tempfile.SpooledTemporaryFile(max_size=settings.FILE_UPLOAD_MAX_MEMORY_SIZE) as body:
            size = 0
            while block := source.read(_BLOCK):
                size += len(block)
                if size > limit:
                    return _refusal(
                        413,
                        "too_large",
                        f"The request body is over {limit} bytes; at most {limit} bytes are accepted.",
                    )
                body.write(block)
            body.seek(0)
            environ["CONTENT_LENGTH"] = str(size)
            environ["wsgi.input"] = body
            # WSGIRequest built its stream from the missing length (0 bytes); rebuild it from the spool.
            request._stream = LimitedStream(body, size)  # type: ignore[attr-defined]
            return self.get_response(request)


class CommonMiddleware(common.CommonMiddleware):
    """Django's, except that an API path missing its trailing slash is not redirected.

    A redirect loses a POST body and answers HTML; under /api/ the not-found answer (mlops_site.views)
    names the address with the slash instead.
    """

    def should_redirect_with_slash(self, request: HttpRequest) -> bool:
        if request.path_info.startswith(API_PREFIX):
            return False
        return super().should_redirect_with_slash(request)


class MessageMiddleware(messages_middleware.MessageMiddleware):
    """Django's, except that the request's message storage is made when a message is first added or read.

    Making it builds a cookie storage and a session storage with their signers, about 30 µs that an API
    call or a health check never uses. A storage nobody touched has nothing to save, so the response is
    left alone then, as Django's own update() would leave it.
    """

    def process_request(self, request: HttpRequest) -> None:
        request._messages = SimpleLazyObject(lambda: default_storage(request))  # type: ignore[attr-defined]

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        stored = getattr(request, "_messages", None)
        if isinstance(stored, SimpleLazyObject) and stored._wrapped is empty:
            return response
        return super().process_response(request, response)
