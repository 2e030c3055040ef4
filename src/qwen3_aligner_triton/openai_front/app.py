"""The OpenAI-style HTTP front: an ASGI app (Starlette) in front of Triton.

Routes:

- ``POST /v1/audio/alignments``: multipart ``file`` (an audio file), ``text`` (the transcript),
  ``language``, optional ``response_format``, ``timestamp_granularities[]``, ``model`` and the cue
  settings; answers the alignment in the requested format.
- ``POST /v1/audio/transcriptions``: OpenAI's transcription route (``file``, optional
  ``language``, ``prompt`` as upstream's context, ``response_format``,
  ``timestamp_granularities[]``): the server transcribes with its ASR model
  (``./scripts/serve --asr``), then aligns; without that model, an OpenAI error saying so.
- ``GET /v1/models``: the model ids requests may name.
- ``GET /health/live``, ``GET /health/ready`` (ready exactly when Triton serves the model),
  ``GET /metrics`` (Prometheus, the front's own).

Errors have OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``. Uploads are capped
in bytes before they are read (:class:`BodyLimit`); the file is passed on undecoded, so every check
of its content is the model's (``AUDIO_FILE``), and its refusals come back as 400 with its message.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from qwen3_aligner_client.cues import CueOptions
from qwen3_aligner_client.results import Alignment
from qwen3_aligner_client.writers import FORMATS, WriteOptions, render
from starlette.applications import Starlette
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..contract import MODEL_NAME
from ..requests import NO_ASR_MESSAGE
from .backend import AlignRequest, BackendError

log = logging.getLogger(__name__)

DEFAULT_MAX_UPLOAD_BYTES = 256 * 2**20  # the model's own default max_audio_file_bytes
DEFAULT_MAX_TEXT_BYTES = 4 * 2**20  # a transcript of many hours; any other field is far smaller
MAX_FORM_FIELDS = 32
# OpenAI's response formats, then this project's (the client's writers); none needs the audio.
OPENAI_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
MEDIA_TYPES = {
    "json": "application/json",
    "verbose_json": "application/json",
    "whisperx": "application/json",
    "text": "text/plain; charset=utf-8",
    "srt": "text/plain; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
    "tsv": "text/tab-separated-values; charset=utf-8",
}
GRANULARITIES = ("word", "segment")
OWNER = "qwen3-aligner-triton"  # owned_by of /v1/models
NO_ASR = NO_ASR_MESSAGE.split(":")[0]  # how the model's refusal of a request without TEXT starts
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class Aligner(Protocol):
    """What the front needs of the aligner (:class:`~.backend.TritonAligner`, or a test's)."""

    async def ready(self) -> bool: ...

    async def align(self, request: AlignRequest) -> str: ...


def response_formats() -> tuple[str, ...]:
    """Every ``response_format`` the alignments route answers: OpenAI's, then the project's."""
    extra = sorted(
        name
        for name, fmt in FORMATS.items()
        if not fmt.needs_audio and fmt.save is None and name not in OPENAI_FORMATS
    )
    return (*OPENAI_FORMATS, *extra)


@dataclass(frozen=True)
class FrontSettings:
    """How the front serves: limits, the key it asks for, the model ids it answers to."""

    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_text_bytes: int = DEFAULT_MAX_TEXT_BYTES
    api_key: str | None = None  # when set, /v1/ routes need "Authorization: Bearer <key>"
    model_ids: tuple[str, ...] = (MODEL_NAME,)
    created: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self) -> None:
        if self.max_upload_bytes < 1 or self.max_text_bytes < 1:
            raise ValueError("max_upload_bytes and max_text_bytes must be at least 1")
        if not self.model_ids:
            raise ValueError("model_ids must name at least one model")
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError("the API key is empty")


class FrontError(Exception):
    """A request the front answers with an OpenAI error."""

    def __init__(
        self,
        status: int,
        message: str,
        error_type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type
        self.param = param
        self.code = code


def error_response(
    status: int,
    message: str,
    error_type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """An OpenAI-shaped error."""
    body = {"error": {"message": message, "type": error_type, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


class UploadTooLarge(Exception):
    """The request's body went over the front's limit."""


ASGIApp = Callable[
    [MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
    Awaitable[None],
]


class BodyLimit:
    """ASGI middleware: a body over ``limit`` bytes is refused with 413, by its declared length
    before a byte is read, and otherwise as soon as what arrived exceeds it."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                declared = value.decode("latin-1").strip()
                if declared.isdigit() and int(declared) > self.limit:
                    await too_large(self.limit)(scope, receive, send)
                    return
        received = 0

        async def counted() -> Any:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise UploadTooLarge
            return message

        await self.app(scope, counted, send)


def too_large(limit: int) -> JSONResponse:
    return error_response(
        413,
        f"the request is larger than this server's upload limit of {limit} bytes "
        f"({limit / 2**20:.0f} MiB)",
        code="upload_too_large",
        headers={"Connection": "close"},
    )


class Metrics:
    """The front's own Prometheus series (Triton's are on its metrics port)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "openai_front_requests",
            "Requests answered by the OpenAI-style front, by route and HTTP status",
            ("route", "status"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "openai_front_request_duration_seconds",
            "Time from a request's arrival to its answer, by route",
            ("route",),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.upload_bytes = Counter(
            "openai_front_upload_bytes",
            "Bytes of audio files received",
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "openai_front_requests_in_flight",
            "Requests the front is answering now",
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _field(form: FormData, name: str, default: str | None = None) -> str | None:
    value = form.get(name)
    if value is None:
        return default
    if isinstance(value, UploadFile):
        raise FrontError(400, f"{name} must be a form field, not a file", param=name)
    return value


def _number(form: FormData, name: str, kind: type[float] | type[int]) -> Any:
    value = _field(form, name)
    if value is None:
        return None
    try:
        return kind(value)
    except ValueError:
        raise FrontError(
            400,
            f"{name} must be {'an integer' if kind is int else 'a number'}, got {value!r}",
            param=name,
        ) from None


def _flag(form: FormData, name: str) -> bool | None:
    value = _field(form, name)
    if value is None:
        return None
    low = value.strip().lower()
    if low in ("true", "1", "yes"):
        return True
    if low in ("false", "0", "no"):
        return False
    raise FrontError(400, f"{name} must be true or false, got {value!r}", param=name)


def cue_options(form: FormData) -> CueOptions:
    """How a request groups words into cues: ``cues`` (``auto``, or ``lines``: one cue per line
    of the transcript) and the limits ``max_chars``, ``max_lines``, ``max_duration``,
    ``min_duration``, ``max_pause`` (the client's defaults otherwise)."""
    given = {
        "mode": _field(form, "cues"),
        "max_chars_per_line": _number(form, "max_chars", int),
        "max_lines": _number(form, "max_lines", int),
        "max_duration": _number(form, "max_duration", float),
        "min_duration": _number(form, "min_duration", float),
        "max_pause": _number(form, "max_pause", float),
    }
    try:
        return CueOptions(**{k: v for k, v in given.items() if v is not None})
    except ValueError as e:
        raise FrontError(400, f"cue settings: {e}") from None


def write_options(form: FormData) -> WriteOptions:
    """The writers' settings a request sets: its cues, ``karaoke`` (ASS: a ``\\k`` tag per word,
    default true) and ``word_timestamps`` (WebVTT: an inline time before each word, default
    false)."""
    options = WriteOptions(cues=cue_options(form))
    karaoke, word_timestamps = _flag(form, "karaoke"), _flag(form, "word_timestamps")
    if karaoke is not None:
        options = replace(options, karaoke=karaoke)
    if word_timestamps is not None:
        options = replace(options, word_timestamps=word_timestamps)
    return options


def granularities(form: FormData, default: tuple[str, ...] = GRANULARITIES) -> tuple[str, ...]:
    """``timestamp_granularities[]`` (the SDK's spelling, or without brackets); ``default`` when
    absent (alignments: both, an alignment is words first; transcriptions: segments, as
    OpenAI's)."""
    values = [*form.getlist("timestamp_granularities[]"), *form.getlist("timestamp_granularities")]
    if not values:
        return default
    for value in values:
        if value not in GRANULARITIES:
            raise FrontError(
                400,
                f"timestamp_granularities: {value!r} is not one of {', '.join(GRANULARITIES)}",
                param="timestamp_granularities[]",
            )
    return tuple(g for g in GRANULARITIES if g in values)


def blamed_field(message: str) -> str | None:
    """The form field a refusal of the model is about: the first input its message names."""
    named = re.search(r"\b(AUDIO_FILE|AUDIO|TEXT|LANGUAGE)\b", message)
    if named is None:
        return None
    return {"AUDIO_FILE": "file", "AUDIO": "file"}.get(named[1], named[1].lower())


def render_alignment(
    alignment: Alignment,
    response_format: str,
    options: WriteOptions,
    granularity: tuple[str, ...] = GRANULARITIES,
) -> Response:
    """``alignment`` as the response ``response_format`` asks for."""
    media_type = MEDIA_TYPES.get(response_format, "text/plain; charset=utf-8")
    if response_format == "text":
        return Response(alignment.text + "\n", media_type=media_type)
    if response_format == "json":
        return Response(alignment.to_json(), media_type=media_type)
    body = render(alignment, response_format, options)
    if response_format == "verbose_json":
        document = json.loads(body)
        if "word" not in granularity:
            document.pop("words", None)
        if "segment" not in granularity:
            document.pop("segments", None)
        body = json.dumps(document, ensure_ascii=False)
    return Response(body, media_type=media_type)


def create_app(aligner: Aligner, settings: FrontSettings | None = None) -> Starlette:
    """The front as an ASGI app, answering through ``aligner``."""
    settings = settings or FrontSettings()
    metrics = Metrics()
    formats = response_formats()

    def authorize(request: Request) -> None:
        if settings.api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), settings.api_key.encode()
        ):
            raise FrontError(
                401,
                "a valid API key is required: send 'Authorization: Bearer <key>'",
                error_type="authentication_error",
                code="invalid_api_key",
            )

    def check_model(form: FormData) -> None:
        model = _field(form, "model")
        if model is not None and model not in settings.model_ids:
            raise FrontError(
                404,
                f"model {model!r} is not served here; use one of: {', '.join(settings.model_ids)}",
                param="model",
                code="model_not_found",
            )

    async def read_form(request: Request) -> FormData:
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith("multipart/form-data"):
            raise FrontError(
                415,
                "send the request as multipart/form-data (the audio as the 'file' part)",
                code="unsupported_media_type",
            )
        return await request.form(
            max_files=1, max_fields=MAX_FORM_FIELDS, max_part_size=settings.max_text_bytes
        )

    async def upload(form: FormData) -> bytes:
        part = form.get("file")
        if part is None:
            raise FrontError(
                400, "file: required (the audio file as a multipart part)", param="file"
            )
        if not isinstance(part, UploadFile):
            raise FrontError(
                400, "file must be an uploaded file (a part with a filename)", param="file"
            )
        data = await part.read()
        metrics.upload_bytes.inc(len(data))
        if not data:
            raise FrontError(400, "file: the uploaded file is empty", param="file")
        return data

    def checked_format(form: FormData) -> str:
        response_format = _field(form, "response_format", "json") or "json"
        if response_format not in formats:
            raise FrontError(
                400,
                f"response_format {response_format!r} is not supported; use one of: "
                f"{', '.join(formats)}",
                param="response_format",
            )
        if (_field(form, "stream") or "false").lower() not in ("false", "0"):
            raise FrontError(400, "stream is not supported: the answer comes whole", param="stream")
        return response_format

    def parse_alignment(document: str, text: str | None) -> Alignment:
        try:
            return Alignment.from_json(document, text=text)
        except (ValueError, KeyError, TypeError) as e:
            raise FrontError(502, f"the aligner's answer is malformed: {e}", "server_error") from e

    def rendered(
        alignment: Alignment,
        response_format: str,
        options: WriteOptions,
        granularity: tuple[str, ...],
    ) -> Response:
        try:
            return render_alignment(alignment, response_format, options, granularity)
        except ValueError as e:  # e.g. cues by lines without the words' spans in the transcript
            raise FrontError(400, f"cannot write {response_format}: {e}") from e

    async def alignments(request: Request) -> Response:
        authorize(request)
        form = await read_form(request)
        check_model(form)
        response_format = checked_format(form)
        text = _field(form, "text")
        if text is None:
            raise FrontError(
                400,
                "text: required (the transcript to align; POST /v1/audio/transcriptions "
                "transcribes first where the server has its ASR model)",
                param="text",
            )
        language = _field(form, "language")
        if language is None or not language.strip():
            raise FrontError(
                400,
                "language: required (English/en, Chinese/zh, Cantonese/yue, French/fr, German/de, "
                "Italian/it, Japanese/ja, Korean/ko, Portuguese/pt, Russian/ru, Spanish/es)",
                param="language",
            )
        options = write_options(form)
        granularity = granularities(form)
        audio = await upload(form)
        try:
            document = await aligner.align(AlignRequest(audio, text, language))
        except BackendError as e:
            raise FrontError(e.status, str(e), e.error_type, param=blamed_field(str(e))) from e
        return rendered(parse_alignment(document, text), response_format, options, granularity)

    async def transcriptions(request: Request) -> Response:
        authorize(request)
        form = await read_form(request)
        check_model(form)
        response_format = checked_format(form)
        options = write_options(form)
        granularity = granularities(form, default=("segment",))  # OpenAI's default
        language = (_field(form, "language") or "").strip() or None
        context = _field(form, "prompt") or ""  # OpenAI's prompt: upstream's context
        audio = await upload(form)
        try:
            document = await aligner.align(AlignRequest(audio, None, language, context))
        except BackendError as e:
            if e.status == 400 and str(e).startswith(NO_ASR):
                raise FrontError(
                    400,
                    "this server runs no ASR model, so it cannot transcribe: start it with "
                    "./scripts/serve --asr (the container: with ASR_MODEL set), or send the "
                    "audio with its transcript to "
                    "POST /v1/audio/alignments (fields file, text, language)",
                    code="transcription_unavailable",
                ) from e
            raise FrontError(e.status, str(e), e.error_type, param=blamed_field(str(e))) from e
        alignment = parse_alignment(document, None)
        if response_format == "json":  # OpenAI's transcription: the text alone
            return JSONResponse({"text": alignment.text})
        return rendered(alignment, response_format, options, granularity)

    async def models(request: Request) -> Response:
        authorize(request)
        data = [
            {"id": name, "object": "model", "created": settings.created, "owned_by": OWNER}
            for name in settings.model_ids
        ]
        return JSONResponse({"object": "list", "data": data})

    async def live(request: Request) -> Response:
        return JSONResponse({"status": "live"})

    async def ready(request: Request) -> Response:
        if await aligner.ready():
            return JSONResponse({"status": "ready"})
        return error_response(
            503, f"model {MODEL_NAME} is not ready on Triton", "service_unavailable"
        )

    async def metrics_route(request: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    def timed(route: str, endpoint: Callable[[Request], Awaitable[Response]]) -> Any:
        async def handle(request: Request) -> Response:
            started = time.perf_counter()
            metrics.in_flight.inc()
            try:
                response = await endpoint(request)
            except FrontError as e:
                response = error_response(e.status, e.message, e.error_type, e.param, e.code)
            except UploadTooLarge:
                response = too_large(settings.max_upload_bytes)
            except HTTPException as e:  # a malformed multipart body, a form over its limits
                response = error_response(e.status_code, f"malformed form: {e.detail}")
            except Exception:
                log.exception("%s %s failed", request.method, request.url.path)
                response = error_response(
                    500, "the front failed to answer; see the server's log", "server_error"
                )
            finally:
                metrics.in_flight.dec()
            metrics.requests.labels(route, str(response.status_code)).inc()
            metrics.latency.labels(route).observe(time.perf_counter() - started)
            return response

        return handle

    routes = [
        Route("/v1/audio/alignments", timed("alignments", alignments), methods=["POST"]),
        Route(
            "/v1/audio/transcriptions", timed("transcriptions", transcriptions), methods=["POST"]
        ),
        Route("/v1/models", timed("models", models), methods=["GET"]),
        Route("/health/live", live, methods=["GET"]),
        Route("/health/ready", ready, methods=["GET"]),
        Route("/metrics", metrics_route, methods=["GET"]),
    ]

    async def not_found(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 404
        return error_response(
            status, f"{request.method} {request.url.path}: no such route", code="not_found"
        )

    app = Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})
    app.state.metrics = metrics
    app.add_middleware(BodyLimit, limit=settings.max_upload_bytes)
    return app
