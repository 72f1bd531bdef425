"""The model server's WSGI application: SageMaker's hosting and batch transform contract.

``GET /ping``                  200 once the model is loaded, 503 (with the reason) otherwise.
``GET /execution-parameters``  what batch transform should send (``ml.sagemaker.serving_limits``).
``POST /invocations``          rows in, ``probability,predicted_label`` rows out (``ml.inference``).

Status codes of ``/invocations``: 200 with one output row per input row; 204 for an empty body;
400 for a malformed row (the message names the 1-based row and the expected feature count) or
body; 406 for an ``Accept`` it cannot produce; 413 above ``MAX_PAYLOAD_BYTES`` (checked from
Content-Length before reading, and while reading a chunked body); 415 for an unsupported
``Content-Type``; 503 while there is no model. An absent ``Content-Type`` means ``text/csv``;
an absent or ``*/*`` ``Accept`` means ``text/csv``.

Plain WSGI rather than a framework: a request is one parse, one predict and one format over
whole buffers, and a router would only add per-request overhead.
"""

from __future__ import annotations

import json
import logging
import threading
import traceback
from collections.abc import Callable, Iterable
from http import HTTPStatus
from pathlib import Path
from typing import IO, Any, Final

from ml.inference import (
    CSV,
    JSON,
    SUPPORTED_ACCEPT,
    SUPPORTED_CONTENT_TYPES,
    InferenceError,
    ModelError,
    Predictor,
    format_predictions,
    parse_rows,
    read_model_bytes,
)
from ml.sagemaker import serving_limits

__all__ = ["ModelServer", "choose_accept", "media_type"]

LOG = logging.getLogger("ml.sagemaker.server")

StartResponse = Callable[..., Any]
Environ = dict[str, Any]

_READ_CHUNK: Final[int] = 1 << 20


def media_type(header: str | None) -> str:
    """``text/csv; charset=utf-8`` -> ``text/csv``."""
    return (header or "").split(";", 1)[0].strip().lower()


def choose_accept(header: str | None) -> str | None:
    """The output media type for an ``Accept`` header, or None when none can be produced.

    Honours q-values and order; ``*/*`` and ``text/*`` mean CSV, ``application/*`` JSON.
    """
    if header is None or not header.strip():
        return CSV
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate(header.split(",")):
        media, *params = part.split(";")
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality > 0:
            ranked.append((-quality, position, media.strip().lower()))
    for _, _, media in sorted(ranked):
        if media in SUPPORTED_ACCEPT:
            return media
        if media in ("*/*", "text/*"):
            return CSV
        if media == "application/*":
            return JSON
    return None


class _RequestError(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


class ModelServer:
    """The WSGI callable. Build it in the master process (``read_model`` there, where the
    files are readable), then ``load`` in each worker after fork, so that no XGBoost thread
    pool exists before fork and workers may run as an unprivileged user."""

    def __init__(
        self,
        model_dir: Path,
        *,
        threshold: float = 0.5,
        max_payload_bytes: int = serving_limits.MAX_PAYLOAD_BYTES,
        nthread: int | None = None,
    ) -> None:
        self.model_dir = model_dir
        self.threshold = threshold
        self.max_payload_bytes = max_payload_bytes
        self.nthread = nthread
        self._raw_model: bytes | None = None
        self._predictor: Predictor | None = None
        self._error = "the model has not been loaded yet"
        self._lock = threading.Lock()
        self._execution_parameters = json.dumps(
            {
                "MaxConcurrentTransforms": serving_limits.MAX_CONCURRENT_TRANSFORMS,
                "BatchStrategy": serving_limits.BATCH_STRATEGY,
                "MaxPayloadInMB": serving_limits.MAX_PAYLOAD_MB,
            }
        ).encode()

    # -- model ----------------------------------------------------------------------------

    def read_model(self) -> bool:
        """Read the model file's bytes (master process). False, with the reason kept for
        /ping, when there is no usable file yet."""
        try:
            self._raw_model = read_model_bytes(self.model_dir)
        except (ModelError, OSError) as error:
            self._error = str(error)
            LOG.error("model not available: %s", error)
            return False
        return True

    def load(self) -> bool:
        """Build the predictor in this process (worker); retried by /ping until it works."""
        if self._predictor is not None:
            return True
        with self._lock:
            if self._predictor is not None:
                return True
            try:
                raw = self._raw_model if self._raw_model is not None else read_model_bytes(self.model_dir)
                self._predictor = Predictor.from_bytes(raw, nthread=self.nthread)
            except Exception as error:  # any load failure keeps the server up, answering 503
                self._error = f"model not loaded from {self.model_dir}: {error}"
                LOG.error("%s", self._error)
                return False
            self._raw_model = None  # the booster holds the model now
            LOG.info(
                "model loaded: %d features, objective %s",
                self._predictor.n_features,
                self._predictor.objective,
            )
            return True

    @property
    def predictor(self) -> Predictor | None:
        return self._predictor

    # -- WSGI -----------------------------------------------------------------------------

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        try:
            if path == "/invocations":
                if method != "POST":
                    raise _RequestError(HTTPStatus.METHOD_NOT_ALLOWED, "use POST /invocations")
                return self._invocations(environ, start_response)
            if path == "/ping":
                if method not in ("GET", "HEAD"):
                    raise _RequestError(HTTPStatus.METHOD_NOT_ALLOWED, "use GET /ping")
                return self._ping(start_response)
            if path == "/execution-parameters":
                if method not in ("GET", "HEAD"):
                    raise _RequestError(HTTPStatus.METHOD_NOT_ALLOWED, "use GET /execution-parameters")
                return _respond(start_response, HTTPStatus.OK, self._execution_parameters, JSON)
            raise _RequestError(
                HTTPStatus.NOT_FOUND,
                f"no route {path!r}; the server answers GET /ping, GET /execution-parameters "
                "and POST /invocations",
            )
        except _RequestError as error:
            return _respond_error(start_response, error.status, str(error))
        except Exception as error:  # a bug must not take the worker down: answer 500, log it
            LOG.error("unexpected error on %s %s:\n%s", method, path, traceback.format_exc())
            return _respond_error(
                start_response,
                HTTPStatus.INTERNAL_SERVER_ERROR,
                f"internal error ({type(error).__name__}): {error}",
            )

    def _ping(self, start_response: StartResponse) -> Iterable[bytes]:
        if self.load():
            return _respond(start_response, HTTPStatus.OK, b"", "text/plain")
        return _respond_error(start_response, HTTPStatus.SERVICE_UNAVAILABLE, self._error)

    def _invocations(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        content_type = media_type(environ.get("CONTENT_TYPE")) or CSV
        if content_type not in SUPPORTED_CONTENT_TYPES:
            raise _RequestError(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                f"unsupported Content-Type {environ.get('CONTENT_TYPE')!r}; "
                f"send one of {', '.join(SUPPORTED_CONTENT_TYPES)}",
            )
        accept = choose_accept(environ.get("HTTP_ACCEPT"))
        if accept is None:
            raise _RequestError(
                HTTPStatus.NOT_ACCEPTABLE,
                f"cannot produce Accept {environ.get('HTTP_ACCEPT')!r}; ask for one of "
                f"{', '.join(SUPPORTED_ACCEPT)} (or */*)",
            )
        body = self._read_body(environ)
        if not body.strip():
            return _respond(start_response, HTTPStatus.NO_CONTENT, b"", accept)
        if not self.load():
            raise _RequestError(HTTPStatus.SERVICE_UNAVAILABLE, self._error)
        predictor = self._predictor
        assert predictor is not None
        try:
            features = parse_rows(body, content_type, predictor.n_features)
        except InferenceError as error:
            raise _RequestError(HTTPStatus.BAD_REQUEST, str(error)) from None
        del body
        probabilities = predictor.predict(features)
        return _respond(
            start_response, HTTPStatus.OK, format_predictions(probabilities, self.threshold, accept), accept
        )

    def _read_body(self, environ: Environ) -> bytes:
        stream: IO[bytes] = environ["wsgi.input"]
        limit = self.max_payload_bytes
        length_header = environ.get("CONTENT_LENGTH") or ""
        if length_header.strip():
            try:
                length = int(length_header)
            except ValueError:
                raise _RequestError(HTTPStatus.BAD_REQUEST, f"bad Content-Length {length_header!r}") from None
            if length > limit:
                # Refused before reading a byte (gunicorn skips the unread body, if the client
                # sends it at all, before it parses the next request on this connection).
                raise _RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, _too_large(length, limit))
            return stream.read(length) if length > 0 else b""
        # No Content-Length: chunked transfer. Read up to the limit, then discard the rest.
        chunks: list[bytes] = []
        total = 0
        while True:
            chunk = stream.read(_READ_CHUNK)
            if not chunk:
                return b"".join(chunks)
            total += len(chunk)
            if total > limit:
                # Stop buffering; gunicorn discards the rest of the body before it reads the
                # next request on this connection, so memory stays bounded.
                raise _RequestError(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"chunked {_too_large(total, limit)}"
                )
            chunks.append(chunk)


def _too_large(size: int, limit: int) -> str:
    return (
        f"payload of {size} bytes exceeds the {limit} byte ({limit // (1024 * 1024)} MB) limit; send smaller "
        "batches (batch transform: MaxPayloadInMB)"
    )


def _respond(
    start_response: StartResponse, status: HTTPStatus, body: bytes, content_type: str
) -> list[bytes]:
    headers = [("Content-Type", content_type), ("Content-Length", str(len(body)))]
    start_response(f"{status.value} {status.phrase}", headers)
    return [body]


def _respond_error(start_response: StartResponse, status: HTTPStatus, message: str) -> list[bytes]:
    body = (message + "\n").encode()
    headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
    start_response(f"{status.value} {status.phrase}", headers)
    return [body]
