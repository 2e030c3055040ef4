"""Pictures of an alignment: waveform and spectrogram with unit boundaries and labels, as PNG.

A recording is cut into rows of :attr:`PlotOptions.seconds_per_row` seconds (30 by default), every
row at the same time scale; :attr:`PlotOptions.rows_per_page` rows (6) make one PNG page, so a
page holds three minutes. :func:`png_pages` returns the pages' bytes; :func:`save_png` writes page
1 to the path given and pages 2, 3, ... beside it as ``STEM-2.png``, ``STEM-3.png`` (see
:func:`page_paths`).

Each row shows the waveform with the units shaded, the units' labels (from their starts, staggered
on three lines so neighbours do not overlap), and a spectrogram up to 8 kHz; unit starts are
vertical lines of :data:`BOUNDARY_COLOR` across both, ends lighter lines of :data:`END_COLOR`.
Units that share their start and end (zero-length or collapsed timestamps) get one label, their
texts joined; units timed after the end of the audio are drawn at its end. Labels in Chinese,
Japanese or Korean need a CJK font (Debian: ``fonts-noto-cjk``); without one the glyphs are left
out, silently.

matplotlib comes with the project's ``report`` extra. Drawing uses its Agg renderer through
:class:`matplotlib.figure.Figure`, never pyplot: no display, no global state.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .audio import to_mono_float32
from .files import write_atomic_bytes
from .results import AlignedWord, Alignment

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

BOUNDARY_COLOR = "#00a0ff"  # unit starts; no colour of the spectrogram's colormap
END_COLOR = "#a8dcff"  # unit ends (where they are not the next unit's start)
WAVE_COLOR = "#4a4a4f"
SHADE_COLORS = ("#e4edf9", "#f6f0dd")  # alternate units on the waveform
SPECTROGRAM_CMAP = "magma"
SPECTROGRAM_FMAX = 8000.0  # Hz shown at most (the model hears 16 kHz audio)
SPECTROGRAM_WINDOW = 0.025  # s per analysis window
SPECTROGRAM_RANGE = 80.0  # dB below the row's loudest bin that still get a colour
LABEL_LEVELS = (0.8, 0.5, 0.2)  # heights of the staggered label lines, in the label band
MAX_LABEL_CHARS = 32  # a merged label of collapsed units is cut here, with an ellipsis
CJK_LANGUAGES = frozenset({"Chinese", "Cantonese", "Japanese"})  # labels joined without spaces

# Row layout, in inches.
WAVE_HEIGHT = 0.9
LABEL_HEIGHT = 0.55
SPECTROGRAM_HEIGHT = 1.2
ROW_GAP = 0.45  # room for the time axis under each row
PAGE_TITLE = 0.45
LEFT, RIGHT = 0.6, 0.15


def require_matplotlib() -> None:
    """Raise ``ModuleNotFoundError`` with the way to install it unless matplotlib is there."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise ModuleNotFoundError(
            "PNG pictures need matplotlib: pip install 'qwen3-aligner-client[report]'",
            name="matplotlib",
        )


@dataclass(frozen=True)
class PlotOptions:
    """Layout of the PNG pages."""

    seconds_per_row: float = 30.0
    rows_per_page: int = 6
    width: int = 1600  # pixels
    dpi: int = 100

    def __post_init__(self) -> None:
        if not (self.seconds_per_row > 0 and math.isfinite(self.seconds_per_row)):
            raise ValueError(f"seconds per row must be positive, got {self.seconds_per_row}")
        if self.rows_per_page < 1:
            raise ValueError(f"rows per page must be at least 1, got {self.rows_per_page}")
        if self.width < 400 or self.dpi < 20:
            raise ValueError(f"pictures need width >= 400 px and dpi >= 20, got {self}")


def page_paths(path: str | os.PathLike[str], pages: int) -> list[Path]:
    """Where :func:`save_png` writes ``pages`` pages: ``path``, then ``STEM-2.SUFFIX``, ..."""
    first = Path(path)
    suffix = first.suffix or ".png"
    return [first] + [first.with_name(f"{first.stem}-{k}{suffix}") for k in range(2, pages + 1)]


def _clock(seconds: float) -> str:
    minutes, rest = divmod(max(seconds, 0.0), 60.0)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours}:{minutes:02d}:{rest:04.1f}" if hours else f"{minutes}:{rest:04.1f}"


_found_cjk_font: list[str] = []  # the name once found; a miss is looked up again next time


def _cjk_font() -> str | None:
    """The name of an installed font with CJK glyphs, registering Noto CJK with matplotlib if the
    font cache predates its installation; ``None`` when there is none.

    A font found is remembered; a miss is not, so a font installed later by this same process
    (``scripts/setup-browser`` run from a test, an operator's ``apt-get``) is seen at the next
    call: matplotlib's font list is loaded once per process and never rescanned by itself."""
    if _found_cjk_font:
        return _found_cjk_font[0]
    from matplotlib import font_manager

    def known() -> str | None:
        names = sorted({f.name for f in font_manager.fontManager.ttflist if "CJK" in f.name})
        sans = [name for name in names if "Sans" in name]
        return (sans or names or [None])[0]

    name = known()
    if name is None:
        registered = {f.fname for f in font_manager.fontManager.ttflist}
        for path in font_manager.findSystemFonts():
            file = Path(path).name
            if "CJK" in file and "Sans" in file and path not in registered:
                try:
                    font_manager.fontManager.addfont(path)
                except (OSError, RuntimeError, ValueError):
                    continue
        name = known()
    if name is not None:
        _found_cjk_font.append(name)
    return name


def _font_family() -> list[str]:
    """DejaVu Sans for Latin, Cyrillic and Greek, with a CJK font as the fallback when present."""
    cjk = _cjk_font()
    return ["DejaVu Sans", cjk] if cjk else ["DejaVu Sans"]


@dataclass(frozen=True)
class _Label:
    """One label in a row: units sharing the same times drawn once."""

    start: float
    end: float
    text: str


def merged_labels(words: Sequence[AlignedWord], language: str) -> list[_Label]:
    """Labels for ``words``: runs of units with identical start and end become one label."""
    joiner = "" if language in CJK_LANGUAGES else " "
    labels: list[_Label] = []
    run: list[AlignedWord] = []

    def flush() -> None:
        if run:
            text = joiner.join(w.label for w in run)
            if len(text) > MAX_LABEL_CHARS:
                text = text[: MAX_LABEL_CHARS - 1] + "\u2026"
            labels.append(_Label(run[0].start, run[0].end, text))
            run.clear()

    for word in words:
        if run and (word.start, word.end) != (run[0].start, run[0].end):
            flush()
        run.append(word)
    flush()
    return labels


def clamp_to(words: Sequence[AlignedWord], seconds: float) -> tuple[AlignedWord, ...]:
    """``words`` with start and end no later than ``seconds`` (the end of the recording)."""
    return tuple(
        replace(w, start=min(w.start, seconds), end=min(w.end, seconds))
        if max(w.start, w.end) > seconds
        else w
        for w in words
    )


def spectrogram(segment: np.ndarray, rate: int, columns: int) -> tuple[np.ndarray, float]:
    """Power in dB, ``(frequency bins, columns or fewer)``, of ``segment``; and its top frequency.

    Hann windows of 25 ms, hops chosen so that about ``columns`` frames cover the segment.
    """
    n_fft = max(64, 1 << math.ceil(math.log2(max(rate * SPECTROGRAM_WINDOW, 2))))
    hop = max(1, math.ceil(segment.size / max(columns, 1)))
    padded = np.pad(segment.astype(np.float32), (n_fft // 2, n_fft // 2))
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop]
    power = np.abs(np.fft.rfft(frames * np.hanning(n_fft).astype(np.float32), axis=1)) ** 2
    fmax = min(rate / 2, SPECTROGRAM_FMAX)
    bins = round(fmax / (rate / n_fft)) + 1
    db = 10.0 * np.log10(power[:, :bins].T + 1e-12)
    return db, fmax


def _wave_envelope(segment: np.ndarray, columns: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions (0..1 of the segment) and the lowest and highest sample of ``columns`` slices."""
    count = max(1, min(columns, segment.size))
    edges = np.linspace(0, segment.size, count + 1).astype(np.int64)
    low = np.minimum.reduceat(segment, edges[:-1])
    high = np.maximum.reduceat(segment, edges[:-1])
    return edges[:-1] / max(segment.size, 1), low, high


@dataclass(frozen=True)
class _Scene:
    """What every row of every page draws from."""

    alignment: Alignment
    words: tuple[AlignedWord, ...]  # the alignment's, times clamped to the recording's end
    wave: np.ndarray  # mono float32
    rate: int  # Hz
    options: PlotOptions
    gain: float  # waveform scale: the loudest sample reaches 1
    title: str


def _draw_row(
    fig: Figure,
    boxes: tuple[list[float], list[float], list[float]],
    scene: _Scene,
    row_start: float,
) -> None:
    """One row: waveform, label band and spectrogram for ``[row_start, row_start + row)``."""
    options, wave, rate, gain = scene.options, scene.wave, scene.rate, scene.gain
    words = scene.words
    row_end = row_start + options.seconds_per_row
    ax_wave: Axes = fig.add_axes(boxes[0])
    ax_text: Axes = fig.add_axes(boxes[1], sharex=ax_wave)
    ax_spec: Axes = fig.add_axes(boxes[2], sharex=ax_wave)
    ax_wave.set_xlim(row_start, row_end)
    columns = int(options.width * (1 - (LEFT + RIGHT) / (options.width / options.dpi)))

    first = min(int(row_start * rate), wave.size)
    last = min(int(row_end * rate), wave.size)
    segment = wave[first:last]
    inside = [w for w in words if w.start < row_end and max(w.end, w.start) >= row_start]

    spans = [(w.start, max(w.end - w.start, 0.0)) for w in inside]
    for parity, color in enumerate(SHADE_COLORS):
        chosen = spans[parity::2]
        if chosen:
            ax_wave.broken_barh(chosen, (-1.05, 2.1), facecolors=color, edgecolors="none")
    if segment.size:
        where, low, high = _wave_envelope(segment, columns)
        times = row_start + where * (segment.size / rate)
        ax_wave.fill_between(
            times, low * gain, high * gain, color=WAVE_COLOR, linewidth=0.6, step="post"
        )
        db, fmax = spectrogram(segment, rate, columns)
        top = float(db.max())
        ax_spec.imshow(
            db,
            origin="lower",
            aspect="auto",
            cmap=SPECTROGRAM_CMAP,
            vmin=top - SPECTROGRAM_RANGE,
            vmax=top,
            extent=(row_start, row_start + segment.size / rate, 0.0, fmax / 1000),
            interpolation="nearest",
        )
        ax_spec.set_ylim(0, fmax / 1000)
    ax_wave.set_ylim(-1.05, 1.05)
    ax_wave.set_yticks([])
    ax_spec.set_ylabel("kHz", fontsize=8)
    ax_spec.tick_params(labelsize=8)
    ax_text.set_ylim(0, 1)
    ax_text.set_yticks([])
    ax_text.set_facecolor("#fbfbfd")
    for ax in (ax_wave, ax_text):
        ax.tick_params(labelbottom=False, bottom=False)
    tick_step = 5 if options.seconds_per_row > 20 else 1  # seconds
    ticks = np.arange(math.ceil(row_start), math.floor(row_end) + 1, tick_step)
    ax_spec.set_xticks(ticks)
    ax_spec.set_xticklabels([_clock(t) for t in ticks])
    ax_spec.set_xlim(row_start, row_end)

    pixel = 72 / options.dpi  # points: lines one pixel wide
    starts = {w.start for w in inside if row_start <= w.start <= row_end}
    ends = {w.end for w in inside if row_start <= w.end <= row_end} - starts
    for ax, (low, high) in ((ax_wave, (-1.05, 1.05)), (ax_spec, ax_spec.get_ylim())):
        for times, color in ((ends, END_COLOR), (starts, BOUNDARY_COLOR)):
            ax.vlines(sorted(times), low, high, colors=color, lw=pixel, antialiased=False)
    for level, label in enumerate(merged_labels(inside, scene.alignment.language)):
        ax_text.text(
            max(label.start, row_start) + 0.0005 * options.seconds_per_row,
            LABEL_LEVELS[level % len(LABEL_LEVELS)],
            label.text,
            ha="left",
            va="center",
            fontsize=8.5,
            clip_on=True,
            parse_math=False,
        )


def _page(scene: _Scene, first_row: int, rows: int) -> bytes:
    """One PNG page of ``rows`` rows, starting with row ``first_row`` of the recording."""
    from matplotlib.figure import Figure

    options = scene.options

    row_height = WAVE_HEIGHT + LABEL_HEIGHT + SPECTROGRAM_HEIGHT + ROW_GAP
    width = options.width / options.dpi
    height = PAGE_TITLE + rows * row_height
    fig = Figure(figsize=(width, height), dpi=options.dpi, facecolor="white")
    page_start = first_row * options.seconds_per_row
    page_end = (first_row + rows) * options.seconds_per_row
    fig.text(
        LEFT / width,
        1 - 0.3 / height,
        f"{scene.title}   {_clock(page_start)} \u2013 {_clock(page_end)}",
        fontsize=11,
        va="center",
        parse_math=False,
    )
    for r in range(rows):
        top = PAGE_TITLE + r * row_height  # inches from the page's top

        def box(offset: float, h: float, top: float = top) -> list[float]:
            """[left, bottom, width, height] in figure fractions, ``offset`` inches into the row."""
            bottom = 1 - (top + offset + h) / height
            return [LEFT / width, bottom, 1 - (LEFT + RIGHT) / width, h / height]

        boxes = (
            box(0.0, WAVE_HEIGHT),
            box(WAVE_HEIGHT, LABEL_HEIGHT),
            box(WAVE_HEIGHT + LABEL_HEIGHT, SPECTROGRAM_HEIGHT),
        )
        row_start = (first_row + r) * options.seconds_per_row
        _draw_row(fig, boxes, scene, row_start)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=options.dpi, metadata={"Software": "qwen3-align"})
    return buffer.getvalue()


def png_pages(
    alignment: Alignment,
    samples: Any,
    sample_rate: int,
    options: PlotOptions | None = None,
    title: str = "",
) -> list[bytes]:
    """PNG pages picturing ``alignment`` over its audio (see the module docstring).

    ``samples`` (mono, or channels mixed down) at ``sample_rate`` Hz is the audio the alignment
    was made from; ``title`` heads every page. The rows cover the audio (or the alignment's
    ``duration`` if longer); units timed after its end are drawn at the end, and the title says
    how many. The waveform is scaled so its loudest sample fills the row.
    """
    options = options or PlotOptions()
    if sample_rate <= 0:
        raise ValueError(f"sample rate must be positive, got {sample_rate}")
    require_matplotlib()
    from matplotlib import rc_context

    wave = to_mono_float32(samples)
    seconds = max(wave.size / sample_rate, alignment.duration, 1e-3)
    words = clamp_to(alignment.words, seconds)
    beyond = sum(1 for old, new in zip(alignment.words, words, strict=True) if old != new)
    heading = title or f"{alignment.language} alignment"
    if beyond:
        heading += f"  ({beyond} units timed after the end of the audio are drawn at its end)"
    total_rows = max(1, math.ceil(seconds / options.seconds_per_row - 1e-9))
    peak = float(np.max(np.abs(wave))) if wave.size else 0.0
    gain = 1.0 / peak if peak > 0 else 1.0
    scene = _Scene(
        alignment=alignment,
        words=words,
        wave=wave,
        rate=sample_rate,
        options=options,
        gain=gain,
        title=heading,
    )
    pages: list[bytes] = []
    style = {"font.family": _font_family(), "axes.linewidth": 0.6}
    with rc_context(style), warnings.catch_warnings():
        if _cjk_font() is None:  # matplotlib would warn once per CJK glyph: leave them out quietly
            warnings.filterwarnings("ignore", "Glyph .* missing from", category=UserWarning)
        for first_row in range(0, total_rows, options.rows_per_page):
            rows = min(options.rows_per_page, total_rows - first_row)
            pages.append(_page(scene, first_row, rows))
    return pages


def save_png(
    path: str | os.PathLike[str],
    alignment: Alignment,
    samples: Any,
    sample_rate: int,
    options: PlotOptions | None = None,
    title: str = "",
) -> list[Path]:
    """Write the pages of :func:`png_pages` to :func:`page_paths` of ``path``; returns the paths.

    Every file is written atomically, page 1 last: when ``path`` exists, so do all its pages
    (batch mode's resume relies on that).
    """
    pages = png_pages(alignment, samples, sample_rate, options, title)
    paths = page_paths(path, len(pages))
    for target, data in reversed(list(zip(paths, pages, strict=True))):
        write_atomic_bytes(target, data)
    return paths
