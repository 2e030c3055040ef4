"""The client and ``qwen3-align`` against a real tritonserver serving the tiny checkpoint.

Every output format the CLI writes is read back by an independent parser and compared with the
alignment the server returns; spans must rebuild the transcript; batch mode must isolate failures
and resume; HTTP and gRPC must agree.
"""

from __future__ import annotations

import csv
import html
import io
import json
import os
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import soundfile
import srt
import webvtt
from praatio import textgrid
from qwen3_aligner_client import (
    AlignerClient,
    AlignItem,
    Alignment,
    RequestRejectedError,
    group_cues,
    render,
)
from qwen3_aligner_client.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main
from qwen3_aligner_client.cues import monotonic_times, tiling_intervals

pytestmark = pytest.mark.integration

TEXTS = {
    "en": 'Hello, world! "Don\'t panic," she said (twice); the e-mail arrived at 9:30 - on time.',
    "zh": "今天天气很好，我们去公园散步吧！“真的吗？”他问。",
    "ja": "今日はいい天気ですね。東京へ行きましょう！「はい」と答えた。",
    "ko": "안녕하세요, 만나서 반갑습니다. 오늘 날씨가 좋네요! (정말로)",
}
SECONDS = 8.0  # long enough for every transcript: the server allows one unit per 80 ms


def speechlike(seconds: float, rate: int, seed: int, channels: int = 1) -> np.ndarray:
    """Noise with a syllable-rate envelope over a tone, like the server tests' cases."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t + rng.uniform(0, 6))
    wave = 0.3 * envelope * np.sin(2 * np.pi * rng.uniform(120, 300) * t)
    wave = wave + 0.05 * rng.standard_normal(n)
    if channels == 2:
        return np.stack([wave, 0.5 * wave], axis=1).astype(np.float32)
    return wave.astype(np.float32)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    """One clip per transcript language, in four containers and at four rates."""
    folder = tmp_path_factory.mktemp("clips")
    specs = {
        "en": ("wav", "PCM_16", 16000, 1),
        "zh": ("flac", "PCM_16", 44100, 2),
        "ja": ("ogg", "VORBIS", 22050, 1),
        "ko": ("mp3", "MPEG_LAYER_III", 24000, 2),
    }
    out = {}
    for seed, (lang, (ext, subtype, rate, channels)) in enumerate(specs.items()):
        path = folder / f"{lang}.{ext}"
        soundfile.write(
            path,
            speechlike(SECONDS, rate, seed, channels),
            rate,
            format=ext.upper(),
            subtype=subtype,
        )
        (folder / f"{lang}.txt").write_text(TEXTS[lang], encoding="utf-8")
        out[lang] = path
    return out


@pytest.fixture(scope="module")
def reference(server, clips) -> dict[str, Alignment]:
    """What the library's ``align`` returns over HTTP for each clip."""
    with AlignerClient(server.http_url, "http") as client:
        return {lang: client.align(path, TEXTS[lang], lang) for lang, path in clips.items()}


def run_cli(*argv: str) -> int:
    return main([str(a) for a in argv])


def millis(seconds: float) -> int:
    return round(seconds * 1000)


@pytest.mark.parametrize("fmt", ["json", "srt", "vtt", "textgrid", "ctm", "tsv"])
def test_every_format_from_the_cli_reads_back_as_the_alignment(
    server, clips, reference, tmp_path, fmt
):
    expected = reference["en"]
    assert expected.has_spans and len(expected.words) >= 10
    out = tmp_path / f"en.{fmt}"
    transcript = clips["en"].with_suffix(".txt")
    code = run_cli(
        clips["en"], transcript, "-l", "en", "-f", fmt, "-o", out, "--url", server.http_url
    )
    assert code == EXIT_OK
    written = out.read_text(encoding="utf-8")
    cues = group_cues(expected)
    if fmt == "json":
        assert Alignment.from_json(written) == expected
    elif fmt == "srt":
        parsed = list(srt.parse(written))
        assert [s.content for s in parsed] == [c.text for c in cues]
        assert [
            (millis(s.start.total_seconds()), millis(s.end.total_seconds())) for s in parsed
        ] == [(millis(c.start), millis(c.end)) for c in cues]
        assert " ".join(s.content.replace("\n", " ") for s in parsed) == TEXTS["en"]
    elif fmt == "vtt":
        parsed = webvtt.from_buffer(io.StringIO(written)).captions
        assert [html.unescape(c.text) for c in parsed] == [c.text for c in cues]
        assert [(c.start_time.in_milliseconds(), c.end_time.in_milliseconds()) for c in parsed] == [
            (millis(c.start), millis(c.end)) for c in cues
        ]
    elif fmt == "textgrid":
        grid = textgrid.openTextgrid(str(out), includeEmptyIntervals=False)
        words = grid.getTier("words").entries
        assert [w.label for w in words] == [w.text for w in expected.words]
        assert [(millis(w.start), millis(w.end)) for w in words] == tiling_intervals(
            monotonic_times(expected.words)
        )
        assert [e.label for e in grid.getTier("cues").entries] == [c.flat_text for c in cues]
    elif fmt == "ctm":
        rows = list(csv.reader(io.StringIO(written), delimiter=" "))
        assert [(r[0], r[1], r[4]) for r in rows] == [("en", "1", w.text) for w in expected.words]
        for row, word in zip(rows, expected.words, strict=True):
            assert float(row[2]) == pytest.approx(word.start, abs=5e-4)
            assert float(row[2]) + float(row[3]) == pytest.approx(word.end, abs=1e-3)
            assert float(row[5]) == pytest.approx(word.score, abs=5e-5)  # confidence column
    else:
        rows = list(csv.DictReader(io.StringIO(written), delimiter="\t"))
        assert [(r["text"], r["display"]) for r in rows] == [
            (w.text, w.display) for w in expected.words
        ]
        assert [(int(r["char_start"]), int(r["char_end"])) for r in rows] == [
            (w.char_start, w.char_end) for w in expected.words
        ]
        assert [float(r["start"]) for r in rows] == pytest.approx(
            [w.start for w in expected.words], abs=5e-4
        )
        assert [float(r["score"]) for r in rows] == pytest.approx(
            [w.score for w in expected.words], abs=5e-5
        )
        assert [r["repaired"] for r in rows] == [str(w.repaired).lower() for w in expected.words]


def word_chars(text: str) -> str:
    """Letters, digits and apostrophes of ``text``, NFKC-folded (how units are spelled)."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return "".join(ch for ch in folded if ch == "'" or unicodedata.category(ch)[0] in "LN")


@pytest.mark.parametrize("lang", list(TEXTS))
def test_spans_rebuild_the_transcript_exactly(reference, lang):
    alignment = reference[lang]
    text = TEXTS[lang]
    assert alignment.text == text
    assert alignment.has_spans
    rebuilt = []
    cursor = 0
    for word in alignment.words:
        assert cursor <= word.display_start <= word.char_start < word.char_end <= word.display_end
        between = text[cursor : word.display_start]
        assert not re.search(r"\w", between), f"letters outside any display: {between!r}"
        rebuilt += [between, word.display]
        assert word.display == text[word.display_start : word.display_end]
        assert word_chars(text[word.char_start : word.char_end]) == word_chars(word.text)
        cursor = word.display_end
    assert not re.search(r"\w", text[cursor:])
    rebuilt.append(text[cursor:])
    assert "".join(rebuilt) == text
    # Every letter and digit of the transcript is inside exactly one unit's display.
    assert word_chars("".join(w.display for w in alignment.words)) == word_chars(text)
    # And subtitle text made from the displays loses nothing but spacing.
    subtitle = "".join(c.flat_text for c in group_cues(alignment))
    assert re.sub(r"\s", "", subtitle) == re.sub(r"\s", "", text.strip())


def test_http_and_grpc_give_identical_results(server, clips, reference, tmp_path):
    outputs = {}
    for protocol, url in (("http", server.http_url), ("grpc", server.grpc_url)):
        out = tmp_path / f"{protocol}.json"
        transcript = clips["ko"].with_suffix(".txt")
        args = [
            clips["ko"],
            transcript,
            "-l",
            "ko",
            "-o",
            out,
            "--url",
            url,
            "--protocol",
            protocol,
        ]
        assert run_cli(*args) == EXIT_OK
        outputs[protocol] = out.read_bytes()
    assert outputs["http"] == outputs["grpc"]
    assert Alignment.from_json(outputs["grpc"]).matches(reference["ko"])

    items = [AlignItem(path, TEXTS[lang], lang, key=lang) for lang, path in clips.items()] * 3
    for protocol, url in (("http", server.http_url), ("grpc", server.grpc_url)):
        with AlignerClient(url, protocol) as client:
            results = list(client.align_many(items, concurrency=6))
        assert sorted(r.index for r in results) == list(range(len(items)))
        for result in results:
            assert result.ok, result.error
            # Timestamps equal; scores within SCORE_TOLERANCE (a shared pass sums in another order).
            assert result.alignment.matches(reference[result.item.key]), result.item.key


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_the_file_and_its_samples_give_the_same_alignment(server, clips, protocol):
    """AUDIO_FILE (decoded by the server) and AUDIO (decoded by the client, sent at the file's
    rate): WAV, FLAC (stereo, 44.1 kHz), OGG Vorbis (22.05 kHz) and MP3 (stereo, 24 kHz)."""
    url = server.http_url if protocol == "http" else server.grpc_url
    with AlignerClient(url, protocol) as client:
        for lang, path in clips.items():
            by_file = client.align(path, TEXTS[lang], lang, send="file")
            by_samples = client.align(path, TEXTS[lang], lang, send="samples")
            assert len(by_file.words) >= 10
            assert by_file.duration == by_samples.duration, path.name
            assert [(w.start, w.end) for w in by_file.words] == [
                (w.start, w.end) for w in by_samples.words
            ], path.name
            assert by_file.matches(by_samples), path.name  # the same, scores within tolerance


def test_a_loud_lossy_file_aligns_as_its_samples_scaled_to_a_peak_of_1(server, tmp_path):
    """An MP3 of audio peaking at 1 decodes to samples beyond 1: the server scales them to a
    peak of 1 as upstream does, and so does the client with the samples it sends."""
    rate = 44100
    t = np.arange(int(SECONDS * rate)) / rate
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t)
    noise = 0.03 * np.random.default_rng(0).standard_normal(t.size)
    wave = np.clip(0.97 * envelope * np.sin(2 * np.pi * 200 * t) + noise, -1.0, 1.0)
    path = tmp_path / "loud.mp3"
    soundfile.write(path, wave.astype(np.float32), rate, format="MP3")
    from qwen3_aligner_client import load_audio

    with soundfile.SoundFile(path) as sound:
        assert np.abs(sound.read(dtype="float32")).max() > 1.0  # what the server decodes
    assert np.abs(load_audio(path)[0]).max() <= 1.0
    text = TEXTS["en"]
    with AlignerClient(server.grpc_url, "grpc") as client:
        by_samples = client.align(path, text, "en", send="samples")
        by_file = client.align(path, text, "en", send="file")
        assert [(w.start, w.end) for w in by_file.words] == [
            (w.start, w.end) for w in by_samples.words
        ]
        assert by_file.matches(by_samples)


def test_the_cli_sends_the_file_or_the_samples_alike(server, clips, tmp_path):
    written = {}
    for send in ("file", "samples", "auto"):
        out = tmp_path / f"{send}.json"
        transcript = clips["ja"].with_suffix(".txt")
        argv = [clips["ja"], transcript, "-l", "ja", "-o", out, "--url", server.http_url]
        assert run_cli(*argv, "--send", send) == EXIT_OK
        written[send] = Alignment.from_json(out.read_text(encoding="utf-8"))
    assert written["file"].matches(written["samples"])
    assert written["auto"].matches(written["file"])


def test_align_many_isolates_a_failing_item(server, clips):
    items = [
        AlignItem(clips["en"], TEXTS["en"], "en"),
        AlignItem(clips["zh"], TEXTS["zh"], "klingon"),
        AlignItem(b"not audio", "hello", "en"),
        AlignItem(clips["ja"], TEXTS["ja"], "ja"),
    ]
    with AlignerClient(server.grpc_url, "grpc") as client:
        results = sorted(client.align_many(items, concurrency=4), key=lambda r: r.index)
    assert [r.ok for r in results] == [True, False, False, True]
    assert isinstance(results[1].error, RequestRejectedError)
    assert "unsupported language 'klingon'" in str(results[1].error)
    assert "cannot decode audio" in str(results[2].error)


def test_check_reports_a_live_server_ready(server, capsys):
    for protocol, url in (("http", server.http_url), ("grpc", server.grpc_url)):
        assert run_cli("--check", "--url", url, "--protocol", protocol) == EXIT_OK
        assert f"ready: server {url} ({protocol})" in capsys.readouterr().out
    with AlignerClient(server.grpc_url, "grpc") as client:
        assert client.ready()


def test_requests_the_server_refuses_exit_2_with_its_message(server, clips, tmp_path, capsys):
    transcript = clips["en"].with_suffix(".txt")
    code = run_cli(clips["en"], transcript, "-l", "xx", "--url", server.http_url)
    assert code == EXIT_USAGE
    assert "unsupported language 'xx'" in capsys.readouterr().err
    short = tmp_path / "short.wav"
    soundfile.write(short, speechlike(0.5, 16000, 9), 16000)
    code = run_cli(short, transcript, "-l", "en", "--url", server.http_url)
    assert code == EXIT_USAGE
    assert "input TEXT has" in capsys.readouterr().err


def write_manifest(path: Path, entries: list[dict]) -> None:
    path.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries), "utf-8")


def test_batch_reports_failures_finishes_the_rest_and_resumes(
    server, clips, reference, tmp_path, capsys
):
    manifest = tmp_path / "batch.jsonl"
    entries = [
        {"audio": str(clips["en"]), "text_file": str(clips["en"].with_suffix(".txt"))},
        {"audio": str(clips["zh"]), "text": TEXTS["zh"], "language": "zh"},
        {"audio": str(clips["ja"]), "text": TEXTS["ja"], "language": "Japanese"},
        {"audio": str(clips["ko"]), "text": TEXTS["ko"], "language": "ko"},
        {"audio": str(clips["en"]), "text": TEXTS["en"], "language": "xx", "id": "bad-language"},
        {"audio": "missing.wav", "text": "hello there", "id": "missing-audio"},
    ]
    write_manifest(manifest, entries)
    out = tmp_path / "out"
    argv = ["--batch", manifest, "--out-dir", out, "-l", "en", "-f", "srt", "-j", "4"]
    argv += ["--manifest-root", "/"]  # the clips live in another temporary folder
    argv += ["--url", server.grpc_url, "--protocol", "grpc"]

    assert run_cli(*argv) == EXIT_FAILED
    err = capsys.readouterr().err
    assert "4 aligned, 0 skipped" in err and "2 failed" in err
    assert re.search(r"FAILED .*batch\.jsonl:5: .*unsupported language 'xx'", err)
    assert re.search(r"FAILED .*batch\.jsonl:6: audio file not found: .*missing\.wav", err)
    assert sorted(p.name for p in out.iterdir()) == ["en.srt", "ja.srt", "ko.srt", "zh.srt"]
    for lang in TEXTS:
        written = (out / f"{lang}.srt").read_text(encoding="utf-8")
        assert written == render(reference[lang], "srt")
        assert [s.content for s in srt.parse(written)] == [
            c.text for c in group_cues(reference[lang])
        ]
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}

    # Second run: the finished items are skipped, the failures fail again.
    assert run_cli(*argv) == EXIT_FAILED
    err = capsys.readouterr().err
    assert "0 aligned, 4 skipped" in err and "2 failed" in err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps

    # Fix the two items: only they are aligned now.
    entries[4]["language"] = "en"
    soundfile.write(tmp_path / "missing.wav", speechlike(2.0, 8000, 5), 8000)
    write_manifest(manifest, entries)
    assert run_cli(*argv) == EXIT_OK
    err = capsys.readouterr().err
    assert "2 aligned, 4 skipped" in err and "0 failed" in err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name in stamps} == stamps
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*stamps, "bad-language.srt", "missing-audio.srt"]
    )


def test_batch_flags_items_below_a_mean_score_or_above_a_repaired_share(
    server, clips, reference, tmp_path, capsys
):
    manifest = tmp_path / "batch.jsonl"
    write_manifest(
        manifest, [{"audio": str(clips[k]), "text": TEXTS[k], "language": k} for k in TEXTS]
    )
    means = {k: reference[k].mean_score for k in TEXTS}
    shares = {k: reference[k].repaired_share for k in TEXTS}
    assert all(m is not None and 0.0 <= m <= 1.0 for m in means.values())
    # A threshold between the items' mean scores: only those below it are flagged.
    ordered = sorted(means.values())
    below = (ordered[1] + ordered[2]) / 2
    assert ordered[1] < below < ordered[2]
    argv = ["--batch", manifest, "-f", "json", "--url", server.http_url, "--manifest-root", "/"]
    # Only the score rule (no share is above 1): the two items below the threshold.
    only_scores = ["--flag-below", below, "--flag-repaired", "1"]
    assert run_cli(*argv, "--out-dir", tmp_path / "a", *only_scores) == EXIT_OK
    err = capsys.readouterr().err
    expected = sorted(k for k in TEXTS if means[k] < below)
    assert len(expected) == 2
    assert f"4 aligned, 0 skipped (output already in {tmp_path / 'a'}), 0 failed, 2 flagged" in err
    flagged = re.findall(r"FLAGGED .*batch\.jsonl:(\d)", err)
    assert sorted(list(TEXTS)[int(n) - 1] for n in flagged) == expected
    # Only the repaired share: every item with any repaired unit.
    argv += ["--out-dir", tmp_path / "b", "--flag-below", "0", "--flag-repaired", "0"]
    assert run_cli(*argv) == EXIT_OK
    err = capsys.readouterr().err
    assert f"{sum(1 for k in TEXTS if shares[k] > 0)} flagged" in err
    # The JSON files carry what the summary was computed from.
    doc = json.loads((tmp_path / "b" / "en.json").read_text(encoding="utf-8"))
    assert doc["mean_score"] == pytest.approx(means["en"], abs=1e-5)
    assert doc["repaired_share"] == pytest.approx(shares["en"], abs=1e-6)


def test_flag_below_needs_batch_and_a_share(clips, capsys):
    with pytest.raises(SystemExit) as stop:
        run_cli(clips["en"], clips["en"].with_suffix(".txt"), "-l", "en", "--flag-below", "0.5")
    assert stop.value.code == EXIT_USAGE
    assert "--flag-below is for --batch" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run_cli("--batch", clips["en"].parent, "--out-dir", "x", "--flag-below", "2")
    assert "--flag-below must be between 0 and 1" in capsys.readouterr().err


def test_batch_over_a_folder_fails_audio_without_a_transcript_on_a_server_without_asr(
    server, clips, tmp_path, capsys
):
    folder = tmp_path / "folder"
    folder.mkdir()
    for lang in ("en", "zh"):
        (folder / clips[lang].name).write_bytes(clips[lang].read_bytes())
        (folder / f"{lang}.txt").write_text(TEXTS[lang], encoding="utf-8")
    (folder / "orphan.wav").write_bytes(clips["en"].read_bytes())
    out = tmp_path / "out"
    code = run_cli(
        "--batch", folder, "--out-dir", out, "-l", "en", "-f", "textgrid", "--url", server.http_url
    )
    assert code == EXIT_FAILED
    err = capsys.readouterr().err
    assert "2 aligned" in err and "1 failed" in err
    # Sent without TEXT, which the server (no ASR model) refuses for that item alone.
    assert re.search(r"FAILED .*orphan\.wav: the server cannot transcribe .*serve --asr", err)
    assert sorted(p.name for p in out.iterdir()) == ["en.TextGrid", "zh.TextGrid"]
    # zh.flac is aligned as English here (the folder's --language): the grid still parses.
    grid = textgrid.openTextgrid(str(out / "zh.TextGrid"), includeEmptyIntervals=False)
    assert "".join(e.label for e in grid.getTier("words").entries) == word_chars(TEXTS["zh"])


def test_console_script_reads_stdin_and_writes_stdout(server, clips, reference):
    script = Path(sys.executable).with_name("qwen3-align")
    assert script.is_file(), "install the project (pip install -e .) to get the console script"
    completed = subprocess.run(
        [str(script), str(clips["ja"]), "-", "-l", "ja", "-f", "tsv", "--url", server.http_url],
        input=TEXTS["ja"].encode("utf-8"),
        capture_output=True,
        timeout=120,
        env={**os.environ, "LC_ALL": "C"},
        check=False,
    )
    assert completed.returncode == 0, completed.stderr.decode()
    rows = list(csv.DictReader(io.StringIO(completed.stdout.decode("utf-8")), delimiter="\t"))
    assert [r["display"] for r in rows] == [w.display for w in reference["ja"].words]
