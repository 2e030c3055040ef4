"""Long recordings and cue-guided alignment end to end on the real server (tiny checkpoint)."""

from __future__ import annotations

import concurrent.futures
import json
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from shared_fixtures import upstream_align
from triton_calls import MODEL, build_inputs, forward_passes, parse
from tritonclient.utils import InferenceServerException

from qwen3_aligner_triton.audio import prepare_waveform

pytestmark = pytest.mark.integration

RATE = 8000  # Hz: a 30-minute recording is then 58 MB of float32 on the wire
SENTENCE = "Long recordings are aligned window by window, and every word comes back once."


def recording(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE), dtype=np.float32) / RATE
    wave = 0.3 * (0.5 + 0.5 * np.sin(2 * np.pi * 2.0 * t)) * np.sin(2 * np.pi * 170.0 * t)
    wave[int(600 * RATE) : int(660 * RATE)] = 0.0  # a minute of silence
    return (wave + 0.02 * rng.standard_normal(t.size).astype(np.float32)).astype(np.float32)


def check_document(doc: dict, text: str, duration: float, upstream, language: str) -> None:
    expected, _ = upstream.aligner_processor.encode_timestamp(text, language)
    words = doc["words"]
    assert [w["text"] for w in words] == expected
    starts = np.array([w["start"] for w in words])
    ends = np.array([w["end"] for w in words])
    assert np.all(np.diff(starts) >= 0) and np.all(ends >= starts)
    assert np.all(starts[1:] >= ends[:-1])
    assert starts.min() >= 0.0 and ends.max() <= duration + 1e-6
    assert doc["text"] == text
    assert doc["duration"] == pytest.approx(duration)


def test_thirty_minutes_of_audio_and_shorter_requests_interleaved(server, upstream):
    """Each window reaches the core as a request of its own: two 400 s requests sent while a
    30-minute recording is aligned finish before it, not after it."""
    long_text = " ".join([SENTENCE] * 160)  # ~2,100 words over 30 minutes
    second_text = "这是一段较长的录音，我们一句一句地对齐。" * 40
    before = forward_passes(server.metrics_url)
    finished: dict[str, float] = {}

    def align(name: str, audio: np.ndarray, text: str, language: str) -> dict:
        with httpclient.InferenceServerClient(
            server.http_url, connection_timeout=600, network_timeout=600
        ) as client:
            doc = parse(client.infer(MODEL, build_inputs(httpclient, audio, RATE, text, language)))
        finished[name] = time.monotonic()
        return doc["document"]

    long_audio = recording(1800.0, 1)
    shorter = {seed: recording(400.0, seed) for seed in (2, 3)}
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        first = pool.submit(align, "long", long_audio, long_text, "en")
        time.sleep(2.0)  # the recording is in; its windows are under way
        others = [pool.submit(align, seed, a, second_text, "zh") for seed, a in shorter.items()]
        doc1 = first.result()
        docs = [f.result() for f in others]
    check_document(doc1, long_text, 1800.0, upstream, "English")
    for doc in docs:
        check_document(doc, second_text, 400.0, upstream, "Chinese")
    assert finished[2] < finished["long"] and finished[3] < finished["long"], finished
    after = forward_passes(server.metrics_url)
    assert after[0] - before[0] >= 12 + 2 * 3  # 30 minutes and 2 x 400 s in windows <= 180 s


def test_cue_file_over_grpc(server, upstream):
    cues = [
        {"start": 2.0 + 20.0 * k, "end": 14.0 + 20.0 * k, "text": f"Cue number {k}: {SENTENCE}"}
        for k in range(90)
    ]  # 30 minutes of subtitles
    text = "\n".join(c["text"] for c in cues)
    audio = recording(1800.0, 3)
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        inputs = build_inputs(grpcclient, audio, RATE, "", "English")
        seg = grpcclient.InferInput("SEGMENTS", [1, 1], "BYTES")
        seg.set_data_from_numpy(np.array([[json.dumps(cues).encode()]], dtype=np.object_))
        result = parse(client.infer(MODEL, [*inputs, seg], client_timeout=600))
    doc = result["document"]
    check_document(doc, text, 1800.0, upstream, "English")
    # Each cue is aligned alone on its span plus the 1 s margin (the gaps are 8 s): windows
    # [1 + 20k, 15 + 20k] s. Its words are upstream's on that piece of the 16 kHz audio (the
    # resampling itself is checked against upstream elsewhere), shifted by the piece's start.
    wave = prepare_waveform(audio, RATE)
    expected = []
    for k, cue in enumerate(cues):
        start, end = 1.0 + 20.0 * k, 15.0 + 20.0 * k
        piece = wave[round(start * 16000) : round(end * 16000)]
        for _, s, e in upstream_align(upstream, piece, 16000, cue["text"], "English"):
            expected.append((round(start + s, 3), round(start + e, 3)))
    assert [(w["start"], w["end"]) for w in doc["words"]] == expected


@pytest.mark.parametrize(
    ("segments", "message"),
    [
        ([{"start": 0, "end": 2, "text": "a"}, {"start": 1, "end": 3, "text": "b"}], "overlaps"),
        ([{"start": 100, "end": 102, "text": "a"}], "after the end"),
        ("[{", "not valid JSON"),
    ],
)
def test_malformed_segments_get_invalid_arg(server, segments, message):
    raw = segments if isinstance(segments, str) else json.dumps(segments)
    with httpclient.InferenceServerClient(server.http_url) as client:
        inputs = build_inputs(httpclient, np.zeros(RATE * 10, np.float32), RATE, "", "en")
        seg = httpclient.InferInput("SEGMENTS", [1, 1], "BYTES")
        seg.set_data_from_numpy(np.array([[raw.encode()]], dtype=np.object_))
        with pytest.raises(InferenceServerException) as info:
            client.infer(MODEL, [*inputs, seg])
        assert info.value.status() == "400"
        assert message in info.value.message()
        assert client.is_model_ready(MODEL)
