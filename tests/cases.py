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
        n = int(self.seconds * self.sample_rate) + self.extra_samples
        rng = np.random.default_rng(zlib.crc32(self.name.encode()))
        t = np.arange(n) / self.sample_rate
        # Noise with a syllable-rate envelope over a tone: something like speech energy.
        envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t + rng.uniform(0, 6))
        wave = 0.3 * envelope * np.sin(2 * np.pi * rng.uniform(120, 300) * t)
        wave += 0.05 * rng.standard_normal(n)
        return wave.astype(np.float32)


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
