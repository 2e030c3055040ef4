"""Client library and ``qwen3-align`` command for the ``qwen3_aligner`` model on Triton.

>>> from qwen3_aligner_client import AlignerClient, render
>>> with AlignerClient("localhost:8000") as client:           # doctest: +SKIP
...     alignment = client.align("speech.wav", "Hello, world!", "en")
...     print(render(alignment, "srt"))

Without a transcript, a server started with ``./scripts/serve --asr`` transcribes first:

>>> with AlignerClient("localhost:8000") as client:           # doctest: +SKIP
...     alignment = client.align("speech.wav")                  # language detected
...     print(alignment.language, alignment.text)               # the server's transcript
"""

from .audio import (
    AUDIO_SUFFIXES,
    AudioError,
    AudioFile,
    AudioSource,
    load_audio,
    read_audio_file,
)
from .batch import (
    BatchItem,
    ManifestError,
    UnsafePathError,
    items_from_folder,
    items_from_manifest,
    load_items,
)
from .client import (
    DEFAULT_TIMEOUT,
    MODEL_NAME,
    SEND_MODES,
    AlignerClient,
    AlignerError,
    AlignItem,
    ItemResult,
    ModelNotReadyError,
    Readiness,
    RequestRejectedError,
    Samples,
    ServerBusyError,
    ServerUnreachableError,
    TranscriptionUnavailableError,
    audio_payload,
    default_url,
    transport,
)
from .cues import Cue, CueOptions, group_cues
from .longform import CueGroup, align_cues, align_groups, merge_alignments, plan_groups
from .plot import PlotOptions, png_pages, save_png
from .report import html_report
from .results import AlignedWord, Alignment
from .segments import Segment, SegmentLike, SubtitleError, parse_subtitles, subtitle_kind, tidy_cues
from .writers import FORMATS, Format, WriteOptions, render, save, write_atomic

__all__ = [
    "AUDIO_SUFFIXES",
    "DEFAULT_TIMEOUT",
    "FORMATS",
    "MODEL_NAME",
    "SEND_MODES",
    "AlignItem",
    "AlignedWord",
    "AlignerClient",
    "AlignerError",
    "Alignment",
    "AudioError",
    "AudioFile",
    "AudioSource",
    "BatchItem",
    "Cue",
    "CueGroup",
    "CueOptions",
    "Format",
    "ItemResult",
    "ManifestError",
    "ModelNotReadyError",
    "PlotOptions",
    "Readiness",
    "RequestRejectedError",
    "Samples",
    "Segment",
    "SegmentLike",
    "ServerBusyError",
    "ServerUnreachableError",
    "SubtitleError",
    "TranscriptionUnavailableError",
    "UnsafePathError",
    "WriteOptions",
    "align_cues",
    "align_groups",
    "audio_payload",
    "default_url",
    "group_cues",
    "html_report",
    "items_from_folder",
    "items_from_manifest",
    "load_audio",
    "load_items",
    "merge_alignments",
    "parse_subtitles",
    "plan_groups",
    "png_pages",
    "read_audio_file",
    "render",
    "save",
    "save_png",
    "subtitle_kind",
    "tidy_cues",
    "transport",
    "write_atomic",
]
