"""Deterministic alignment cases shared by the in-process and the served parity tests."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

TEXTS = {
    "English": "Hello, world! This is the quick brown fox; it jumps over the lazy dog.",
    "Chinese": "今天天气很好，我们去公园散步吧。",
    "Japanese": "今日はいい天気ですね。東京へ行きましょう！",
    "Korean": "안녕하세요, 만나서 반갑습니다. 오늘 날씨가 좋네요.",
    "mixed": "Qwen3 对齐器 aligns 中文 and English — even 'quoted' words, numbers 42 & symbols!",
    "French": "Bonjour à tous : c'est l'heure du café.",
    "German": "Guten Morgen, wie geht's? Straße und Äpfel.",
    "Spanish": "¿Dónde está la biblioteca? ¡Aquí!",
    "Russian": "Привет, мир! Как дела?",
    "English-short": "Hello, world!",
    "Chinese-short": "你好，世界。",
}
LANG_OF = {"mixed": "English", "English-short": "English", "Chinese-short": "Chinese"}
# How many units upstream splits each text into (checked in test_checkpoint.py): each case's audio
# holds one spoken "unit" per unit of its transcript, so an aligner that listens has one answer.
UNITS = {
    "English": 14,
    "Chinese": 14,
    "Japanese": 10,
    "Korean": 10,
    "mixed": 15,
    "French": 7,
    "German": 7,
    "Spanish": 5,
    "Russian": 4,
    "English-short": 2,
    "Chinese-short": 4,
}


@dataclass(frozen=True)
class Case:
    name: str
    seconds: float
    sample_rate: int
    extra_samples: int  # added so lengths are not multiples of the 160-sample hop
    text_key: str
    language: str  # as sent: a name in some case, or a code

    @property
    def upstream_language(self) -> str:
        return LANG_OF.get(self.text_key, self.text_key)

    @property
    def text(self) -> str:
        return TEXTS[self.text_key]

    def audio(self) -> np.ndarray:
        """Speech-like audio: one voiced burst per unit of the transcript, pauses between them.

        The bursts fill the clip from a short lead-in to within 0.1 s of its end (so cutting the
        end cuts the last word): short clips speak fast, long ones pause long. A light noise floor
        runs throughout. Reproducible from the case's name.
        """
        sr = self.sample_rate
        n = int(self.seconds * sr) + self.extra_samples
        rng = np.random.default_rng(zlib.crc32(self.name.encode()))
        units = UNITS[self.text_key]
        words = rng.uniform(0.15, 0.5, units)
        pauses = rng.uniform(0.05, 0.6, units)  # the lead-in, then one before each next word
        tail = rng.uniform(0.0, 0.1)
        room = n / sr - tail
        if words.sum() + pauses.sum() > room:  # too much to say: speak faster
            scale = room / (words.sum() + pauses.sum())
            words, pauses = words * scale, pauses * scale
        else:  # time to spare: pause longer
            pauses *= (room - words.sum()) / pauses.sum()
        wave = 0.01 * rng.standard_normal(n)
        t0 = 0.0
        for length, pause in zip(words, pauses, strict=True):
            t0 += pause
            a, b = int(t0 * sr), min(n, int((t0 + length) * sr))
            wave[a:b] += _burst(rng, b - a, sr)
            t0 += length
        return wave.astype(np.float32)


def _burst(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """A voiced unit: a gliding tone with three harmonics under a syllable-rate envelope."""
    t = np.arange(n) / sr
    f0 = rng.uniform(110, 300) * (1 + rng.uniform(-0.2, 0.2) * t / max(t[-1], 1e-3))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    tone = sum(rng.uniform(0.3, 1.0) / k * np.sin(k * phase) for k in (1, 2, 3))
    ramp = min(n // 4, int(0.015 * sr))
    env = np.ones(n)
    if ramp > 0:
        env[:ramp] = np.linspace(0, 1, ramp)
        env[-ramp:] = np.linspace(1, 0, ramp)
    return rng.uniform(0.2, 0.5) * env * (0.7 + 0.3 * np.sin(2 * np.pi * 4 * t)) * tone


_SPECS = [
    (0.5, 16000, 0, "English-short", "en"),
    (0.73, 8000, 13, "English-short", "English"),
    (1.0, 44100, 7, "Chinese-short", "zh"),
    (1.5, 16000, 77, "Japanese", "ja"),
    (2.0, 8000, 0, "Korean", "KOREAN"),
    (2.7, 16000, 159, "mixed", "en"),
    (3.3, 44100, 0, "English", "english"),
    (4.0, 16000, 1, "Chinese", "Chinese"),
    (5.5, 8000, 99, "Japanese", "Japanese"),
    (6.1, 44100, 123, "Korean", "ko"),
    (7.9, 16000, 0, "French", "fr"),
    (9.0, 16000, 61, "German", "de"),
    (11.2, 8000, 3, "Spanish", "es"),
    (13.0, 44100, 0, "Russian", "ru"),
    (15.0, 16000, 80, "mixed", "English"),
    (18.4, 16000, 0, "English", "en"),
    (21.0, 8000, 17, "Chinese", "zh"),
    (25.0, 16000, 5, "Japanese", "ja"),
    (30.0, 44100, 0, "Korean", "ko"),
    (37.5, 16000, 151, "English", "en"),
    (45.0, 8000, 0, "mixed", "en"),
    (52.3, 16000, 33, "Chinese", "zh"),
    (60.0, 16000, 0, "English", "en"),
]
CASES = [
    Case(f"{i:02d}-{key}-{sec}s-{sr}Hz", sec, sr, extra, key, lang)
    for i, (sec, sr, extra, key, lang) in enumerate(_SPECS)
]
