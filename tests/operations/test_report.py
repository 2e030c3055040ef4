"""The HTML report and PNG pictures without a browser: what the files hold and how they look.

The page's behaviour in a real browser is tested in ``test_report_browser.py``.
"""

from __future__ import annotations

import base64
import html.parser
import io
import json
import math
import re
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile
from client_samples import CHINESE, LONG_ENGLISH, make_alignment
from matplotlib.image import imread
from qwen3_aligner_client import AlignedWord, Alignment, WriteOptions, render
from qwen3_aligner_client.cli import EXIT_USAGE, main
from qwen3_aligner_client.plot import (
    BOUNDARY_COLOR,
    PlotOptions,
    _cjk_font,
    merged_labels,
    page_paths,
    png_pages,
    save_png,
)
from qwen3_aligner_client.report import (
    PEAKS_PER_SECOND,
    html_report,
    report_rate,
    script_json,
    text_layout,
    waveform_peaks,
)
from qwen3_aligner_client.writers import save

RATE = 16000  # Hz


def tone(seconds: float, rate: int = RATE, level: float = 0.3) -> np.ndarray:
    """A 220 Hz tone with a syllable-rate envelope: visible in waveform and spectrogram."""
    t = np.arange(int(seconds * rate)) / rate
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t)
    return (level * envelope * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


class PageParts(html.parser.HTMLParser):
    """The elements of a page that could reach the network or run code."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.urls: list[str] = []
        self.scripts: list[dict[str, str | None]] = []
        self.script_text: dict[str, str] = {}
        self._open: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        named = dict(attrs)
        for key in ("src", "href", "action", "poster", "data"):
            if named.get(key):
                self.urls.append(str(named[key]))
        if tag == "script":
            self.scripts.append(named)
            self._open = named.get("id") or f"inline{len(self.scripts)}"
            self.script_text[self._open] = ""

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self.script_text[self._open] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._open = None


def parse_page(page: str) -> PageParts:
    parts = PageParts()
    parts.feed(page)
    return parts


def test_report_is_one_offline_file_with_the_audio_inside():
    alignment = make_alignment(LONG_ENGLISH)
    wave = tone(alignment.duration, 44100)
    page = html_report(alignment, wave, 44100, title="speech")
    parts = parse_page(page)
    assert parts.urls == []  # no src/href at all: nothing to fetch
    assert not re.search(r"\b(https?|wss?|ftp)://", page, re.I)
    style = page[page.index("<style>") : page.index("</style>")]
    assert not re.search(r"url\(|@import|@font-face", style, re.I)  # no fonts or images to fetch
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert "img" not in parts.tags and "link" not in parts.tags and "iframe" not in parts.tags
    assert [s.get("id") for s in parts.scripts] == ["report-data", "report-audio", None]

    mp3 = base64.b64decode(parts.script_text["report-audio"])
    decoded, rate = soundfile.read(io.BytesIO(mp3))
    assert rate == 16000  # 44.1 kHz source, embedded at the model's rate
    assert abs(len(decoded) / rate - len(wave) / 44100) < 0.01
    bitrate = len(mp3) * 8 / alignment.duration
    assert bitrate < 48_000, f"{bitrate:.0f} bit/s: not a modest bitrate"

    data = json.loads(parts.script_text["report-data"])
    assert data["label"] == [w.display for w in alignment.words]
    assert data["start"] == [round(w.start * 1000) for w in alignment.words]
    assert data["end"] == [round(w.end * 1000) for w in alignment.words]
    peaks = math.ceil(len(wave) / 44100 * PEAKS_PER_SECOND)  # 10 ms each: short recording
    assert len(data["peaks"]["min"]) == len(data["peaks"]["max"]) == peaks
    assert max(data["peaks"]["max"]) == 127


def test_embedded_audio_keeps_its_timing():
    """A click at 1.000 s is still at 1.000 s after MP3 encoding (the LAME header's delay)."""
    wave = np.zeros(3 * RATE, dtype=np.float32)
    wave[RATE] = 0.9
    page = html_report(make_alignment("click"), wave, RATE)
    mp3 = base64.b64decode(parse_page(page).script_text["report-audio"])
    decoded, rate = soundfile.read(io.BytesIO(mp3))
    assert abs(int(np.argmax(np.abs(decoded))) - RATE) <= 0.002 * rate


@pytest.mark.parametrize(
    ("rate", "embedded"),
    [(48000, 16000), (16000, 16000), (12000, 12000), (11025, 11025), (8000, 8000), (1000, 8000)],
)
def test_audio_is_embedded_at_an_mp3_rate_not_above_16k(rate, embedded):
    assert report_rate(rate) == embedded


def test_hostile_transcripts_stay_text():
    text = (
        'Hi </script><script>window.pwned=1</script> <img src=x onerror="pwned=2"> '
        "<!-- a & b --> \u2028 end"
    )
    alignment = make_alignment(text)
    page = html_report(alignment, tone(alignment.duration), RATE, title="<b>title</b> & more")
    parts = parse_page(page)
    assert parts.tags.count("script") == 3
    assert "img" not in parts.tags and "b" not in parts.tags
    assert "&lt;b&gt;title&lt;/b&gt; &amp; more" in page
    data = json.loads(parts.script_text["report-data"])
    assert (
        "".join(g + lab for g, lab in zip(data["gap"], data["label"], strict=False))
        + data["gap"][-1]
        == text
    )
    assert "<" not in parts.script_text["report-data"]
    assert json.loads(script_json("</script>\u2028")) == "</script>\u2028"


@pytest.mark.parametrize(("text", "language"), [(LONG_ENGLISH, "English"), (CHINESE, "Chinese")])
def test_text_layout_rebuilds_the_transcript_with_its_punctuation(text, language):
    layout = text_layout(make_alignment(text, language=language))
    assert len(layout.gaps) == len(layout.labels) + 1
    rebuilt = "".join(g + lab for g, lab in zip(layout.gaps, layout.labels, strict=False))
    assert rebuilt + layout.gaps[-1] == text
    if language == "English":
        assert "Hello," in layout.labels and "fox;" in layout.labels


def test_text_layout_without_spans_and_with_overlapping_spans():
    plain = make_alignment("Hello, world!", spans=False)
    layout = text_layout(plain)
    assert layout.labels == ["Hello", "world"] and layout.gaps == ["", " ", ""]
    overlapping = Alignment(
        language="Japanese",
        duration=1.0,
        text="東京都",
        words=(
            AlignedWord("東京", 0.0, 0.2, 0, 2, "東京", 0, 2),
            AlignedWord("京都", 0.2, 0.4, 1, 3, "京都", 1, 3),  # shares a character
            AlignedWord("都", 0.4, 0.5, 2, 3, "都", 2, 3),  # nothing left of its own
        ),
    )
    layout = text_layout(overlapping)
    assert layout.labels == ["東京", "都", "都"] and layout.gaps == ["", "", "", ""]


def test_peaks_are_decimated_and_scaled():
    low, high = waveform_peaks(tone(10.0, level=0.01), 500)
    assert len(low) == len(high) == 500
    assert max(high) == 127 and min(low) >= -127  # quiet audio still fills the height
    assert all(lo <= hi for lo, hi in zip(low, high, strict=True))
    assert waveform_peaks(np.zeros(1000, dtype=np.float32), 10) == ([0] * 10, [0] * 10)
    assert waveform_peaks(np.ones(3, dtype=np.float32), 10) == ([127] * 3, [127] * 3)


def test_html_and_png_need_the_audio():
    alignment = make_alignment("hello world")
    with pytest.raises(ValueError, match="html format needs the audio"):
        render(alignment, "html")
    with pytest.raises(ValueError, match="not text"):
        render(alignment, "png", WriteOptions(audio=(tone(1.0), RATE)))
    page = render(alignment, "html", WriteOptions(audio=(tone(1.0), RATE), recording="clip"))
    assert "<title>clip</title>" in page


def test_png_without_an_output_file_is_a_usage_error(tmp_path, capsys):
    argv = [str(tmp_path / "a.wav"), str(tmp_path / "a.txt"), "-l", "en", "-f", "png"]
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == EXIT_USAGE
    assert "give -o FILE.png" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--rows-per-page", "0"], "rows per page must be at least 1"),
        (["--seconds-per-row", "0"], "seconds per row must be positive"),
    ],
)
def test_png_layout_options_are_checked(tmp_path, capsys, option, message):
    argv = [str(tmp_path / "a.wav"), str(tmp_path / "a.txt"), "-l", "en", "-o", "a.png", *option]
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == EXIT_USAGE
    assert message in capsys.readouterr().err


def rgb(color: str) -> np.ndarray:
    return np.array([int(color[i : i + 2], 16) for i in (1, 3, 5)])


def boundary_pixels(image: np.ndarray) -> int:
    """Pixels of exactly the boundary colour (lines are drawn without antialiasing)."""
    pixels = np.round(image[..., :3] * 255).astype(int)
    return int(np.all(pixels == rgb(BOUNDARY_COLOR), axis=-1).sum())


def test_png_pages_rows_and_boundaries(tmp_path):
    seconds = 70.0
    times = [(0.5 + 2.0 * k, 1.5 + 2.0 * k) for k in range(34)]  # one unit every 2 s
    alignment = make_alignment(" ".join(f"word{k}" for k in range(34)), times, duration=seconds)
    options = PlotOptions(seconds_per_row=30.0, rows_per_page=2)
    paths = save_png(tmp_path / "clip.png", alignment, tone(seconds), RATE, options, "clip")
    assert paths == [tmp_path / "clip.png", tmp_path / "clip-2.png"]  # 3 rows, 2 per page
    assert page_paths(tmp_path / "x.png", 3)[2] == tmp_path / "x-3.png"
    first, second = (imread(p) for p in paths)
    assert first.shape[1] == second.shape[1] == 1600
    assert first.shape[0] > 1.8 * second.shape[0]  # two rows, then one
    for image in (first, second):
        distinct = np.unique(np.round(image[..., :3] * 255).astype(int).reshape(-1, 3), axis=0)
        assert len(distinct) > 50  # waveform, spectrogram, labels: not blank
    one = make_alignment("word0", [(0.5, 1.5)], duration=seconds)
    line = boundary_pixels(imread(io.BytesIO(png_pages(one, tone(seconds), RATE, options)[0])))
    assert line > 150  # one start: a 1-pixel line across the waveform and the spectrogram
    # 30 starts on page 1 (0.5 s ... 58.5 s), 4 on page 2 (60.5 s ... 66.5 s)
    assert boundary_pixels(first) == 30 * line
    assert boundary_pixels(second) == 4 * line


def test_png_handles_zero_length_and_collapsed_units():
    text = "Hello, world! This is $x$ and 50% of $5."
    n = len(make_alignment(text).words)
    collapsed = make_alignment(text, [(1.2, 1.2)] * n, duration=3.0)
    labels = merged_labels(collapsed.words, "English")
    assert (
        len(labels) == 1
        and labels[0].text.startswith("Hello, world! This")
        and len(labels[0].text) <= 32
    )
    pages = png_pages(collapsed, tone(3.0), RATE)  # "$...$" must not be read as mathtext
    one = make_alignment("Hello", [(1.2, 1.2)], duration=3.0)
    line = boundary_pixels(imread(io.BytesIO(png_pages(one, tone(3.0), RATE)[0])))
    assert boundary_pixels(imread(io.BytesIO(pages[0]))) == line > 0  # all units at one instant
    silent = png_pages(collapsed, np.zeros(3 * RATE, dtype=np.float32), RATE)
    assert len(silent) == 1


def test_png_draws_units_after_the_end_of_the_audio_at_its_end():
    times = [(0.5, 1.0), (151.2, 151.2), (251.6, 368.2)]  # as the tiny random checkpoint does
    alignment = make_alignment("one two three", times, duration=6.0)
    pages = png_pages(alignment, tone(6.0), RATE)
    assert len(pages) == 1  # 6 s of audio: one row, not 13
    one = make_alignment("one two", [(0.5, 1.0), (6.0, 6.0)], duration=6.0)
    expected = boundary_pixels(imread(io.BytesIO(png_pages(one, tone(6.0), RATE)[0])))
    assert boundary_pixels(imread(io.BytesIO(pages[0]))) == expected  # at 0.5 s and at 6 s


def test_png_cjk_labels_have_glyphs():
    alignment = make_alignment(CHINESE, language="Chinese")
    if _cjk_font() is None:  # scripts/setup-browser installs fonts-noto-cjk too
        setup = Path(__file__).resolve().parents[2] / "scripts" / "setup-browser"
        done = subprocess.run([str(setup)], capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            pytest.fail(f"scripts/setup-browser failed:\n{done.stdout}\n{done.stderr}")
        assert _cjk_font() is not None, "scripts/setup-browser installed no CJK font"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        png_pages(alignment, tone(alignment.duration), RATE)
    assert not [w for w in caught if "missing from" in str(w.message)]


def test_a_cjk_font_installed_after_a_first_look_is_found(monkeypatch):
    """A miss is not remembered: a font installed later by the same process (scripts/setup-browser
    run from a test) is registered with matplotlib and found at the next call."""
    from matplotlib import font_manager
    from qwen3_aligner_client import plot

    installed: list[str] = []
    monkeypatch.setattr(plot, "_found_cjk_font", [])
    monkeypatch.setattr(
        font_manager.fontManager,
        "ttflist",
        [f for f in font_manager.fontManager.ttflist if "CJK" not in f.name],
    )
    monkeypatch.setattr(font_manager, "findSystemFonts", lambda *a, **k: list(installed))

    def addfont(path):
        entry = font_manager.FontEntry(fname=path, name="Noto Sans CJK JP")
        font_manager.fontManager.ttflist.append(entry)

    monkeypatch.setattr(font_manager.fontManager, "addfont", addfont)
    assert plot._cjk_font() is None
    installed.append("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")
    assert plot._cjk_font() == "Noto Sans CJK JP"
    installed.clear()
    assert plot._cjk_font() == "Noto Sans CJK JP"  # a font found is remembered


def test_save_writes_every_format(tmp_path):
    alignment = make_alignment(LONG_ENGLISH)
    options = WriteOptions(audio=(tone(alignment.duration), RATE), recording="demo")
    assert save(alignment, "srt", tmp_path / "a.srt", options) == [tmp_path / "a.srt"]
    assert save(alignment, "html", tmp_path / "a.html", options) == [tmp_path / "a.html"]
    assert save(alignment, "png", tmp_path / "a.png", options) == [tmp_path / "a.png"]
    assert (tmp_path / "a.png").read_bytes().startswith(b"\x89PNG")
    assert (tmp_path / "a.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert not list(tmp_path.glob(".*.tmp"))
