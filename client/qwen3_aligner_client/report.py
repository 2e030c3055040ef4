"""An alignment to see and hear: one self-contained HTML page with the audio, waveform and text.

:func:`html_report` returns a single HTML document that needs nothing but a browser, offline:
the audio is embedded as MP3 (base64, played from a ``blob:`` URL), the waveform as decimated
peaks, the units and the transcript as JSON, and the page's CSS and JavaScript inline. A
Content-Security-Policy forbids every network request. The page shows

* the waveform of the whole recording (overview) and of a window around the playhead, with unit
  boundaries, labels and the playhead;
* the transcript with its original punctuation and line breaks, every unit clickable (plays from
  the unit's start), its times in the hover title, the unit being played highlighted;
* a table of all units (toggle), virtualised so that 40,000 rows scroll smoothly;
* keys: space plays or pauses, left and right arrows step to the previous or next unit.

Long transcripts are rendered lazily, in chunks of a few hundred units as they scroll into view,
and the waveform holds at most :data:`PEAKS_MAX` peaks, so an hour-long alignment opens in seconds.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
import soundfile

from .audio import fit_peak, to_mono_float32
from .results import Alignment

# The embedded audio: MP3, which every browser plays, mono, at a speech rate and a modest bitrate.
MP3_RATES = (8000, 11025, 12000, 16000)  # Hz: the MPEG-2/2.5 rates up to the model's own
REPORT_RATE = 16000  # Hz: the highest rate embedded (the aligner hears 16 kHz too)
MP3_QUALITY = 0.5  # libsndfile compression level, VBR: about 26 kbit/s at 16 kHz, 14 at 8 kHz
PEAKS_PER_SECOND = 100  # waveform resolution for short recordings (10 ms per peak)
PEAKS_MAX = 8000  # at most this many (min, max) pairs: an hour gets one per 0.45 s
PEAK_SCALE = 127  # peaks are stored as integers in [-127, 127], the loudest sample at +-127

LANGUAGE_TAGS = {  # BCP 47 tags for the page's lang attribute (picks CJK glyph forms)
    "Chinese": "zh",
    "English": "en",
    "Cantonese": "yue",
    "French": "fr",
    "German": "de",
    "Italian": "it",
    "Japanese": "ja",
    "Korean": "ko",
    "Portuguese": "pt",
    "Russian": "ru",
    "Spanish": "es",
}

# No request may leave the page: only inline code and styles, and media from the blob: URL.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "media-src blob: data:; img-src data: blob:"
)


def report_rate(sample_rate: int) -> int:
    """The rate the audio is embedded at: the highest MP3 rate not above the source's, max 16 kHz.

    Sources below 8 kHz are raised to 8 kHz, the lowest rate MP3 has.
    """
    fitting = [r for r in MP3_RATES if r <= min(sample_rate, REPORT_RATE)]
    return fitting[-1] if fitting else MP3_RATES[0]


def resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    """``samples`` at ``target`` Hz (libsoxr, delay-compensated; unchanged when the rates agree)."""
    if rate == target:
        return samples
    import soxr

    out = soxr.resample(np.asarray(samples, dtype=np.float32), rate, target, quality="HQ")
    return np.asarray(out, dtype=np.float32)


def encode_mp3(samples: Any, sample_rate: int) -> bytes:
    """Mono MP3 (VBR, at :func:`report_rate`) of ``samples``, for embedding in the page.

    libsndfile writes a LAME header with the encoder delay, so decoders that honour it (browsers,
    libsndfile) start the audio exactly at sample 0 and unit times stay in sync with the sound.
    """
    wave = fit_peak(to_mono_float32(samples))
    target = report_rate(sample_rate)
    wave = np.clip(resample(wave, sample_rate, target), -1.0, 1.0)
    if wave.size == 0:
        wave = np.zeros(1, dtype=np.float32)
    buffer = io.BytesIO()
    soundfile.write(
        buffer, wave, target, format="MP3", subtype="MPEG_LAYER_III", compression_level=MP3_QUALITY
    )
    return buffer.getvalue()


def waveform_peaks(samples: Any, count: int) -> tuple[list[int], list[int]]:
    """The lowest and highest sample of each of ``count`` equal slices of ``samples``.

    Values are integers in [-127, 127], scaled so that the loudest sample reaches 127 (quiet
    recordings still show their shape); silence is all zeros. Fewer samples than ``count`` give
    one pair per sample.
    """
    wave = to_mono_float32(samples)
    if wave.size == 0:
        return [0], [0]
    count = max(1, min(count, wave.size))
    edges = np.linspace(0, wave.size, count + 1).astype(np.int64)[:-1]
    lows = np.minimum.reduceat(wave, edges)
    highs = np.maximum.reduceat(wave, edges)
    peak = float(max(np.max(np.abs(lows)), np.max(np.abs(highs))))
    scale = PEAK_SCALE / peak if peak > 0 else 0.0
    low = np.clip(np.round(lows * scale), -PEAK_SCALE, PEAK_SCALE).astype(np.int64)
    high = np.clip(np.round(highs * scale), -PEAK_SCALE, PEAK_SCALE).astype(np.int64)
    return low.tolist(), high.tolist()


@dataclass(frozen=True)
class TextLayout:
    """The transcript cut around the units: ``gaps[k]`` precedes unit ``k``, ``gaps[-1]`` ends it.

    ``"".join(g + l for g, l in zip(gaps, labels)) + gaps[-1]`` is the transcript itself when the
    alignment carries display spans; ``labels[k]`` is unit ``k`` as it is written there
    (``display``, with its punctuation).
    """

    gaps: list[str]
    labels: list[str]


def text_layout(alignment: Alignment) -> TextLayout:
    """Cut the transcript into unit labels and the text between them.

    Without display spans (older servers), or with spans that do not fit the transcript, the
    labels are the units' own text separated by spaces. Overlapping spans are clipped so that no
    character is shown twice; a unit left with nothing of its own shows its text.
    """
    words = alignment.words
    text = alignment.text
    usable = alignment.has_spans and all(
        0 <= (w.display_start or 0) <= (w.display_end or 0) <= len(text) for w in words
    )
    if not usable:
        gaps = ["", *[" "] * (len(words) - 1), ""] if words else [""]
        return TextLayout(gaps=gaps, labels=[w.label for w in words])
    gaps: list[str] = []
    labels: list[str] = []
    cursor = 0
    for w in words:
        start = max(int(w.display_start or 0), cursor)
        end = max(int(w.display_end or 0), start)
        gaps.append(text[cursor:start])
        labels.append(text[start:end] or w.text)
        cursor = max(cursor, end)
    gaps.append(text[cursor:])
    return TextLayout(gaps=gaps, labels=labels)


def _seconds_to_ms(value: float) -> int:
    return round(value * 1000) if math.isfinite(value) else 0


def report_data(alignment: Alignment, samples: Any, sample_rate: int, title: str) -> dict[str, Any]:
    """What the page's script reads: units (times in ms), transcript pieces and waveform peaks."""
    wave = to_mono_float32(samples)
    audio_seconds = wave.size / sample_rate
    duration = max(audio_seconds, alignment.duration, 0.0)
    count = min(PEAKS_MAX, max(1, math.ceil(audio_seconds * PEAKS_PER_SECOND)))
    low, high = waveform_peaks(wave, count)
    layout = text_layout(alignment)
    return {
        "title": title,
        "language": alignment.language,
        "duration": duration,
        "audioDuration": audio_seconds,
        "start": [_seconds_to_ms(w.start) for w in alignment.words],
        "end": [_seconds_to_ms(w.end) for w in alignment.words],
        "text": [w.text for w in alignment.words],
        "label": layout.labels,
        "gap": layout.gaps,
        "peaks": {"seconds": audio_seconds / len(low), "min": low, "max": high},
    }


_SCRIPT_UNSAFE = re.compile("[<>&\u2028\u2029]")


def script_json(value: Any) -> str:
    """``value`` as JSON that is safe inside ``<script>``: ``<``, ``>``, ``&`` and the JavaScript
    line separators are ``\\u`` escapes, so no transcript can close the element or open a comment.
    """
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return _SCRIPT_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _asset(name: str) -> str:
    return resources.files(__package__).joinpath("assets", name).read_text(encoding="utf-8")


def html_report(alignment: Alignment, samples: Any, sample_rate: int, title: str = "") -> str:
    """A self-contained HTML page to see and hear ``alignment`` against its audio.

    ``samples`` is the waveform the alignment was made from (any shape :func:`load_audio
    <qwen3_aligner_client.audio.load_audio>` returns or accepts as an array: mono, or channels
    that are mixed down), at ``sample_rate`` Hz; ``title`` names the recording (default: its
    language and length). The page works offline and makes no network request; all text is
    escaped. See the module docstring for what it shows.
    """
    if sample_rate <= 0:
        raise ValueError(f"sample rate must be positive, got {sample_rate}")
    data = report_data(alignment, samples, sample_rate, title)
    mp3 = encode_mp3(samples, sample_rate)
    heading = title or f"{alignment.language} alignment"
    lang = LANGUAGE_TAGS.get(alignment.language, "und")
    return "".join(
        [
            "<!DOCTYPE html>\n",
            f'<html lang="{html.escape(lang)}">\n<head>\n<meta charset="utf-8">\n',
            f'<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">\n',
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n',
            '<meta name="generator" content="qwen3-align">\n',
            f"<title>{html.escape(heading)}</title>\n",
            f"<style>\n{_asset('report.css')}</style>\n</head>\n<body>\n",
            _asset("report.html").replace("%%TITLE%%", html.escape(heading)),
            f'<script type="application/json" id="report-data">{script_json(data)}</script>\n',
            '<script type="text/plain" id="report-audio" data-type="audio/mpeg">',
            base64.b64encode(mp3).decode("ascii"),
            "</script>\n",
            f"<script>\n{_asset('report.js')}</script>\n</body>\n</html>\n",
        ]
    )
