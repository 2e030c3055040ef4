"""Qwen3-ASR in front of the aligner, run the way upstream's Transformers backend runs it.

Upstream's ``Qwen3ASRModel.transcribe(audio, context, language, return_time_stamps=True)`` cuts a
recording into chunks of at most ``MAX_FORCE_ALIGN_INPUT_SECONDS`` (``split_audio_into_chunks``,
a cut at a quiet point near each 180 s mark), transcribes the chunks together (its
``_infer_asr_transformers``: the processor's chat template as the prompt, ``generate`` greedy, the
new tokens decoded) in calls of at most ``max_inference_batch_size`` chunks, parses each answer
(``parse_asr_output``: language and text), aligns each chunk's text on its chunk, offsets each
chunk's times by the chunk's start and concatenates them. This module is the ASR half of that,
with upstream's own functions for the chunking and the parsing: :func:`split_chunks`,
:class:`AsrRunner` (one call of chunks, as one ``_infer_asr_transformers`` batch) and
:func:`merge_transcripts`. The one change is a bound on new tokens that follows the audio's
length (:func:`new_token_limit`), never above upstream's own ``max_new_tokens``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from .contract import ASR_MIN_MAX_BATCH_SIZE, MODEL_SAMPLE_RATE
from .contract import ASR_MODEL_NAME as ASR_MODEL_NAME
from .results import AlignedUnit, Alignment

DEFAULT_ASR_CHECKPOINT = "Qwen/Qwen3-ASR-0.6B"
# The launchers' variable naming the ASR checkpoint (folder or hub id); unset or empty: none.
ASR_CHECKPOINT_ENV = "ASR_MODEL"
MAX_CHUNK_SECONDS = 180.0  # upstream's MAX_FORCE_ALIGN_INPUT_SECONDS: chunks the aligner takes
MAX_CHUNKS_PER_CALL = ASR_MIN_MAX_BATCH_SIZE  # upstream's max_inference_batch_size (32)
UPSTREAM_MAX_NEW_TOKENS = 512  # upstream's max_new_tokens per generate call
AUTO_LANGUAGE = "auto"  # LANGUAGE value that asks for detection, as an absent LANGUAGE does


@dataclass(frozen=True)
class AsrSettings:
    """Typed parameters of the ASR model's ``config.pbtxt`` (``params.read_asr_settings``)."""

    checkpoint: str = DEFAULT_ASR_CHECKPOINT
    dtype: str = "auto"  # auto: bfloat16 on GPU, float32 on CPU
    attn_implementation: str = "auto"  # auto: the transformers default (sdpa)
    # windowed: the audio encoder attends within its 8 s windows (as trained, as the aligner's
    # core runs it); full: qwen-asr 0.0.6 under sdpa.
    encoder_attention: str = "windowed"
    # New tokens per generate call: base_new_tokens + new_tokens_per_second x the longest chunk's
    # seconds, never above max_new_tokens (upstream's 512). Speech runs at 2-6 tokens a second.
    max_new_tokens: int = UPSTREAM_MAX_NEW_TOKENS
    new_tokens_per_second: float = 10.0
    base_new_tokens: int = 16  # "language X<asr_text>" and the end token fit in it
    warmup: bool = True  # transcribe one second of silence at load


@dataclass(frozen=True)
class AsrChunk:
    """One chunk of a recording: its 16 kHz waveform and where it starts, in seconds."""

    wave: np.ndarray  # float32, 1-D, 16 kHz
    offset: float  # seconds from the start of the recording


@dataclass(frozen=True)
class ChunkTranscript:
    """What the ASR model said for one chunk, parsed: language ("" when none) and text."""

    language: str
    text: str


@dataclass(frozen=True)
class AsrCall:
    """One call of the ASR model: chunks transcribed in one generate call, each with its context
    and forced language (upstream's name, None to detect)."""

    waves: tuple[np.ndarray, ...]
    contexts: tuple[str, ...]
    languages: tuple[str | None, ...]


class AsrCallError(ValueError):
    """An ASR call whose tensors are malformed (only the front calls the ASR model)."""


@dataclass(frozen=True)
class Transcript:
    """A recording's transcript as upstream merges its chunks' (``transcribe``)."""

    language: str  # "English", "Chinese,English" for several, "" for none
    text: str


def qwen_asr_utils() -> Any:
    """Upstream's ``qwen_asr.inference.utils`` (chunking, parsing, language names)."""
    from .loading import import_qwen_asr

    import_qwen_asr()
    from qwen_asr.inference import utils

    return utils


def split_chunks(wave: np.ndarray) -> list[AsrChunk]:
    """``wave`` (16 kHz) cut as upstream cuts it for timestamps (``split_audio_into_chunks`` at
    180 s; a tail under 0.5 s is padded with zeros there, as upstream pads it)."""
    utils = qwen_asr_utils()
    parts = utils.split_audio_into_chunks(
        wav=wave, sr=MODEL_SAMPLE_RATE, max_chunk_sec=MAX_CHUNK_SECONDS
    )
    return [AsrChunk(np.asarray(w, dtype=np.float32), float(offset)) for w, offset in parts]


def forced_language(language: str | None) -> str | None:
    """Upstream's name for a forced language (``normalize_language_name``), None to detect;
    raises ValueError for a language Qwen3-ASR does not know."""
    if language is None or language.strip() == "" or language.strip().lower() == AUTO_LANGUAGE:
        return None
    utils = qwen_asr_utils()
    name = utils.normalize_language_name(language)
    utils.validate_language(name)
    return name


def asr_languages() -> list[str]:
    """The languages Qwen3-ASR transcribes (upstream's ``SUPPORTED_LANGUAGES``)."""
    return list(qwen_asr_utils().SUPPORTED_LANGUAGES)


def new_token_limit(settings: AsrSettings, seconds: float) -> int:
    """Most new tokens for a generate call whose longest chunk lasts ``seconds``."""
    wanted = settings.base_new_tokens + math.ceil(settings.new_tokens_per_second * seconds)
    return max(1, min(settings.max_new_tokens, wanted))


def parse(raw: str, language: str | None) -> ChunkTranscript:
    """One raw answer parsed as upstream does (``parse_asr_output``)."""
    lang, text = qwen_asr_utils().parse_asr_output(raw, user_language=language)
    return ChunkTranscript(lang, text)


def merge_transcripts(parts: Sequence[ChunkTranscript]) -> Transcript:
    """The chunks' transcripts joined as upstream's ``transcribe`` joins them: texts
    concatenated as they are, languages by ``merge_languages``."""
    utils = qwen_asr_utils()
    return Transcript(
        language=utils.merge_languages([p.language for p in parts]),
        text="".join(p.text for p in parts),
    )


@contextmanager
def last_position_logits(thinker: Any) -> Iterator[None]:
    """Within it, ``thinker``'s LM head scores the last position only, all that greedy
    ``generate`` reads. Upstream's forward scores every position of the prompt: the prefill of
    one 180 s chunk holds 2,400 x 151,936 float32 logits (1.4 GB), a call of 32 chunks 46 GB."""
    import torch

    head = thinker.lm_head

    class LastPosition(torch.nn.Module):
        def forward(self, hidden: torch.Tensor) -> torch.Tensor:
            return head(hidden[:, -1:, :])

    thinker.lm_head = LastPosition()
    try:
        yield
    finally:
        thinker.lm_head = head


class AsrRunner:
    """A loaded Qwen3-ASR model: ``transcribe`` runs one call of chunks as one
    ``_infer_asr_transformers`` batch of upstream's does (one processor call, one greedy
    ``generate``, the new tokens decoded), then parses each answer."""

    def __init__(self, model: Any, processor: Any, settings: AsrSettings) -> None:
        self.model = model
        self.processor = processor
        self.settings = settings

    def prompt(self, context: str, language: str | None) -> str:
        """Upstream's prompt (``_build_text_prompt``): the chat template over the system
        context and one audio, and ``language X<asr_text>`` when the language is forced."""
        messages = [
            {"role": "system", "content": context or ""},
            {"role": "user", "content": [{"type": "audio", "audio": ""}]},
        ]
        base = self.processor.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )
        return base + f"language {language}<asr_text>" if language else base

    def generate(
        self,
        waves: Sequence[np.ndarray],
        contexts: Sequence[str],
        languages: Sequence[str | None],
    ) -> list[str]:
        """Raw answers for ``waves`` (16 kHz), generated together as upstream's batch."""
        import torch

        if not waves:
            return []
        if len(waves) > MAX_CHUNKS_PER_CALL:
            raise ValueError(f"{len(waves)} chunks in one call; the limit is {MAX_CHUNKS_PER_CALL}")
        text = [self.prompt(c, lang) for c, lang in zip(contexts, languages, strict=True)]
        inputs = self.processor(text=text, audio=list(waves), return_tensors="pt", padding=True)
        inputs = inputs.to(self.model.device).to(self.model.dtype)
        longest = max(int(w.shape[0]) for w in waves) / MODEL_SAMPLE_RATE
        with torch.inference_mode(), last_position_logits(self.model.thinker):
            out = self.model.generate(
                **inputs, max_new_tokens=new_token_limit(self.settings, longest)
            )
        return list(
            self.processor.batch_decode(
                out.sequences[:, inputs["input_ids"].shape[1] :],
                skip_special_tokens=True,
                clean_up_tokenization_spaces=False,
            )
        )

    def transcribe(
        self,
        waves: Sequence[np.ndarray],
        contexts: Sequence[str],
        languages: Sequence[str | None],
    ) -> list[ChunkTranscript]:
        """Each chunk's language and text; a language is a forced name (upstream's) or None."""
        raws = self.generate(waves, contexts, languages)
        return [parse(raw, lang) for raw, lang in zip(raws, languages, strict=True)]

    def run(self, call: AsrCall) -> list[ChunkTranscript]:
        """One call of the ASR model."""
        return self.transcribe(call.waves, call.contexts, call.languages)


def _strings(values: Sequence[str]) -> np.ndarray:
    return np.array([[v.encode("utf-8")] for v in values], dtype=np.object_).reshape(-1, 1)


def _decoded(name: str, array: np.ndarray | None, rows: int) -> list[str]:
    if array is None:
        raise AsrCallError(f"input {name} is required")
    flat = np.asarray(array).reshape(-1)
    if flat.shape[0] != rows:
        raise AsrCallError(f"input {name} has {flat.shape[0]} rows for {rows} chunks")
    out = []
    for value in flat:
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                raise AsrCallError(f"input {name} is not valid UTF-8") from None
        if not isinstance(value, str):
            raise AsrCallError(f"input {name} must hold strings")
        out.append(value)
    return out


def asr_request_arrays(call: AsrCall) -> dict[str, np.ndarray]:
    """The ASR model's input tensors for ``call``: one row per chunk, AUDIO zero-padded."""
    lengths = [int(w.shape[0]) for w in call.waves]
    audio = np.zeros((len(lengths), max(lengths, default=0)), dtype=np.float32)
    for row, wave in enumerate(call.waves):
        audio[row, : wave.shape[0]] = wave
    return {
        "AUDIO": audio,
        "AUDIO_LENGTH": np.array(lengths, dtype=np.int32).reshape(-1, 1),
        "CONTEXT": _strings(call.contexts),
        "LANGUAGE": _strings([lang or "" for lang in call.languages]),
    }


def asr_call_from_arrays(arrays: dict[str, np.ndarray | None]) -> AsrCall:
    """The call the tensors of one ASR request carry; raises :class:`AsrCallError`."""
    audio = arrays.get("AUDIO")
    lengths = arrays.get("AUDIO_LENGTH")
    if audio is None or lengths is None:
        raise AsrCallError("inputs AUDIO and AUDIO_LENGTH are required")
    audio = np.asarray(audio)
    if audio.ndim != 2 or audio.dtype != np.float32:
        raise AsrCallError("input AUDIO must be FP32 of shape [chunks, samples]")
    counts = np.asarray(lengths).reshape(-1)
    rows = audio.shape[0]
    if counts.shape[0] != rows or not 1 <= rows <= MAX_CHUNKS_PER_CALL:
        raise AsrCallError(f"{rows} chunks with {counts.shape[0]} lengths; 1-32 chunks per call")
    if np.any(counts < 1) or np.any(counts > audio.shape[1]):
        raise AsrCallError("input AUDIO_LENGTH must be within 1 and the padded length")
    languages = _decoded("LANGUAGE", arrays.get("LANGUAGE"), rows)
    return AsrCall(
        waves=tuple(audio[r, : int(counts[r])].copy() for r in range(rows)),
        contexts=tuple(_decoded("CONTEXT", arrays.get("CONTEXT"), rows)),
        languages=tuple(lang or None for lang in languages),
    )


def transcript_arrays(parts: Sequence[ChunkTranscript]) -> dict[str, np.ndarray]:
    """The ASR model's output tensors: one row per chunk."""
    return {
        "TRANSCRIPT": _strings([p.text for p in parts]),
        "TRANSCRIPT_LANGUAGE": _strings([p.language for p in parts]),
    }


def transcripts_from_arrays(arrays: dict[str, np.ndarray]) -> list[ChunkTranscript]:
    """Each chunk's transcript from the ASR model's output tensors."""
    texts = np.asarray(arrays["TRANSCRIPT"]).reshape(-1)
    langs = np.asarray(arrays["TRANSCRIPT_LANGUAGE"]).reshape(-1)
    return [
        ChunkTranscript(_text(lang), _text(text)) for text, lang in zip(texts, langs, strict=True)
    ]


def _text(value: object) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def calls_for(chunks: Sequence[AsrChunk], context: str, language: str | None) -> list[AsrCall]:
    """The ASR calls of one request: its chunks in order, at most 32 per call, as upstream's
    ``_infer_asr_transformers`` cuts its batches."""
    return [
        AsrCall(
            waves=tuple(c.wave for c in chunks[i : i + MAX_CHUNKS_PER_CALL]),
            contexts=(context,) * len(chunks[i : i + MAX_CHUNKS_PER_CALL]),
            languages=(language,) * len(chunks[i : i + MAX_CHUNKS_PER_CALL]),
        )
        for i in range(0, len(chunks), MAX_CHUNKS_PER_CALL)
    ]


def load_asr(settings: AsrSettings, device: str, shadowing_dir: str | None = None) -> AsrRunner:
    """Load the ASR checkpoint of ``settings`` onto ``device`` as upstream's
    ``Qwen3ASRModel.from_pretrained`` does (``AutoModel`` and ``AutoProcessor``); raises
    ``ConfigError`` with the reason when it cannot."""
    from pathlib import Path

    from .encoder_attention import set_encoder_attention
    from .loading import import_qwen_asr, resolve_dtype
    from .params import ConfigError

    checkpoint = settings.checkpoint
    folder = Path(checkpoint).expanduser()
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"device {device} requested but torch sees no CUDA device")
    qwen_asr = import_qwen_asr(shadowing_dir)
    kwargs: dict[str, Any] = {
        "dtype": resolve_dtype(settings.dtype, device),
        "device_map": device,
    }
    if settings.attn_implementation != "auto":
        kwargs["attn_implementation"] = settings.attn_implementation
    source = str(folder) if folder.is_dir() else checkpoint
    try:
        loaded = qwen_asr.Qwen3ASRModel.from_pretrained(source, **kwargs)
    except Exception as e:
        raise ConfigError(
            f"could not load the ASR checkpoint {checkpoint!r}: {type(e).__name__}: {e}"
        ) from e
    thinker_type = str(getattr(loaded.model.config.thinker_config, "model_type", ""))
    if "forced_aligner" in thinker_type:
        raise ConfigError(
            f"checkpoint {checkpoint!r} is a forced aligner, not an ASR checkpoint; give "
            f"Qwen3-ASR (default {DEFAULT_ASR_CHECKPOINT})"
        )
    try:
        set_encoder_attention(loaded.model, settings.encoder_attention)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    return AsrRunner(loaded.model, loaded.processor, settings)


def offset_alignment(
    alignment: Alignment, offset: float, char_offset: int
) -> tuple[AlignedUnit, ...]:
    """A chunk's units placed in the recording: times shifted by the chunk's start and rounded
    to the millisecond as upstream's ``_offset_align_result`` does, spans by where the chunk's
    text starts in the merged transcript."""
    from dataclasses import replace

    return tuple(
        replace(
            u,
            start=round(u.start + offset, 3),
            end=round(u.end + offset, 3),
            char_start=u.char_start + char_offset,
            char_end=u.char_end + char_offset,
            display_start=u.display_start + char_offset,
            display_end=u.display_end + char_offset,
        )
        for u in alignment.units
    )


def merge_alignments(
    chunks: Sequence[AsrChunk],
    parts: Sequence[ChunkTranscript],
    alignments: Sequence[Alignment | None],
    duration: float,
) -> tuple[Transcript, Alignment]:
    """The recording's transcript and alignment from its chunks' (None for a chunk without
    text, which upstream does not align), in chunk order, as upstream's ``transcribe`` merges
    them (``_offset_align_result``, ``_merge_align_results``)."""
    transcript = merge_transcripts(parts)
    units: list[AlignedUnit] = []
    position = 0
    for chunk, part, alignment in zip(chunks, parts, alignments, strict=True):
        if alignment is not None:
            units.extend(offset_alignment(alignment, chunk.offset, position))
        position += len(part.text)
    return transcript, Alignment(transcript.language, duration, tuple(units), transcript.text)
