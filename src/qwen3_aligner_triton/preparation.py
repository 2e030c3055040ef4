"""Preparation: a request in, model inputs out; the model's slots in, the alignment out.

Each request is prepared exactly as upstream prepares a lone request (same processor call, one
clip), so that its result never depends on which other clips share its forward pass: the core
pads only the prepared tensors (prompt ids on the left with the attention mask off, log-mel frames
on the right with their mask off). A recording longer than one window becomes a
:class:`RecordingJob` aligned window by window (``longform``), and a cue-guided request a
:class:`CueJob` whose cues are aligned each in its own window. No model weights are needed
here: the public model's front runs this (``front.AlignerFront``), in the server and in process
(``inprocess``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .audio import MODEL_SAMPLE_RATE, prepare_waveform
from .core import CoreInput, SlotResult, audio_tokens_of_frames, frames_of_samples
from .longform import LongformPlan, LongformSettings, Window, energy_envelope, place
from .params import FrontSettings
from .requests import NO_WORDS, AlignRequest, RequestError
from .results import AlignedUnit, Alignment
from .scores import unit_repaired, unit_scores
from .spans import UnitSpan, locate_units
from .timestamps import repair
from .words import japanese_chars_exceed, split_units, use_linear_splitters

MS_PER_SECOND = 1000.0
AUDIO_PROMPT = "<|audio_start|><|audio_pad|><|audio_end|>"
SLOT_PAIR = "<timestamp><timestamp>"  # a unit's start and end slots
MIN_WINDOW_SAMPLES = 1600  # 0.1 s: pad shorter window pieces (a cue at the very end)


def build_prompt(words: Sequence[str]) -> str:
    """The aligner prompt for ``words``, as upstream's ``encode_timestamp`` builds it."""
    return AUDIO_PROMPT + SLOT_PAIR.join(words) + SLOT_PAIR


WARMUP_TEXT = "warm up the aligner"
WARMUP_SECONDS = 2.0
# On a GPU a new instance's first 30 s clips took 280-385 ms against 67-101 ms once warm (H200,
# bfloat16, after the short warm-up alone, whose frames come from the CPU): the first frames made
# on the device and each new shape meet their kernels for the first time. So a GPU instance also
# warms up at a common length, alone and in a shared pass. (seconds of audio, clips in one pass)
GPU_WARMUP_PASSES = ((30.0, 1), (30.0, 8))
WARMUP_WORDS_PER_SECOND = 2.5  # ordinary speech, so the prompt has a realistic length


def _first(batched: torch.Tensor | None) -> torch.Tensor | None:
    return None if batched is None else batched[0]


def warmup_request(seconds: float) -> AlignRequest:
    """A tone of ``seconds`` with the warm-up words repeated at an ordinary speaking rate."""
    t = np.arange(int(seconds * MODEL_SAMPLE_RATE), dtype=np.float32)
    wave = (0.1 * np.sin(2 * math.pi * 220.0 * t / MODEL_SAMPLE_RATE)).astype(np.float32)
    words = WARMUP_TEXT.split()
    repeats = max(1, round(seconds * WARMUP_WORDS_PER_SECOND / len(words)))
    return AlignRequest(
        audio=wave,
        sample_rate=MODEL_SAMPLE_RATE,
        text=" ".join([WARMUP_TEXT] * repeats),
        language="English",
    )


@dataclass
class PreparedItem:
    """A request turned into model inputs, exactly as upstream builds them for a lone clip."""

    words: list[str]
    input_ids: torch.Tensor  # [tokens], prompt with <|audio_pad|> expanded
    attention_mask: torch.Tensor  # [tokens]
    input_features: torch.Tensor | None  # [mel_bins, frames]; None: the core makes them of wave
    feature_attention_mask: torch.Tensor | None  # [frames]
    language: str
    duration: float  # seconds of submitted audio
    text: str | None  # the submitted transcript; None for a window of a longer request
    wave: np.ndarray | None = None  # float32 16 kHz, when the core makes the frames

    def core_input(self) -> CoreInput:
        """What the forward needs: the prompt ids and the clip's own frames (masks are all on),
        or its waveform when the core makes the frames."""
        if self.input_features is None:
            return CoreInput(input_ids=self.input_ids.numpy(), wave=self.wave)
        return CoreInput(input_ids=self.input_ids.numpy(), features=self.input_features.numpy())


@dataclass
class RecordingJob:
    """A recording longer than one window: aligned window by window, each window chosen once the
    last one's results are in (``plan``)."""

    words: list[str]
    wave: np.ndarray  # 16 kHz
    language: str
    duration: float
    text: str
    plan: LongformPlan
    window: Window | None = None  # the window whose results are awaited


@dataclass
class CueJob:
    """A cue-guided request: every cue with words aligned in its own window, all at once."""

    words: list[str]
    wave: np.ndarray  # 16 kHz
    language: str
    duration: float
    text: str
    cues: list[tuple[Window, list[str]]]
    merged: MergedTimes | None = None  # once the cues' results are in


@dataclass
class MergedTimes:
    """Every word's times in the recording, with the score and repair flag of its window."""

    starts: list[float]
    ends: list[float]
    scores: list[float]
    repaired: list[bool]


WindowedJob = RecordingJob | CueJob  # a request aligned in several model windows


class Preparer:
    """Turns requests into model inputs and model outputs back into alignments (no model needed).

    The public model's front runs it, in the server and in process (``inprocess``).
    """

    def __init__(
        self,
        processor: Any,
        text_processor: Any,
        settings: FrontSettings,
        timestamp_segment_time: float,
        audio_token_id: int,
    ) -> None:
        self.processor = processor
        self.text_processor = text_processor
        use_linear_splitters(self.text_processor)
        self.settings = settings
        self.timestamp_segment_time = float(timestamp_segment_time)
        self.audio_token_id = int(audio_token_id)

    def prepare(self, request: AlignRequest, one_clip: bool = False) -> PreparedItem | WindowedJob:
        """Split the transcript into units and build this request's model inputs.

        Audio within one window is prepared exactly as upstream prepares a lone request; longer
        audio and cue-guided requests become a :class:`WindowedJob`. ``one_clip`` prepares the
        audio as one clip whatever its length and its word count (a transcribed chunk, up to
        185 s, which upstream aligns whole).
        """
        if request.segments is not None:
            return self._prepare_cues(request)
        words = self._split(
            request.text,
            request.language,
            min(self.settings.max_words, self._slots(request.duration)),
            "input TEXT",
        )
        if not words:
            raise RequestError(
                "input TEXT has no alignable words (only punctuation, symbols or spaces)",
                NO_WORDS,
            )
        if len(words) > self.settings.max_words:
            raise RequestError(
                f"input TEXT has {len(words)} words/characters to align; the limit is "
                f"{self.settings.max_words}",
                "text_too_long",
            )
        prompt = build_prompt(words)
        wave = prepare_waveform(request.audio, request.sample_rate)
        if not one_clip and wave.shape[0] > self.settings.window_seconds * MODEL_SAMPLE_RATE:
            return self._prepare_long(request, list(words), wave)
        try:
            inputs = self._model_inputs(prompt, wave)
        except Exception as e:  # the feature extractor rejects degenerate audio
            raise RequestError("input AUDIO cannot be turned into features") from e
        self._check_prompt(int(inputs["input_ids"].shape[-1]), words, "input TEXT")
        audio_slots = int((inputs["input_ids"][0] == self.audio_token_id).sum())
        # A transcribed chunk is aligned whatever its word count, as upstream aligns it: the
        # ASR model's bound on new tokens bounds its words.
        if len(words) > audio_slots and not one_clip:
            raise RequestError(
                f"input TEXT has {len(words)} words/characters to align but "
                f"{request.duration:.2f} s of AUDIO holds at most {audio_slots} "
                f"(one per {self.timestamp_segment_time:g} ms)",
                "text_exceeds_audio",
            )
        return PreparedItem(
            words=list(words),
            input_ids=inputs["input_ids"][0],
            attention_mask=inputs["attention_mask"][0],
            input_features=_first(inputs.get("input_features")),
            feature_attention_mask=_first(inputs.get("feature_attention_mask")),
            language=request.language,
            duration=request.audio.shape[0] / request.sample_rate,
            text=request.text,
            wave=None if "input_features" in inputs else wave,
        )

    def _model_inputs(self, prompt: str, wave: np.ndarray) -> Any:
        """Upstream's processor output for one clip: prompt ids with ``<|audio_pad|>`` expanded,
        and its log-mel frames unless ``features_in_core`` leaves them to the core."""
        if not self.settings.features_in_core:
            return self.processor(text=[prompt], audio=[wave], return_tensors="pt", padding=True)
        # What the processor does, but the spectrogram: the frame count alone sets the number
        # of audio tokens (tests compare both ways for many lengths).
        frames = frames_of_samples(int(wave.shape[0]))
        if wave.shape[0] <= self.processor.feature_extractor.n_fft // 2:
            raise ValueError("audio shorter than half an FFT window")  # as the extractor refuses
        tokens = audio_tokens_of_frames(frames)
        text = self.processor.replace_multimodal_special_tokens([prompt], iter([tokens]))
        return self.processor.tokenizer(
            text, padding=False, padding_side="left", return_tensors="pt"
        )

    def _check_prompt(self, tokens: int, words: Sequence[str], name: str) -> None:
        """Refuse a prompt longer than one forward pass may be (attention grows with its square).

        Ordinary speech stays far below: a 180 s window of dense text makes ~25k tokens. A word of
        thousands of characters (one Korean token of 60,000 syllables is 180,000 tokens) does not.
        """
        limit = self.settings.max_forward_tokens
        if tokens > limit:
            longest = max((len(w) for w in words), default=0)
            raise RequestError(
                f"{name} makes a model prompt of {tokens} tokens; the limit is {limit} "
                f"(max_forward_tokens); its longest word has {longest} characters",
                "text_too_long",
            )

    def _slots(self, seconds: float) -> int:
        """Most units ``seconds`` of audio can hold: one timestamp slot per segment time."""
        return int(seconds * MS_PER_SECOND / self.timestamp_segment_time)

    def _split(self, text: str, language: str, units: int, name: str) -> list[str]:
        """Units of ``text``; a Japanese text far longer than ``units`` is refused unsplit."""
        chars = japanese_chars_exceed(text, language, units, self.settings.japanese_chars_per_unit)
        if chars:
            raise RequestError(
                f"{name} has {chars} characters (NFKC) but at most {units} units can be aligned "
                f"(max_words, or one per {self.timestamp_segment_time:g} ms of audio); Japanese "
                f"text is limited to {self.settings.japanese_chars_per_unit:g} characters per "
                "unit",
                "text_too_long",
            )
        return split_units(self.text_processor, text, language)

    def _prepare_long(self, request: AlignRequest, words: list[str], wave: np.ndarray):
        slots = self._slots(request.duration)
        if len(words) > slots:
            raise RequestError(
                f"input TEXT has {len(words)} words/characters to align but "
                f"{request.duration:.2f} s of AUDIO holds at most {slots} "
                f"(one per {self.timestamp_segment_time:g} ms)",
                "text_exceeds_audio",
            )
        duration = wave.shape[0] / MODEL_SAMPLE_RATE
        plan = LongformPlan(
            duration,
            len(words),
            energy_envelope(wave, MODEL_SAMPLE_RATE),
            LongformSettings(
                window=self.settings.window_seconds,
                max_units_per_second=MS_PER_SECOND / self.timestamp_segment_time,
            ),
        )
        return RecordingJob(words, wave, request.language, request.duration, request.text, plan)

    def _prepare_cues(self, request: AlignRequest) -> CueJob:
        wave = prepare_waveform(request.audio, request.sample_rate)
        duration = wave.shape[0] / MODEL_SAMPLE_RATE
        segments = request.segments or ()
        cues: list[tuple[Window, list[str]]] = []
        all_words: list[str] = []
        margin = self.settings.segment_margin_seconds
        for k, seg in enumerate(segments):
            before = segments[k - 1].end if k > 0 else 0.0
            after = segments[k + 1].start if k + 1 < len(segments) else duration
            start = max(0.0, seg.start - min(margin, (seg.start - before) / 2))
            end = min(duration, seg.end + min(margin, (after - seg.end) / 2))
            # A cue is aligned within its window: its words must fit the window's slots, and
            # all cues together within max_words (checked as they come, so work stops early).
            slots = max(1, self._slots(end - start))
            charged = len(all_words) + self.settings.cue_cost_units * (len(cues) + 1)
            budget = self.settings.max_words - charged
            words = self._split(
                seg.text, request.language, min(slots, max(budget, 0)), f"SEGMENTS[{k}]"
            )
            if not words:
                continue
            if len(words) > slots:
                raise RequestError(
                    f"input SEGMENTS[{k}].text has {len(words)} words/characters to align but "
                    f"its {end - start:.2f} s window ({seg.start:g}-{seg.end:g} s plus margin) "
                    f"holds at most {slots} (one per {self.timestamp_segment_time:g} ms)",
                    "text_exceeds_audio",
                )
            if len(words) > budget:
                raise RequestError(
                    f"input SEGMENTS has more than {self.settings.max_words} units to align in "
                    f"its cues up to SEGMENTS[{k}] (each cue counts as "
                    f"{self.settings.cue_cost_units} besides its words/characters: "
                    f"cue_cost_units); the limit is {self.settings.max_words} for all cues "
                    "together (max_words)",
                    "text_too_long",
                )
            cues.append((Window(start, end, len(all_words), len(words), True), list(words)))
            all_words.extend(words)
        if not all_words:
            raise RequestError("input SEGMENTS has no alignable words", NO_WORDS)
        return CueJob(all_words, wave, request.language, request.duration, request.text, cues)

    def window_item(self, job: WindowedJob, window: Window, words: list[str]) -> PreparedItem:
        """Model inputs for ``words`` in ``window`` of a windowed job (prompt as upstream's)."""
        first = round(window.start * MODEL_SAMPLE_RATE)
        last = round(window.end * MODEL_SAMPLE_RATE)
        piece = job.wave[first:last]
        if piece.shape[0] < MIN_WINDOW_SAMPLES:
            piece = np.pad(piece, (0, MIN_WINDOW_SAMPLES - piece.shape[0]))
        inputs = self._model_inputs(build_prompt(words), piece)
        self._check_prompt(
            int(inputs["input_ids"].shape[-1]),
            words,
            f"input TEXT for {window.start:.1f}-{window.end:.1f} s of AUDIO",
        )
        return PreparedItem(
            words=words,
            input_ids=inputs["input_ids"][0],
            attention_mask=inputs["attention_mask"][0],
            input_features=_first(inputs.get("input_features")),
            feature_attention_mask=_first(inputs.get("feature_attention_mask")),
            language=job.language,
            duration=window.end - window.start,
            text=None,
            wave=None if "input_features" in inputs else piece,
        )

    def next_items(self, job: WindowedJob) -> list[PreparedItem]:
        """Items of the job's next round: one window of a long recording, or every cue."""
        if isinstance(job, CueJob):
            if job.merged is not None:
                return []
            return [self.window_item(job, w, words) for w, words in job.cues]
        window = job.plan.next_window()
        job.window = window
        if window is None:
            return []
        words = job.words[window.first_word : window.first_word + window.n_words]
        samples = round(window.end * MODEL_SAMPLE_RATE) - round(window.start * MODEL_SAMPLE_RATE)
        fitting = self._words_that_fit(words, max(samples, MIN_WINDOW_SAMPLES))
        if fitting < len(words):  # a window never gets more words than one prompt may hold
            words = words[:fitting]
            job.window = window = dataclasses.replace(window, n_words=fitting)
        return [self.window_item(job, window, words)]

    def prompt_tokens(self, words: Sequence[str], samples: int) -> int:
        """Tokens of the prompt for ``words`` over ``samples`` 16 kHz samples, without building
        its frames (equal to the processor's, tested)."""
        text_ids = self.processor.tokenizer(build_prompt(words))["input_ids"]
        frames = frames_of_samples(samples)
        return len(text_ids) - 1 + audio_tokens_of_frames(frames)  # one pad stands for them all

    def _words_that_fit(self, words: Sequence[str], samples: int) -> int:
        """How many of ``words`` (from the first) fit one prompt of ``max_forward_tokens``."""
        limit = self.settings.max_forward_tokens
        n = len(words)
        tokens = self.prompt_tokens(words, samples)
        while tokens > limit and n > 1:
            n = max(1, min(n - 1, int(n * limit / tokens * 0.98)))
            tokens = self.prompt_tokens(words[:n], samples)
        return n

    def take_results(self, job: WindowedJob, results: list[Alignment]) -> None:
        """Take the model's results for the items of the job's last round."""
        if isinstance(job, CueJob):
            job.merged = merge_cues(job.cues, results)
            return
        if job.window is None:
            raise RuntimeError("results for a recording with no window awaiting them")
        (result,) = results
        job.plan.accept(
            job.window,
            [u.start for u in result.units],
            [u.end for u in result.units],
            [u.score for u in result.units],
            [u.repaired for u in result.units],
        )

    def finish(self, job: WindowedJob) -> Alignment:
        """The job's alignment once every word is placed."""
        if isinstance(job, CueJob):
            if job.merged is None:
                raise RuntimeError("a cue job finished before its results came in")
            times = job.merged
        else:
            plan = job.plan
            times = MergedTimes(plan.starts, plan.ends, plan.scores, plan.repaired)
        spans = locate_units(job.text, job.words)
        units = tuple(
            AlignedUnit(
                text=word,
                start=round(start, 3),
                end=round(end, 3),
                char_start=span.char_start,
                char_end=span.char_end,
                display_start=span.display_start,
                display_end=span.display_end,
                score=score,
                repaired=fixed,
            )
            for word, start, end, score, fixed, span in zip(
                job.words,
                times.starts,
                times.ends,
                times.scores,
                times.repaired,
                spans,
                strict=True,
            )
        )
        return Alignment(job.language, job.duration, units, job.text)

    def to_alignment(self, item: PreparedItem, slots: SlotResult) -> Alignment:
        """The alignment of ``item`` from the core's answer (per slot, upstream's argmax bin and
        its confidence): upstream's repair, and per unit its score and repair flag."""
        ms = slots.bins.astype(np.float64) * self.timestamp_segment_time
        confidence = slots.confidence
        expected = 2 * len(item.words)
        if ms.shape[0] != expected or confidence.shape[0] != expected:
            raise RuntimeError(
                f"model produced {ms.shape[0]} timestamps and {confidence.shape[0]} confidences "
                f"for {expected} slots"
            )
        repaired = repair(ms.tolist())
        fixed = repaired.values
        scores = unit_scores(confidence)
        flags = unit_repaired(repaired.replaced)
        spans = (
            locate_units(item.text, item.words)
            if item.text is not None
            else [UnitSpan(0, 0, 0, 0)] * len(item.words)
        )
        units = tuple(
            AlignedUnit(
                text=word,
                start=round(fixed[2 * k] / MS_PER_SECOND, 3),
                end=round(fixed[2 * k + 1] / MS_PER_SECOND, 3),
                char_start=span.char_start,
                char_end=span.char_end,
                display_start=span.display_start,
                display_end=span.display_end,
                score=float(scores[k]),
                repaired=flags[k],
            )
            for k, (word, span) in enumerate(zip(item.words, spans, strict=True))
        )
        return Alignment(
            language=item.language, duration=item.duration, units=units, text=item.text or ""
        )

    def load_word_splitters(self) -> None:
        """The Japanese and Korean word splitters load their dictionaries on first use."""
        split_units(self.text_processor, "今日は", "Japanese")
        split_units(self.text_processor, "안녕하세요", "Korean")


def merge_cues(
    cues: Sequence[tuple[Window, list[str]]], results: Sequence[Alignment]
) -> MergedTimes:
    """The cues' words in the recording's time: each cue's words stay inside its window (its
    span plus the margin), in order after the words before them (``longform.place``)."""
    merged = MergedTimes([], [], [], [])
    floor = 0.0
    for (window, _), result in zip(cues, results, strict=True):
        floor = max(floor, window.start)
        for unit in result.units:
            start, end, moved = place(window.start, unit.start, unit.end, floor, window.end)
            merged.starts.append(start)
            merged.ends.append(end)
            merged.scores.append(unit.score)
            merged.repaired.append(unit.repaired or moved)
            floor = end
    return merged
