"""Deterministic benchmark inputs: speech-like 16 kHz audio with transcripts sized to it.

Random weights make the model's output meaningless, but its cost depends only on the shapes it
sees: the number of mel frames (audio length) and prompt tokens (two per word). So clips need the
lengths of real speech and transcripts with the word (or character) rates of real speech, which
is what this module produces: a voiced tone with a syllable-rate envelope and pauses between
words, and English or Chinese sentences cycled up to the duration's word budget.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 16000  # Hz, what the clips are generated at (the model's own rate)
ENGLISH_WORDS_PER_SECOND = 2.5  # conversational English
CHINESE_CHARS_PER_SECOND = 4.0  # Mandarin, one aligned unit per character
SYLLABLES_PER_SECOND = 4.0  # envelope rate of the synthetic voice

ENGLISH_SENTENCES = (
    "The committee met on Tuesday morning to review the budget for the coming year.",
    "Most of the questions were about the new bridge and how long the repairs would take.",
    "She said the trains would run every ten minutes once the work is finished.",
    "We walked along the river until the rain started, then waited under the old station roof.",
    "If you have any questions about your order, please call us before five o'clock.",
    "The results of the survey will be published next month on the city's website.",
    "He has been teaching mathematics at the same school for almost twenty years.",
    "Turn left at the second traffic light and the library is on your right.",
    "Scientists believe the lake was formed by a glacier about ten thousand years ago.",
    "Thank you all for coming tonight, and a special thanks to our volunteers.",
)
CHINESE_SENTENCES = (
    "今天上午委员会开会讨论了明年的预算安排。",
    "大多数问题都是关于新桥的维修需要多长时间。",
    "她说工程结束以后地铁每十分钟就会有一班。",
    "我们沿着河边一直走到下雨，然后在老车站的屋檐下等着。",
    "如果您对订单有任何疑问，请在五点之前给我们打电话。",
    "调查的结果将在下个月发布在市政府的网站上。",
    "他在同一所学校教数学已经将近二十年了。",
    "在第二个红绿灯左转，图书馆就在您的右手边。",
    "科学家认为这个湖大约在一万年前由冰川形成。",
    "感谢大家今晚的到来，特别感谢我们的志愿者。",
)


def _is_han(ch: str) -> bool:
    return "\u4e00" <= ch <= "\u9fff"


@dataclass(frozen=True)
class Clip:
    """One benchmark request: mono float32 audio at 16 kHz, its transcript and language."""

    name: str
    audio: np.ndarray  # float32, 1-D, SAMPLE_RATE Hz
    text: str
    language: str  # "English" or "Chinese"

    @property
    def seconds(self) -> float:
        """Duration of the audio."""
        return self.audio.shape[0] / SAMPLE_RATE

    @property
    def units(self) -> int:
        """Rough number of aligned units (words, or characters for Chinese)."""
        if self.language == "Chinese":
            return sum(_is_han(ch) for ch in self.text)
        return len(self.text.split())


def speech_like_audio(seconds: float, seed: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A voiced, syllable-modulated tone with word pauses and a little noise; peak below 1."""
    rng = np.random.default_rng(seed)
    n = max(1, round(seconds * sample_rate))
    t = np.arange(n, dtype=np.float64) / sample_rate
    pitch = rng.uniform(110.0, 230.0) * (1.0 + 0.08 * np.sin(2 * math.pi * 0.3 * t))
    phase = 2 * math.pi * np.cumsum(pitch) / sample_rate
    voice = sum((0.6**k) * np.sin(k * phase) for k in range(1, 5))
    syllables = 0.5 + 0.5 * np.sin(2 * math.pi * SYLLABLES_PER_SECOND * t + rng.uniform(0, 6))
    # Word pauses: every ~0.6 s the voice drops out for ~0.12 s.
    pauses = (np.mod(t + rng.uniform(0, 0.6), 0.6) > 0.12).astype(np.float64)
    wave = 0.25 * voice * syllables * pauses + 0.01 * rng.standard_normal(n)
    return wave.astype(np.float32)


def transcript(seconds: float, language: str, offset: int = 0) -> str:
    """Sentences of ``language`` cycled from ``offset`` until the duration's unit budget is met."""
    if language == "Chinese":
        budget = max(1, round(seconds * CHINESE_CHARS_PER_SECOND))
        out: list[str] = []
        count = 0
        k = offset
        while count < budget:
            for ch in CHINESE_SENTENCES[k % len(CHINESE_SENTENCES)]:
                out.append(ch)
                count += _is_han(ch)
                if count >= budget:
                    break
            k += 1
        text = "".join(out)
        return text if text.endswith("。") else text + "。"
    budget = max(1, round(seconds * ENGLISH_WORDS_PER_SECOND))
    words: list[str] = []
    k = offset
    while len(words) < budget:
        words.extend(ENGLISH_SENTENCES[k % len(ENGLISH_SENTENCES)].split())
        k += 1
    text = " ".join(words[:budget])
    return text if text.endswith(".") else text.rstrip(",;") + "."


def durations(count: int, min_seconds: float, max_seconds: float, seed: int = 0) -> list[float]:
    """``count`` lengths evenly spread over [min, max], in a seeded shuffled order.

    The shuffle mixes short and long clips in every group of consecutive requests, as independent
    clients would send them (and as an upstream batch of consecutive inputs would hold them).
    """
    if count < 1:
        raise ValueError("need at least one clip")
    if not 0 < min_seconds <= max_seconds:
        raise ValueError(f"need 0 < min ({min_seconds}) <= max ({max_seconds}) seconds")
    if count == 1:
        return [float(max_seconds)]
    spread = np.linspace(min_seconds, max_seconds, count)
    order = np.random.default_rng(seed).permutation(count)
    return [round(float(spread[i]), 2) for i in order]


def make_clips(
    count: int,
    min_seconds: float = 2.0,
    max_seconds: float = 60.0,
    seed: int = 0,
    languages: Sequence[str] = ("English", "Chinese"),
) -> list[Clip]:
    """The benchmark's mixed-length clips, alternating ``languages``."""
    clips = []
    for i, sec in enumerate(durations(count, min_seconds, max_seconds, seed)):
        language = languages[i % len(languages)]
        clips.append(
            Clip(
                name=f"clip{i:02d}-{language[:2].lower()}-{sec:g}s",
                audio=speech_like_audio(sec, seed * 1000 + i),
                text=transcript(sec, language, offset=i),
                language=language,
            )
        )
    return clips


def fixed_clips(count: int, seconds: float, seed: int = 0, language: str = "English") -> list[Clip]:
    """``count`` distinct clips of the same length (for per-clip latency at a given batch size)."""
    return [
        Clip(
            name=f"fixed{i:02d}-{seconds:g}s",
            audio=speech_like_audio(seconds, seed * 1000 + i),
            text=transcript(seconds, language, offset=i),
            language=language,
        )
        for i in range(count)
    ]
