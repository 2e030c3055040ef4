"""Long recordings and cue-guided requests through the engine (tiny checkpoint, in-process)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from shared_fixtures import upstream_align

from qwen3_aligner_triton.inprocess import InProcessAligner
from qwen3_aligner_triton.params import PipelineSettings
from qwen3_aligner_triton.preparation import WindowedJob, build_prompt
from qwen3_aligner_triton.requests import AlignRequest, RequestError, decode_request

SETTINGS = PipelineSettings.of(checkpoint="tiny", window_seconds=60.0, max_forward_batch=16)
SENTENCE = "the quick brown fox jumps over the lazy dog, and then it rests."


def speechy(seconds: float, rate: int = 16000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * (0.5 + 0.5 * np.sin(2 * np.pi * 2.5 * t)) * np.sin(2 * np.pi * 200 * t)
    return (wave + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def engine(upstream):
    return InProcessAligner(upstream, SETTINGS)


def check_alignment(result, words_expected, duration, text):
    words = [u.text for u in result.units]
    assert words == words_expected  # every word exactly once, in order
    starts = np.array([u.start for u in result.units])
    ends = np.array([u.end for u in result.units])
    assert np.all(np.diff(starts) >= 0)
    assert np.all(ends >= starts)
    assert np.all(starts[1:] >= ends[:-1])
    assert starts.min() >= 0 and ends.max() <= duration + 1e-6
    doc = json.loads(result.to_json())
    assert doc["text"] == text
    for w in doc["words"]:
        assert w["display"] == text[w["display_start"] : w["display_end"]]


def test_prompt_matches_upstream(upstream):
    words, prompt = upstream.aligner_processor.encode_timestamp("Hello, big world!", "English")
    assert build_prompt(words) == prompt


def test_long_recordings_share_forward_passes(engine, upstream):
    texts = [" ".join([SENTENCE] * 30), "今天天气很好，我们去公园散步吧。" * 20]
    languages = ["English", "Chinese"]
    requests = [
        AlignRequest(speechy(200.0, seed=1), 16000, texts[0], "English"),
        AlignRequest(speechy(150.0, 8000, seed=2), 8000, texts[1], "Chinese"),
    ]
    prepared = [engine.prepare(r) for r in requests]
    assert all(isinstance(p, WindowedJob) for p in prepared)
    sizes: list[int] = []
    results = engine.align(prepared, on_batch=sizes.append)
    assert max(sizes) >= 2, sizes  # first windows of both requests in one forward pass
    for req, lang, result in zip(requests, languages, results, strict=True):
        expected, _ = upstream.aligner_processor.encode_timestamp(req.text, lang)
        check_alignment(result, expected, req.duration, req.text)
    assert prepared[0].plan.windows >= 4


def test_request_within_one_window_is_unchanged(engine):
    req = AlignRequest(speechy(59.0), 16000, SENTENCE, "English")
    assert not isinstance(engine.prepare(req), WindowedJob)


def test_cue_guided_alignment(engine, upstream):
    audio = speechy(120.0, seed=3)
    cues = [
        {"start": 1.0, "end": 6.5, "text": "Hello there, world!"},
        {"start": 7.0, "end": 20.0, "text": "This cue has a few more words in it."},
        {"start": 30.0, "end": 31.0, "text": "♪ ♪"},  # nothing to align: skipped
        {"start": 60.0, "end": 119.9, "text": "我们今天去公园。"},
    ]
    req = decode_request(
        audio[None, :],
        None,
        np.array([[b""]], dtype=np.object_),
        np.array([[b"en"]], dtype=np.object_),
        SETTINGS.front,
        np.array([[json.dumps(cues).encode()]], dtype=np.object_),
    )
    sizes: list[int] = []
    (result,) = engine.align([engine.prepare(req)], on_batch=sizes.append)
    text = "\n".join(c["text"] for c in cues)
    expected, _ = upstream.aligner_processor.encode_timestamp(text, "English")
    check_alignment(result, expected, 120.0, text)
    assert sum(sizes) == 3  # one window per cue with words, in shared forward passes
    # Each cue is aligned alone on its span plus the margin (1 s, at most half the gap to the
    # neighbouring cue), windows worked out by hand: its words are upstream's on that piece of
    # audio, shifted by the piece's start.
    windows = [(0.5, 6.75), (6.75, 21.0), (59.0, 119.95)]
    expected_times = []
    for cue, (start, end) in zip((cues[0], cues[1], cues[3]), windows, strict=True):
        piece = audio[round(start * 16000) : round(end * 16000)]
        for _, s, e in upstream_align(upstream, piece, 16000, cue["text"], "English"):
            expected_times.append((round(start + s, 3), round(start + e, 3)))
    assert [(u.start, u.end) for u in result.units] == expected_times


def segments_of(value) -> np.ndarray:
    raw = value if isinstance(value, str) else json.dumps(value)
    return np.array([[raw.encode()]], dtype=np.object_)


@pytest.mark.parametrize(
    ("segments", "message"),
    [
        ("not json", "not valid JSON"),
        ([], "non-empty JSON list"),
        ({"start": 0}, "non-empty JSON list"),
        ([{"start": 0, "end": 1}], 'must be an object with "start", "end" and "text"'),
        ([{"start": "0", "end": 1, "text": "a"}], "must be a number"),
        ([{"start": 2, "end": 1, "text": "a"}], "before end"),
        ([{"start": -1, "end": 1, "text": "a"}], ">= 0"),
        ([{"start": 50, "end": 51, "text": "a"}], "after the end"),
        ([{"start": 0, "end": 2, "text": "a"}, {"start": 1, "end": 3, "text": "b"}], "overlaps"),
        ([{"start": 0, "end": 1e9, "text": "a"}], "per cue"),
        ([{"start": 0, "end": float("nan"), "text": "a"}], "finite"),
    ],
)
def test_malformed_segments_are_rejected(segments, message):
    with pytest.raises(RequestError, match=message) as info:
        decode_request(
            np.zeros((1, 16000 * 10), np.float32),
            None,
            np.array([[b""]], dtype=np.object_),
            np.array([[b"en"]], dtype=np.object_),
            SETTINGS.front,
            segments_of(segments),
        )
    assert info.value.reason == "bad_segments"


def test_text_must_match_the_cues():
    with pytest.raises(RequestError, match="cue texts joined by any whitespace"):
        decode_request(
            np.zeros((1, 16000 * 10), np.float32),
            None,
            np.array([[b"something else"]], dtype=np.object_),
            np.array([[b"en"]], dtype=np.object_),
            SETTINGS.front,
            segments_of([{"start": 0, "end": 2, "text": "a b"}]),
        )


def test_limits_on_words_and_recording_length(engine):
    many = AlignRequest(speechy(200.0), 16000, " ".join(["w"] * 2600), "English")
    with pytest.raises(RequestError, match="holds at most 2500"):
        engine.prepare(many)
    tight = InProcessAligner(
        engine_aligner(engine), PipelineSettings.of(checkpoint="t", max_words=10)
    )
    with pytest.raises(RequestError, match="the limit is 10"):
        tight.prepare(AlignRequest(speechy(5.0), 16000, " ".join(["w"] * 11), "English"))


def engine_aligner(engine):
    class Holder:
        model = engine.model
        processor = engine.preparer.processor
        aligner_processor = engine.preparer.text_processor

    return Holder()


def cue_request(audio, cues, text: str = "", settings: PipelineSettings = SETTINGS, language=b"en"):
    return decode_request(
        audio[None, :],
        None,
        np.array([[text.encode()]], dtype=np.object_),
        np.array([[language]], dtype=np.object_),
        settings.front,
        np.array([[json.dumps(cues).encode()]], dtype=np.object_),
    )


def test_cue_text_joined_by_spaces_is_the_result_text(engine):
    cues = [
        {"start": 1.0, "end": 6.5, "text": "Hello there, world!"},
        {"start": 7.0, "end": 12.0, "text": "This is the second cue."},
    ]
    text = "Hello there, world! This is the second cue."
    (result,) = engine.align([engine.prepare(cue_request(speechy(15.0), cues, text))])
    words = ["Hello", "there", "world", "This", "is", "the", "second", "cue"]
    check_alignment(result, words, 15.0, text)


def test_a_cue_holds_no_more_words_than_its_window(engine):
    cues = [
        {"start": 1.0, "end": 2.0, "text": "fits"},
        {"start": 5.0, "end": 5.5, "text": " ".join(["w"] * 200)},  # 0.5 s + margins: < 40 slots
    ]
    with pytest.raises(RequestError, match=r"SEGMENTS\[1\]\.text has 200 words") as info:
        engine.prepare(cue_request(speechy(10.0), cues))
    assert info.value.reason == "text_exceeds_audio"


def test_max_words_holds_for_all_cues_together(engine):
    free = PipelineSettings.of(checkpoint="t", max_words=10, cue_cost_units=0)
    cues = [{"start": 5.0 * k, "end": 5.0 * k + 4, "text": "one two three four"} for k in range(3)]
    with pytest.raises(RequestError, match=r"up to SEGMENTS\[2\] .*the limit is 10"):
        InProcessAligner(engine_aligner(engine), free).prepare(cue_request(speechy(15.0), cues))
    # Each cue is a forward pass of its own and counts as cue_cost_units more (7 by default).
    charged = PipelineSettings.of(checkpoint="t", max_words=13)
    with pytest.raises(RequestError, match=r"up to SEGMENTS\[1\] \(each cue counts as 7"):
        InProcessAligner(engine_aligner(engine), charged).prepare(cue_request(speechy(15.0), cues))
    one = [{"start": 0.0, "end": 4.0, "text": "one two three four five six"}]
    assert InProcessAligner(engine_aligner(engine), charged).prepare(cue_request(speechy(5.0), one))


def test_long_japanese_text_is_refused_before_the_splitter_runs(engine, monkeypatch):
    import nagisa

    def never(*args, **kwargs):
        raise AssertionError("nagisa ran on a text that cannot fit")

    monkeypatch.setattr(nagisa, "tagging", never)
    one_second = AlignRequest(speechy(1.0), 16000, "あ" * 51, "Japanese")  # 12 slots x 4
    with pytest.raises(RequestError, match="51 characters") as info:
        engine.prepare(one_second)
    assert info.value.reason == "text_too_long"
    expanding = AlignRequest(speechy(1.0), 16000, "㍿" * 13, "Japanese")  # 52 NFKC characters
    with pytest.raises(RequestError, match="52 characters"):
        engine.prepare(expanding)
    cues = [{"start": 0.0, "end": 1.0, "text": "株" * 60}]
    with pytest.raises(RequestError, match=r"SEGMENTS\[0\] has 60 characters"):
        engine.prepare(cue_request(speechy(1.0), cues, language=b"ja"))


def test_a_long_korean_token_is_refused_at_once(engine):
    """soynlp's own splitter took minutes and gigabytes; its prompt would hold 180,000 tokens."""
    request = AlignRequest(speechy(5.0), 16000, "가" * 60000, "Korean")
    with pytest.raises(RequestError, match=r"the limit is 32768 \(max_forward_tokens\)") as info:
        engine.prepare(request)
    assert "its longest word has" in str(info.value)
    shorter = engine.prepare(AlignRequest(speechy(5.0), 16000, "가" * 3000, "Korean"))
    assert "".join(shorter.words) == "가" * 3000
