"""A typed client for the ``qwen3_aligner`` model over Triton's HTTP or gRPC (KServe v2) API."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from types import ModuleType, TracebackType
from typing import Any

import numpy as np
from tritonclient.utils import InferenceServerException

from .audio import AudioError, AudioFile, AudioSource, load_audio, read_audio_file
from .results import Alignment
from .segments import SegmentLike, to_segments

MODEL_NAME = "qwen3_aligner"
# The model's inputs and their wire data types (the server's contract, copied: a test holds them
# equal). A request carries AUDIO (samples) with SAMPLE_RATE, or AUDIO_FILE (an encoded file the
# server decodes); see SEND_MODES.
INPUT_TYPES = {
    "AUDIO": "FP32",
    "AUDIO_FILE": "BYTES",
    "SAMPLE_RATE": "INT32",
    "TEXT": "BYTES",
    "LANGUAGE": "BYTES",
    "SEGMENTS": "BYTES",
    "CONTEXT": "BYTES",
}
# LANGUAGE of a request without a transcript: the server detects it (as when LANGUAGE is left out).
AUTO_LANGUAGE = "auto"
# The server's refusal of a request without TEXT when it has no ASR model holds this.
NO_ASR_REFUSAL = "input TEXT is required"
SERVE_WITH_ASR = "./scripts/serve --asr"
DEFAULT_TIMEOUT = 300.0  # seconds for one request; a 300 s clip on a busy CPU server takes a while
DEFAULT_RETRIES = 3  # extra tries for a request the server turned away as busy
RETRY_DELAY = 1.0  # seconds before the first retry; doubled for each further one
PROTOCOLS = ("http", "grpc")
# How a request carries its audio. "file": the encoded file as AUDIO_FILE, decoded by the server.
# "samples": decoded here and sent as float32 AUDIO at the file's rate with SAMPLE_RATE.
# "auto": the file when the source is one that the server decodes (WAV, FLAC, OGG, MP3), else the
# samples (arrays, such as the slices of a long recording cut by the client; AIFF and the like).
SEND_MODES = ("auto", "file", "samples")
DEFAULT_SEND = "auto"


class AlignerError(Exception):
    """A request that did not produce an alignment; the message says why."""


class ServerUnreachableError(AlignerError):
    """Nothing answered at the server's address (refused, reset or unresolvable)."""


class ModelNotReadyError(AlignerError):
    """The server answered but the ``qwen3_aligner`` model is not loaded or not ready."""


class RequestRejectedError(AlignerError):
    """The server refused this request's inputs (HTTP 400 / gRPC INVALID_ARGUMENT)."""


class TranscriptionUnavailableError(RequestRejectedError):
    """A request without a transcript reached a server without the ASR model: it cannot
    transcribe. Give the transcript, or start the server with ``./scripts/serve --asr``."""


class ServerBusyError(AlignerError):
    """The server turned the request away under load (queue full or queue timeout: HTTP 503 /
    gRPC UNAVAILABLE); trying again later can succeed."""


@dataclass(frozen=True)
class Transport:
    """What differs between ``tritonclient.http`` and ``tritonclient.grpc`` for this client."""

    protocol: str
    module: ModuleType
    default_port: int
    connect: Callable[[str, float], Any]  # (url, timeout seconds) -> InferenceServerClient
    call_options: Callable[[float], dict[str, Any]]  # timeout -> extra keyword arguments


def transport(protocol: str) -> Transport:
    """Pick ``tritonclient.http`` or ``tritonclient.grpc`` for ``protocol`` (``http``/``grpc``).

    This is the only place that knows the two modules apart: how to connect, the default port
    and how each takes a timeout.
    """
    if protocol == "http":
        import tritonclient.http as http

        return Transport(
            protocol="http",
            module=http,
            default_port=8000,
            connect=lambda url, timeout: http.InferenceServerClient(
                url, connection_timeout=timeout, network_timeout=timeout
            ),
            call_options=lambda timeout: {},
        )
    if protocol == "grpc":
        import tritonclient.grpc as grpc

        return Transport(
            protocol="grpc",
            module=grpc,
            default_port=8001,
            connect=lambda url, timeout: grpc.InferenceServerClient(url),
            call_options=lambda timeout: {"client_timeout": timeout},
        )
    raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")


def default_url(protocol: str) -> str:
    """``localhost:8000`` for HTTP, ``localhost:8001`` for gRPC (Triton's default ports)."""
    return f"localhost:{transport(protocol).default_port}"


@dataclass(frozen=True)
class Readiness:
    """What a health check found; ``error`` says what failed when not :attr:`ok`."""

    reachable: bool
    server_ready: bool
    model_ready: bool
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Whether requests can be sent now: server live and ready, model ready."""
        return self.reachable and self.server_ready and self.model_ready


@dataclass(frozen=True)
class Samples:
    """A decoded mono waveform, sent as ``AUDIO`` with ``SAMPLE_RATE``."""

    wave: np.ndarray  # float32, 1-D, within [-1, 1]
    sample_rate: int  # Hz


# What one request carries as its audio: samples, or an encoded file (sent as AUDIO_FILE).
AudioPayload = Samples | AudioFile


def check_send(send: str) -> str:
    """``send`` itself when it is one of :data:`SEND_MODES`, else a ``ValueError``."""
    if send not in SEND_MODES:
        raise ValueError(f"send must be one of {', '.join(SEND_MODES)}, got {send!r}")
    return send


def audio_payload(audio: AudioSource, send: str = DEFAULT_SEND) -> AudioPayload:
    """What a request carries for ``audio`` under the ``send`` mode (see :data:`SEND_MODES`).

    ``(samples, sample_rate)`` is always sent as samples (``send="file"`` refuses it). A path,
    bytes or binary file is read and its header parsed; ``"auto"`` and ``"file"`` then send it as
    it is when the server decodes its format, and for other formats ``"auto"`` decodes it here
    while ``"file"`` refuses it. ``"samples"`` decodes everything here. Raises
    :class:`~qwen3_aligner_client.audio.AudioError` for audio that cannot be read or decoded.
    """
    check_send(send)
    if isinstance(audio, tuple) or send == "samples":
        if send == "file":
            raise AudioError(
                "send='file' needs an encoded file (a path, bytes or a binary file), not "
                "(samples, sample_rate)"
            )
        return Samples(*load_audio(audio))
    file = read_audio_file(audio)
    if file.server_decodes:
        return file
    if send == "file":
        raise AudioError(
            f"audio {file.name} is a {file.format} file, which the server does not decode "
            "(WAV, FLAC, OGG, MP3); send it as samples"
        )
    return Samples(*load_audio(file.data))


@dataclass(frozen=True)
class AlignItem:
    """One alignment job for :meth:`AlignerClient.align_many`.

    With ``segments`` (subtitle cues or ASR segments, see :meth:`AlignerClient.align`) ``text``
    is ignored and may be ``""``. Without ``text`` (``None``) a server with the ASR model
    transcribes the audio first; ``language`` (``None`` or ``"auto"``: detected) and ``context``
    then guide the transcription. ``audio`` may be the bytes of a file, which are then sent as
    they are (``AUDIO_FILE``) unless ``send`` (default: the client's) says otherwise.
    """

    audio: AudioSource
    text: str | None = None
    language: str | None = None
    key: Any = None  # anything that identifies the item to the caller; returned with the result
    segments: Sequence[SegmentLike] | None = None
    send: str | None = None  # one of SEND_MODES; None: the client's own setting
    context: str | None = None  # without text: names and terms that guide the transcription


@dataclass(frozen=True)
class ItemResult:
    """The outcome of one :class:`AlignItem`: an alignment, or the error that stopped it."""

    index: int  # position of the item in the input
    item: AlignItem
    alignment: Alignment | None = None
    error: Exception | None = None

    @property
    def ok(self) -> bool:
        """Whether the item was aligned (then ``alignment`` is set, else ``error``)."""
        return self.error is None


def _status_text(error: InferenceServerException) -> str:
    return str(error.status() or "")


def _classify(error: Exception, url: str) -> AlignerError:
    """Turn a tritonclient or socket error into the matching :class:`AlignerError`."""
    if isinstance(error, AlignerError):
        return error
    if isinstance(error, InferenceServerException):
        status = _status_text(error)
        message = error.message() or str(error)
        if status in ("400", "StatusCode.INVALID_ARGUMENT"):
            if "unknown model" in message or "not ready" in message:
                return ModelNotReadyError(message)
            return RequestRejectedError(message)
        if status in ("404", "StatusCode.NOT_FOUND") or "unknown model" in message:
            return ModelNotReadyError(message)
        if status == "503" or (
            status == "StatusCode.UNAVAILABLE" and re.search(r"queue|timeout", message, re.I)
        ):
            return ServerBusyError(f"server busy: {message}")
        if status == "StatusCode.UNAVAILABLE":
            return ServerUnreachableError(f"cannot reach {url}: {message}")
        if status == "StatusCode.DEADLINE_EXCEEDED":
            return AlignerError(f"no answer from {url} in time: {message}")
        return AlignerError(f"server error{f' {status}' if status else ''}: {message}")
    if isinstance(error, TimeoutError):
        return AlignerError(f"no answer from {url} in time")
    if isinstance(error, OSError):
        return ServerUnreachableError(f"cannot reach {url}: {error.strerror or error}")
    return AlignerError(f"{type(error).__name__}: {error}")


class AlignerClient:
    """Aligns transcripts to audio with a Triton server serving ``qwen3_aligner``.

    ``url`` is ``host:port`` without a scheme; by default ``localhost:8000`` for ``http`` and
    ``localhost:8001`` for ``grpc``. ``timeout`` bounds each request, in seconds. A request the
    server turns away as busy (its queue is full) is tried again up to ``retries`` times, after
    1, 2, 4, ... seconds. ``send`` chooses how requests carry their audio (see
    :data:`SEND_MODES`; by default the encoded file when the server can decode it).

    The underlying tritonclient objects are not shared between threads: each thread that makes
    requests gets its own connection, so one client object may be used from many threads and
    :meth:`align_many` can keep several requests in flight. Close it (or use ``with``) to release
    the connections.
    """

    def __init__(
        self,
        url: str | None = None,
        protocol: str = "http",
        timeout: float = DEFAULT_TIMEOUT,
        model: str = MODEL_NAME,
        retries: int = DEFAULT_RETRIES,
        send: str = DEFAULT_SEND,
    ) -> None:
        self.transport = transport(protocol)
        self.send = check_send(send)
        self.protocol = protocol
        self.url = url or default_url(protocol)
        self.timeout = float(timeout)
        self.model = model
        self.retries = max(0, int(retries))
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[tuple[threading.Thread, Any]] = []

    def __enter__(self) -> AlignerClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"AlignerClient(url={self.url!r}, protocol={self.protocol!r})"

    def close(self) -> None:
        """Close every connection this client opened."""
        with self._lock:
            connections, self._connections = self._connections, []
        _close_all(c for _, c in connections)
        self._local = threading.local()

    def _close_orphans(self) -> None:
        """Close the connections of threads that have ended (the workers of a finished pool)."""
        with self._lock:
            orphans = [c for t, c in self._connections if not t.is_alive()]
            self._connections = [(t, c) for t, c in self._connections if t.is_alive()]
        _close_all(orphans)

    def _connection(self) -> Any:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            try:
                connection = self.transport.connect(self.url, self.timeout)
            except Exception as e:
                raise _classify(e, self.url) from e
            self._local.connection = connection
            with self._lock:
                self._connections.append((threading.current_thread(), connection))
        return connection

    def check(self) -> Readiness:
        """Ask whether the server is live and ready and the model is ready."""
        options = self.transport.call_options(self.timeout)
        try:
            connection = self._connection()
            if not connection.is_server_live(**options):
                return Readiness(True, False, False, "server is not live")
            server_ready = bool(connection.is_server_ready(**options))
            model_ready = bool(connection.is_model_ready(self.model, **options))
        except Exception as e:
            error = _classify(e, self.url)
            reachable = not isinstance(error, ServerUnreachableError)
            return Readiness(reachable, False, False, str(error))
        if not model_ready:
            return Readiness(True, server_ready, False, f"model {self.model} is not ready")
        if not server_ready:
            return Readiness(True, False, True, "server is not ready")
        return Readiness(True, True, True)

    def ready(self) -> bool:
        """True when the server is live and ready and the model is ready to serve."""
        return self.check().ok

    def _inputs(
        self,
        audio: AudioPayload,
        text: str | None,
        language: str | None,
        segments: str | None = None,
        context: str | None = None,
    ) -> list[Any]:
        """The request's tensors: ``AUDIO`` and ``SAMPLE_RATE`` for samples, ``AUDIO_FILE`` for a
        file; ``segments`` is the ``SEGMENTS`` JSON document, if any. ``TEXT``, ``LANGUAGE`` and
        ``CONTEXT`` are sent when given (``None`` leaves them out)."""
        module = self.transport.module
        given = {
            "TEXT": text,
            "LANGUAGE": language,
            "SEGMENTS": segments,
            "CONTEXT": context,
        }
        strings = {name: value for name, value in given.items() if value is not None}
        if isinstance(audio, AudioFile):
            inputs = [module.InferInput("AUDIO_FILE", [1, 1], INPUT_TYPES["AUDIO_FILE"])]
            inputs[0].set_data_from_numpy(np.array([[audio.data]], dtype=np.object_))
        else:
            wave = audio.wave.reshape(1, -1)
            inputs = [
                module.InferInput("AUDIO", list(wave.shape), INPUT_TYPES["AUDIO"]),
                module.InferInput("SAMPLE_RATE", [1, 1], INPUT_TYPES["SAMPLE_RATE"]),
            ]
            inputs[0].set_data_from_numpy(wave)
            inputs[1].set_data_from_numpy(np.array([[audio.sample_rate]], dtype=np.int32))
        for name, value in strings.items():
            tensor = module.InferInput(name, [1, 1], INPUT_TYPES[name])
            tensor.set_data_from_numpy(np.array([[value.encode("utf-8")]], dtype=np.object_))
            inputs.append(tensor)
        return inputs

    def align(
        self,
        audio: AudioSource,
        text: str | None = None,
        language: str | None = None,
        segments: Sequence[SegmentLike] | None = None,
        send: str | None = None,
        context: str | None = None,
    ) -> Alignment:
        """Align ``text`` to ``audio`` and return the timed words.

        ``audio`` is a path, encoded bytes, an open binary file or ``(samples, sample_rate)``;
        ``language`` is one of the aligner's 11 languages by name or code (``English``, ``en``).

        Without ``text`` (``None``, and no ``segments``) the server transcribes the audio first,
        which needs a server started with ``./scripts/serve --asr``; ``language`` is then
        optional (``None`` or ``"auto"``: detected; else forced) and ``context`` (names, terms)
        guides the transcription. The result's ``text`` is the server's transcript
        (``TRANSCRIPT``), its ``language`` the transcript's (``TRANSCRIPT_LANGUAGE``), and
        ``transcribed`` is true. A server without the ASR model refuses such a request with
        :class:`TranscriptionUnavailableError`. ``context`` with ``text`` or ``segments``, and
        ``text`` or ``segments`` without ``language``, are a ``ValueError``.
        ``send`` (default: the client's ``send``) chooses whether a file goes to the server as it
        is or decoded here (see :data:`SEND_MODES` and :func:`audio_payload`); the alignment is
        the same. With ``"auto"``, a file whose decoded peak exceeds 1, which the server refuses
        as a file, is sent again as samples (scaled to a peak of 1, as upstream does).

        ``segments`` switches the server to cue-guided mode: subtitle cues or ASR segments as
        :class:`~qwen3_aligner_client.segments.Segment`, ``(start, end, text)`` tuples or
        ``{"start", "end", "text"}`` dicts, in seconds from the start of ``audio``, in order, not
        overlapping, each at most 180 s. Each cue's words are then placed within its span (plus
        a margin of about 1 s); ``text`` is not sent (``TEXT`` is ``""``) and may be ``""``. The
        result's ``text`` is the cue texts joined by ``"\\n"``, which its character spans refer
        to. For subtitle files, :mod:`~qwen3_aligner_client.segments` cleans the cues (markup,
        overlaps) and :mod:`~qwen3_aligner_client.longform` splits a long recording into
        requests of a few minutes.

        Raises :class:`~qwen3_aligner_client.audio.AudioError` for audio that cannot be decoded,
        :class:`RequestRejectedError` when the server refuses the inputs (overlapping or
        over-long cues among them), ``ValueError`` for ``segments`` that are not cues at all, and
        the other :class:`AlignerError` subclasses when the server cannot be reached or is not
        ready.
        """
        document: str | None = None
        if segments is not None:
            cues = to_segments(segments)
            document = json.dumps([c.to_dict() for c in cues], ensure_ascii=False)
            text = ""
        transcribe = text is None
        if not transcribe and context is not None:
            raise ValueError(
                "context guides the transcription: it is for requests without text or segments"
            )
        if not transcribe and language is None:
            raise ValueError(
                "language is required with text or segments (only a transcription detects it)"
            )
        mode = self.send if send is None else check_send(send)
        payload = audio_payload(audio, mode)
        try:
            result = self._infer(self._inputs(payload, text, language, document, context))
        except RequestRejectedError as e:
            if transcribe and NO_ASR_REFUSAL in str(e):
                raise TranscriptionUnavailableError(
                    "the server cannot transcribe (it runs without the ASR model): give a "
                    f"transcript, or start the server with {SERVE_WITH_ASR} ({e})"
                ) from e
            raise
        output = result.as_numpy("ALIGNMENT")
        if output is None:
            raise AlignerError("the server's response has no ALIGNMENT output")
        try:
            alignment = Alignment.from_json(output.reshape(-1)[0], text=text)
        except (ValueError, KeyError, TypeError) as e:
            raise AlignerError(f"the server's ALIGNMENT document is malformed: {e}") from e
        _check_words(alignment, result)
        _check_times(alignment)
        if transcribe:
            _check_transcript(alignment, result)
            alignment = replace(alignment, transcribed=True)
        return alignment

    def _infer(self, inputs: list[Any]) -> Any:
        """Send one request, trying again while the server turns it away as busy."""
        options = self.transport.call_options(self.timeout)
        for attempt in range(self.retries + 1):
            try:
                return self._connection().infer(self.model, inputs, **options)
            except Exception as e:
                error = _classify(e, self.url)
                if not isinstance(error, ServerBusyError) or attempt == self.retries:
                    raise error from e
            time.sleep(RETRY_DELAY * 2**attempt)
        raise AssertionError("unreachable")  # the last attempt returns or raises

    def align_many(
        self, items: Iterable[AlignItem | tuple[AudioSource, str, str]], concurrency: int = 8
    ) -> Iterator[ItemResult]:
        """Align many items, keeping up to ``concurrency`` requests in flight.

        Results are yielded as they complete (not in input order; :attr:`ItemResult.index` gives
        the position). A failing item yields an :class:`ItemResult` with its ``error`` and the
        others go on. ``items`` is consumed lazily, so it may be a generator over a huge corpus.
        Several requests in flight let Triton's dynamic batcher fill its batches. Items with
        ``segments`` are sent in cue-guided mode, items without ``text`` are transcribed first
        (see :meth:`align`).
        """
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")

        def run(index: int, item: AlignItem) -> ItemResult:
            try:
                # context only where given: align() of a subclass or stand-in that predates it
                # keeps working for items with a transcript
                extra = {} if item.context is None else {"context": item.context}
                alignment = self.align(
                    item.audio, item.text, item.language, item.segments, item.send, **extra
                )
            except (AlignerError, AudioError, ValueError) as e:
                return ItemResult(index, item, error=e)
            except Exception as e:  # anything else is still this item's failure alone
                return ItemResult(index, item, error=AlignerError(f"{type(e).__name__}: {e}"))
            return ItemResult(index, item, alignment=alignment)

        source = enumerate(it if isinstance(it, AlignItem) else AlignItem(*it) for it in items)
        pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=concurrency, thread_name_prefix="qwen3-align"
        )
        pending: set[concurrent.futures.Future[ItemResult]] = set()
        try:
            for index, item in source:
                pending.add(pool.submit(run, index, item))
                if len(pending) < concurrency:
                    continue
                done, pending = concurrent.futures.wait(
                    pending, return_when=concurrent.futures.FIRST_COMPLETED
                )
                yield from (future.result() for future in done)
            for future in concurrent.futures.as_completed(pending):
                yield future.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            self._close_orphans()


def _check_words(alignment: Alignment, result: Any) -> None:
    """Check the JSON document against the ``WORDS`` tensor; a mismatch means a broken server."""
    words = result.as_numpy("WORDS")
    if words is None:
        return
    texts = [w.decode("utf-8") if isinstance(w, bytes) else str(w) for w in words.reshape(-1)]
    if texts != [w.text for w in alignment.words]:
        raise AlignerError("the server's WORDS output does not match its ALIGNMENT document")


def _check_transcript(alignment: Alignment, result: Any) -> None:
    """Check ``TRANSCRIPT`` and ``TRANSCRIPT_LANGUAGE``, where the server sends them, against the
    document's ``text`` and ``language``; a mismatch means a broken server."""
    for name, value in (
        ("TRANSCRIPT", alignment.text),
        ("TRANSCRIPT_LANGUAGE", alignment.language),
    ):
        tensor = result.as_numpy(name)
        if tensor is None:
            continue
        flat = tensor.reshape(-1)
        sent = flat[0] if flat.size == 1 else None
        if isinstance(sent, bytes):
            sent = sent.decode("utf-8", errors="replace")
        if sent != value:
            raise AlignerError(f"the server's {name} output does not match its ALIGNMENT document")


def _check_times(alignment: Alignment) -> None:
    """Every time must be a finite number of seconds: a server that sends ``Infinity`` or ``NaN``
    is broken, and its document would break every writer downstream (SRT, TextGrid, ...)."""
    if not math.isfinite(alignment.duration):
        raise AlignerError(f"the server sent a non-finite duration ({alignment.duration})")
    for index, word in enumerate(alignment.words):
        if not (math.isfinite(word.start) and math.isfinite(word.end)):
            raise AlignerError(
                f"the server sent non-finite times for word {index} ({word.text!r}): "
                f"{word.start}-{word.end}"
            )


def _close_all(connections: Iterable[Any]) -> None:
    for connection in connections:
        # Closing a broken connection must not hide the error that broke it.
        with contextlib.suppress(Exception):
            connection.close()
