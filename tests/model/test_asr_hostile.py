"""Requests without TEXT carrying hostile audio: silence, white noise, 20 minutes of one tone, a
clip of 0.1 s. Each gets a bounded answer (upstream's transcript and timestamps, or an empty
transcript without words), generation stays within the bound on new tokens per chunk, and a
server busy with the tone goes on serving other requests.

Most tests run the served front in this process (``InProcessAligner`` with the tiny ASR model);
one runs a real tritonserver.
"""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from qwen3_aligner_tools.asr_checkpoint_builder import ASR_WORDS, expected_transcript
from qwen3_aligner_triton.asr import (
    AsrCall,
    AsrSettings,
    ChunkTranscript,
    load_asr,
    new_token_limit,
    split_chunks,
)
from qwen3_aligner_triton.inprocess import InProcessAligner
from qwen3_aligner_triton.loading import load_aligner
from qwen3_aligner_triton.params import PipelineSettings

SAMPLE_RATE = 16000  # Hz
TONE_SECONDS = 20 * 60.0
TONE_HZ = 440.0
AUDIO_TOKEN_ID = 151676  # <|audio_pad|>
END_TOKEN_ID = 151645  # <|im_end|>: generation stops at it
LEAD_TOKENS = 3  # "language", " English", "<asr_text>" before the words


def silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * SAMPLE_RATE), dtype=np.float32)


def white_noise(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.standard_normal(round(seconds * SAMPLE_RATE)) * 0.3, -1, 1).astype(
        np.float32
    )


def tone(seconds: float) -> np.ndarray:
    t = np.arange(round(seconds * SAMPLE_RATE), dtype=np.float64) / SAMPLE_RATE
    return (0.5 * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32)


# Short hostile clips, compared with upstream; the 20-minute tone (upstream takes minutes on it)
# has tests of its own below.
HOSTILE = {
    "silence": lambda: silence(5.0),
    "white noise": lambda: white_noise(5.0),
    "0.1 s": lambda: white_noise(0.1, seed=1),
    "a tone of 30 s": lambda: tone(30.0),
}


def inputs(wave: np.ndarray, **strings: str) -> dict:
    out = {"AUDIO": wave[None, :]}
    for name, value in strings.items():
        out[name] = np.array([[value.encode()]], dtype=np.object_)
    return out


def answer(outcome) -> tuple[str, str, list[tuple[str, float, float]]]:
    """(transcript, language, units) of a served outcome."""
    assert outcome.error is None, outcome.error
    out = outcome.outputs
    units = list(
        zip(
            [w.decode() for w in out["WORDS"][0]],
            [float(s) for s in out["START_TIMES"][0]],
            [float(e) for e in out["END_TIMES"][0]],
            strict=True,
        )
    )
    document = json.loads(out["ALIGNMENT"][0][0])
    text, language = out["TRANSCRIPT"][0][0].decode(), out["TRANSCRIPT_LANGUAGE"][0][0].decode()
    assert (document["text"], document["language"]) == (text, language)
    return text, language, units


class GenerateCounter:
    """Wraps a model's ``generate``: records each call's ``max_new_tokens`` and the new tokens
    each chunk got (up to its end token)."""

    def __init__(self, model, end_token: int) -> None:
        self.model = model
        self.original = model.generate
        self.end_token = end_token
        self.calls: list[tuple[int, list[int]]] = []
        model.generate = self

    def __call__(self, **kwargs):
        out = self.original(**kwargs)
        new = out.sequences[:, kwargs["input_ids"].shape[1] :]
        counts = []
        for row in new.tolist():
            counts.append(row.index(self.end_token) + 1 if self.end_token in row else len(row))
        self.calls.append((int(kwargs["max_new_tokens"]), counts))
        return out

    def restore(self) -> None:
        self.model.generate = self.original


class Metrics:
    def __init__(self) -> None:
        self.stages: dict[str, int] = {}
        self.rejections: list[str] = []

    def rejected(self, reason: str) -> None:
        self.rejections.append(reason)

    def aligned(self, audio_seconds: float, units: int) -> None:
        pass

    def scored(self, mean_score: float, repaired_share: float) -> None:
        pass

    def stage(self, name: str, seconds: float) -> None:
        self.stages[name] = self.stages.get(name, 0) + 1


@pytest.fixture(scope="module")
def aligner(tiny_checkpoint):
    return load_aligner(str(tiny_checkpoint), "cpu")


@pytest.fixture(scope="module")
def settings(tiny_checkpoint):
    return PipelineSettings.of(checkpoint=str(tiny_checkpoint))


def engine_with(aligner, settings, asr_checkpoint, **asr_settings) -> InProcessAligner:
    runner = load_asr(AsrSettings(checkpoint=str(asr_checkpoint), **asr_settings), "cpu")
    return InProcessAligner(aligner, settings, asr=runner)


@pytest.fixture(scope="module")
def engine(aligner, settings, asr_checkpoint):
    return engine_with(aligner, settings, asr_checkpoint)


@pytest.fixture(scope="module")
def upstream_asr(tiny_checkpoint, asr_checkpoint):
    from qwen_asr import Qwen3ASRModel

    from qwen3_aligner_triton.encoder_attention import set_encoder_attention

    model = Qwen3ASRModel.from_pretrained(str(asr_checkpoint), forced_aligner=str(tiny_checkpoint))
    set_encoder_attention(model.model, "windowed")
    set_encoder_attention(model.forced_aligner.model, "windowed")
    return model


def upstream_answer(model, wave: np.ndarray, context: str = ""):
    (result,) = model.transcribe(
        (wave, SAMPLE_RATE), context=context, language=None, return_time_stamps=True
    )
    items = [] if result.time_stamps is None else result.time_stamps.items
    return (
        result.text,
        result.language,
        [(it.text, float(np.float32(it.start_time)), float(np.float32(it.end_time)))
         for it in items],
    )  # fmt: skip


def audio_tokens(engine: InProcessAligner, wave: np.ndarray) -> int:
    runner = engine.asr
    prompt = runner.prompt("", None)
    ids = runner.processor(text=[prompt], audio=[wave], return_tensors="pt")["input_ids"]
    return int((ids == AUDIO_TOKEN_ID).sum())


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_audio_gets_upstreams_answer_within_the_token_bound(engine, upstream_asr, name):
    wave = HOSTILE[name]()
    counter = GenerateCounter(engine.asr.model, END_TOKEN_ID)
    metrics = Metrics()
    try:
        (outcome,) = engine.serve([inputs(wave)], metrics)
    finally:
        counter.restore()
    text, language, units = answer(outcome)
    assert (text, language, units) == upstream_answer(upstream_asr, wave), name
    chunks = split_chunks(wave)
    # One generate call of all the chunks (<= 32), bounded by the longest chunk's seconds.
    ((bound, counts),) = counter.calls
    longest = max(c.wave.shape[0] for c in chunks) / SAMPLE_RATE
    assert bound == new_token_limit(engine.asr.settings, longest) <= 512
    assert len(counts) == len(chunks) and max(counts) <= bound
    # The tiny model says one word per second of audio: the chunks' transcripts joined.
    said = [expected_transcript(audio_tokens(engine, c.wave)) for c in chunks]
    assert text == "".join(said) and language == "English"
    assert len(units) == sum(len(s.split()) for s in said)
    assert metrics.stages.get("transcribe") == 1 and metrics.rejections == []
    # Each chunk: the lead, its words and the end token.
    assert counts == [LEAD_TOKENS + len(s.split()) + 1 for s in said]


def test_the_asr_model_scores_the_last_position_only(engine):
    """Greedy generation reads the last position's logits; scoring every position of the
    prompt would hold 1.4 GB of logits per 180 s chunk (10 GB for the 20-minute tone's call)."""
    head = engine.asr.model.thinker.lm_head
    seen: list[tuple[int, ...]] = []
    hook = head.register_forward_hook(lambda module, args, out: seen.append(tuple(out.shape)))
    try:
        engine.asr.run(AsrCall((white_noise(30.0), white_noise(12.0)), ("", ""), (None, None)))
    finally:
        hook.remove()
    assert seen and all(shape[:2] == (2, 1) for shape in seen), seen[:2]
    assert engine.asr.model.thinker.lm_head is head


def test_the_bound_on_new_tokens_cuts_each_chunk_of_a_long_tone(aligner, settings, asr_checkpoint):
    tight = engine_with(aligner, settings, asr_checkpoint, max_new_tokens=12)
    counter = GenerateCounter(tight.asr.model, END_TOKEN_ID)
    try:
        (outcome,) = tight.serve([inputs(tone(TONE_SECONDS))])
    finally:
        counter.restore()
    text, language, units = answer(outcome)
    ((bound, counts),) = counter.calls
    assert bound == 12 and counts == [12] * 7  # each chunk would say ~180 words
    nine = " ".join(ASR_WORDS[k % len(ASR_WORDS)] for k in range(12 - LEAD_TOKENS))
    assert text == nine * 7 and language == "English" and len(units) == 9 * 7
    assert [u[0] for u in units[:9]] == nine.split() and units[-1][2] <= TONE_SECONDS


def test_an_empty_transcript_is_answered_without_calling_the_aligner(engine, upstream_asr):
    """A context that already says every word leaves the tiny model nothing to say: upstream
    answers an empty transcript, no language and no timestamps, and aligns nothing."""
    wave = silence(3.0)
    context = " ".join(ASR_WORDS)
    passes: list[int] = []
    (outcome,) = engine.serve([inputs(wave, CONTEXT=context)], on_batch=passes.append)
    assert answer(outcome) == ("", "", []) == upstream_answer(upstream_asr, wave, context)
    assert outcome.outputs["WORDS"].shape == (1, 0) and passes == []


class SetAsr:
    """An ASR model that says ``text`` in ``language`` for every chunk."""

    def __init__(self, language: str, text: str) -> None:
        self.part = ChunkTranscript(language, text)

    def run(self, call: AsrCall) -> list[ChunkTranscript]:
        return [self.part for _ in call.waves]


def test_a_transcript_without_alignable_words_is_kept_without_words(aligner, settings):
    """Upstream's aligner gives no items for a text of symbols alone; the transcript is the
    answer, never a complaint about a TEXT the client did not send."""
    wave = white_noise(2.0)
    assert aligner.align(audio=(wave, SAMPLE_RATE), text="... ♪", language="English")[0].items == []
    engine = InProcessAligner(aligner, settings, asr=SetAsr("English", "... ♪"))
    assert answer(engine.serve([inputs(wave)])[0]) == ("... ♪", "English", [])


def test_more_words_than_the_audio_holds_are_aligned_as_upstream_aligns_them(
    aligner, settings, upstream_asr
):
    """An ASR model may say more words than a short chunk has timestamp slots (one per 80 ms);
    upstream aligns them all, and so does the front (the bound on new tokens bounds them)."""
    wave = white_noise(1.0)
    words = " ".join(f"w{k}" for k in range(27))
    engine = InProcessAligner(aligner, settings, asr=SetAsr("English", words))
    text, language, units = answer(engine.serve([inputs(wave)])[0])
    (items,) = upstream_asr.forced_aligner.align(
        audio=(wave, SAMPLE_RATE), text=words, language="English"
    )
    assert (text, language) == (words, "English") and len(units) == 27
    rounded = [(it.text, round(it.start_time, 3), round(it.end_time, 3)) for it in items]
    assert units == [(w, float(np.float32(s)), float(np.float32(e))) for w, s, e in rounded]


@pytest.mark.integration
def test_a_server_transcribing_20_minutes_of_one_tone_serves_others_meanwhile(
    tmp_path_factory, tiny_checkpoint, asr_checkpoint
):
    import tritonclient.http as httpclient
    from shared_fixtures import launch, serving
    from triton_calls import MODEL, infer_http

    bound = 40  # new tokens per generate call: 37 words per 180 s chunk
    running, opts = launch(
        tmp_path_factory.mktemp("asr-hostile"),
        {"checkpoint": str(tiny_checkpoint)},
        asr={"checkpoint": str(asr_checkpoint), "max_new_tokens": str(bound)},
    )
    with serving(running, opts) as live:
        url = live.http_url
        long = tone(TONE_SECONDS)
        got: dict[str, object] = {}

        def send_tone() -> None:
            with httpclient.InferenceServerClient(url, network_timeout=600.0) as client:
                request = [httpclient.InferInput("AUDIO", [1, long.shape[0]], "FP32")]
                request[0].set_data_from_numpy(long[None, :], binary_data=True)
                try:
                    got["tone"] = client.infer(MODEL, request)
                except Exception as e:
                    got["tone"] = e

        sender = threading.Thread(target=send_tone)
        sender.start()
        try:
            others = [
                infer_http(url, white_noise(2.0, seed=k), SAMPLE_RATE, "one two three", "English")
                for k in range(3)
            ]
            # Answered while the tone is still being transcribed (tens of seconds here).
            served_meanwhile = sender.is_alive()
        finally:
            sender.join(timeout=600)
        assert served_meanwhile
        assert [[u[0] for u in o["units"]] for o in others] == [["one", "two", "three"]] * 3
        result = got["tone"]
        assert not isinstance(result, Exception), result
        words = [w.decode() for w in result.as_numpy("WORDS").reshape(-1)]
        transcript = result.as_numpy("TRANSCRIPT").reshape(-1)[0].decode()
        per_chunk = " ".join(ASR_WORDS[k % len(ASR_WORDS)] for k in range(bound - LEAD_TOKENS))
        assert transcript == per_chunk * 7 and len(words) == 7 * (bound - LEAD_TOKENS)
        assert float(result.as_numpy("END_TIMES").max()) <= TONE_SECONDS
        # Still serving once the tone is done.
        assert infer_http(url, white_noise(1.0), SAMPLE_RATE, "one", "English")["units"]
