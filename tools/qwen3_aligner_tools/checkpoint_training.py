"""A tiny test checkpoint whose timestamps follow the audio: trained briefly on synthetic speech.

A randomly initialised tiny checkpoint predicts nearly constant timestamps, so equality with
upstream on it proves little. This module trains the tiny architecture for about four CPU minutes
on synthetic "speech" with known word times: tone bursts with harmonics for words, low noise for
the pauses between them, made-up syllables for the transcript. Half the clips speak at a natural
pace; the other half spread a given number of words over the whole clip (fast in short clips,
long pauses in long ones); a share runs on to a minute. Training starts from a narrow random
draw of the tiny shapes; the loss is cross-entropy at the ``<timestamp>`` positions of the real
``model.thinker`` forward against each word's start and end 80 ms class, spread over the
neighbouring classes. The audio encoder attends within its 8 s windows, as the real model was
trained (:mod:`qwen3_aligner_triton.encoder_attention`).

The checkpoint is the same file, byte for byte, on every machine: :func:`train_reproducibly` runs
the training in a child process on one thread with the CPU kernels pinned (:data:`PINNED_KERNELS`:
ATen's portable kernels instead of its AVX2/AVX-512 ones, MKL's conditional numerical
reproducibility, no oneDNN convolutions, numpy's and OpenBLAS's baseline kernels), so what a
processor offers does not change a sum's order or a sine's last bit.
Left to pick by processor, two trainings on one AVX-512 machine, one with ATen's AVX2 kernels,
differ after 15 steps. :data:`EXPECTED_DIGEST_FILE` records the digest the suite checks.
:func:`cached_trained_checkpoint` keeps the result under the user's cache folder, keyed by a hash
of the builders' source and settings, so only a fresh machine trains.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
SYLLABLES = (  # made-up syllables for the transcripts
    "ba", "da", "ka", "la", "ma", "na", "pa", "ra", "sa", "ta", "va", "za",
    "bo", "do", "ko", "lo", "mo", "no", "po", "ro", "so", "to",
    "bi", "di", "ki", "li", "mi", "ni", "pi", "ri", "si", "ti",
    "be", "de", "ke", "le", "me", "ne", "pe", "re", "se", "te",
)  # fmt: skip
CACHE_ENV = "QWEN3_ALIGNER_CACHE"
# Environment of the training process: kernels that do not depend on the processor, one thread.
PINNED_KERNELS = {
    "ATEN_CPU_CAPABILITY": "default",  # ATen's portable kernels, not AVX2/AVX-512 variants
    "MKL_CBWR": "COMPATIBLE",  # MKL's conditional numerical reproducibility: one code path
    # numpy's SIMD variants of sin, exp, log, ... round differently (measured here: AVX-512 and
    # AVX2 give other float64 bits); this is every dispatch target of numpy 1.26 on x86-64.
    "NPY_DISABLE_CPU_FEATURES": (
        "SSSE3 SSE41 POPCNT SSE42 AVX F16C FMA3 AVX2 AVX512F AVX512CD AVX512_KNL AVX512_KNM "
        "AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL"
    ),
    "OPENBLAS_CORETYPE": "Prescott",  # numpy's BLAS: its SSE3 kernels, present on every x86-64
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
}
# The digest of the trained checkpoint's files, recorded where it was first trained and checked by
# the suite wherever it runs (test_checkpoint.py).
EXPECTED_DIGEST_FILE = Path(__file__).with_name("tiny-trained.json")
RECORD_NAME = "TRAINED.json"  # written beside the weights: settings, timings, digest


@dataclass(frozen=True)
class TrainSettings:
    """What a trained tiny checkpoint is built from (every field goes into the cache key)."""

    seed: int = 0
    steps: int = 450
    batch: int = 6
    lr: float = 4e-3
    warmup_steps: int = 20
    weight_decay: float = 0.01
    min_seconds: float = 1.0
    max_seconds: float = 12.0
    # Share of clips drawn long (up to ``long_seconds``), so that late timestamps are learned too.
    long_share: float = 0.15
    long_seconds: float = 60.0
    # Share of clips "paced": a given number of words spread over the whole clip (fast speech in
    # short clips, long pauses in long ones) instead of a natural pace that sets the word count.
    paced_share: float = 0.5
    max_paced_words: int = 16
    # Share of clips whose transcript runs on past the audio (as a long recording's window is
    # handed more words than it holds): those words are taught to pile up at the clip's end.
    overflow_share: float = 0.2
    max_overflow_words: int = 8
    # The random tiny checkpoint's weights are drawn wide (std 0.2, for varied raw outputs);
    # training starts from a narrower draw of the same shapes, which it optimises far better.
    init_std: float = 0.02
    # Targets are spread over neighbouring classes (a Gaussian of this many 80 ms bins), so that a
    # near miss costs less than a far one and the model learns position as an order.
    label_sigma: float = 1.0
    threads: int = 1


@dataclass(frozen=True)
class SyntheticClip:
    """A synthetic utterance at 16 kHz and the true times (seconds) of its words."""

    wave: np.ndarray
    words: tuple[str, ...]
    starts: tuple[float, ...]
    ends: tuple[float, ...]

    @property
    def text(self) -> str:
        return " ".join(self.words)

    @property
    def duration(self) -> float:
        return self.wave.shape[0] / SAMPLE_RATE


def _word(rng: np.random.Generator) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(int(rng.integers(1, 4))))


def _burst(rng: np.random.Generator, n: int) -> np.ndarray:
    """A voiced "word": a gliding tone with harmonics under a smooth envelope."""
    t = np.arange(n) / SAMPLE_RATE
    f0 = rng.uniform(110, 320) * (1 + rng.uniform(-0.15, 0.15) * t / max(t[-1], 1e-3))
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    tone = sum(rng.uniform(0.2, 1.0) / k * np.sin(k * phase) for k in (1, 2, 3, 4))
    ramp = min(n // 4, int(0.02 * SAMPLE_RATE))
    env = np.ones(n)
    if ramp > 0:
        env[:ramp] = np.linspace(0, 1, ramp)
        env[-ramp:] = np.linspace(1, 0, ramp)
    syllable = 0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(3, 6) * t + rng.uniform(0, 6))
    return rng.uniform(0.15, 0.5) * env * syllable * tone


def synthetic_clip(rng: np.random.Generator, seconds: float, lead: float | None = None):
    """About ``seconds`` of synthetic speech: words of 0.15-0.5 s, pauses of 0.05-0.6 s."""
    total = int(seconds * SAMPLE_RATE)
    wave = 0.01 * rng.standard_normal(total)
    words: list[str] = []
    starts: list[float] = []
    ends: list[float] = []
    pos = rng.uniform(0.05, 0.6) if lead is None else lead
    while True:
        length = rng.uniform(0.15, 0.5)
        if pos + length > seconds - 0.05:
            break
        a, b = int(pos * SAMPLE_RATE), int((pos + length) * SAMPLE_RATE)
        wave[a:b] += _burst(rng, b - a)
        words.append(_word(rng))
        starts.append(a / SAMPLE_RATE)
        ends.append(b / SAMPLE_RATE)
        pos += length + rng.uniform(0.05, 0.6)
    return SyntheticClip(wave.astype(np.float32), tuple(words), tuple(starts), tuple(ends))


def paced_clip(rng: np.random.Generator, seconds: float, count: int) -> SyntheticClip:
    """``count`` words spread over ``seconds``: a short lead-in, pauses stretched (or everything
    squeezed) so that the last word ends within 0.3 s of the clip's end."""
    total = int(seconds * SAMPLE_RATE)
    lengths = rng.uniform(0.15, 0.5, count)
    pauses = rng.uniform(0.05, 0.6, count)  # the lead-in, then one before each next word
    room = seconds - rng.uniform(0.0, 0.3)
    if lengths.sum() + pauses.sum() > room:
        scale = room / (lengths.sum() + pauses.sum())
        lengths, pauses = lengths * scale, pauses * scale
    else:
        pauses *= (room - lengths.sum()) / pauses.sum()
    wave = 0.01 * rng.standard_normal(total)
    starts: list[float] = []
    ends: list[float] = []
    pos = 0.0
    for length, pause in zip(lengths, pauses, strict=True):
        pos += pause
        a, b = int(pos * SAMPLE_RATE), min(total, int((pos + length) * SAMPLE_RATE))
        wave[a:b] += _burst(rng, b - a)
        starts.append(a / SAMPLE_RATE)
        ends.append(b / SAMPLE_RATE)
        pos += length
    words = tuple(_word(rng) for _ in range(count))
    return SyntheticClip(wave.astype(np.float32), words, tuple(starts), tuple(ends))


def synthetic_set(seed: int, count: int, min_seconds: float, max_seconds: float):
    """``count`` clips of random lengths, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    clips = []
    while len(clips) < count:
        clip = synthetic_clip(rng, float(rng.uniform(min_seconds, max_seconds)))
        if clip.words:
            clips.append(clip)
    return clips


def concatenate(clips: Sequence[SyntheticClip]) -> SyntheticClip:
    """One long recording made of ``clips`` back to back (word times shifted accordingly)."""
    words: list[str] = []
    starts: list[float] = []
    ends: list[float] = []
    offset = 0.0
    for clip in clips:
        words += clip.words
        starts += [offset + s for s in clip.starts]
        ends += [offset + e for e in clip.ends]
        offset += clip.duration
    wave = np.concatenate([c.wave for c in clips])
    return SyntheticClip(wave, tuple(words), tuple(starts), tuple(ends))


def _collate(items, pad_token_id: int):
    """Pad per-clip processor outputs as the engine does: ids left, mel frames right."""
    import torch

    size = len(items)
    max_tokens = max(int(it["input_ids"].shape[-1]) for it in items)
    max_frames = max(int(it["input_features"].shape[-1]) for it in items)
    mel = int(items[0]["input_features"].shape[-2])
    input_ids = torch.full((size, max_tokens), pad_token_id, dtype=torch.long)
    attention = torch.zeros((size, max_tokens), dtype=torch.long)
    features = torch.zeros((size, mel, max_frames), dtype=torch.float32)
    feature_mask = torch.zeros((size, max_frames), dtype=torch.long)
    for b, it in enumerate(items):
        n = int(it["input_ids"].shape[-1])
        input_ids[b, max_tokens - n :] = it["input_ids"][0]
        attention[b, max_tokens - n :] = it["attention_mask"][0]
        frames = int(it["input_features"].shape[-1])
        features[b, :, :frames] = it["input_features"][0]
        feature_mask[b, :frames] = it["feature_attention_mask"][0]
    return input_ids, attention, features, feature_mask


def _targets(clip: SyntheticClip, segment_ms: float) -> list[int]:
    out: list[int] = []
    for s, e in zip(clip.starts, clip.ends, strict=True):
        out += [round(s * 1000 / segment_ms), round(e * 1000 / segment_ms)]
    return out


def _training_clip(rng: np.random.Generator, settings: TrainSettings) -> SyntheticClip:
    """A clip; sometimes with words past the audio's end, timed at the end (piled up)."""
    while True:
        if rng.uniform() < settings.long_share:
            seconds = float(rng.uniform(settings.max_seconds, settings.long_seconds))
        else:
            seconds = float(rng.uniform(settings.min_seconds, settings.max_seconds))
        if rng.uniform() < settings.paced_share:
            most = max(1, min(settings.max_paced_words, int(seconds / 0.2)))
            clip = paced_clip(rng, seconds, int(rng.integers(1, most + 1)))
        else:
            clip = synthetic_clip(rng, seconds)
        if clip.words:
            break
    if rng.uniform() >= settings.overflow_share:
        return clip
    extra = int(rng.integers(1, settings.max_overflow_words + 1))
    end = clip.duration
    return SyntheticClip(
        clip.wave,
        clip.words + tuple(_word(rng) for _ in range(extra)),
        clip.starts + (end,) * extra,
        clip.ends + (end,) * extra,
    )


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _slot_loss(logits, target, sigma: float):
    """Cross-entropy of the slots' logits against ``target`` classes spread by ``sigma`` bins."""
    import torch

    if sigma <= 0:
        return torch.nn.functional.cross_entropy(logits, target)
    classes = torch.arange(logits.shape[-1], dtype=torch.float32)
    weights = torch.exp(-0.5 * ((classes[None] - target[:, None].float()) / sigma) ** 2)
    weights = weights / weights.sum(-1, keepdim=True)
    return -(weights * torch.log_softmax(logits, -1)).sum(-1).mean()


def _reinitialise(module, std: float) -> None:
    """Matrices drawn anew from N(0, std), biases zeroed; norms and buffers left as built."""
    import torch

    with torch.no_grad():
        for name, param in module.named_parameters():
            if param.dim() >= 2:
                param.normal_(0.0, std)
            elif name.endswith(".bias"):
                param.zero_()


def train_checkpoint(
    out_dir: str | Path,
    settings: TrainSettings = TrainSettings(),
    on_step: Callable[[int, float], None] | None = None,
) -> Path:
    """Write the tiny checkpoint trained on synthetic speech into ``out_dir``.

    ``on_step(step, loss)`` is called after every optimiser step (progress reports)."""
    import torch
    from qwen_asr import Qwen3ForcedAligner

    from qwen3_aligner_triton.encoder_attention import WINDOWED, set_encoder_attention
    from qwen3_aligner_triton.preparation import build_prompt

    from .checkpoint_builder import build_checkpoint

    out = build_checkpoint(out_dir, flavour="tiny", seed=settings.seed)
    with _threads(settings.threads):
        torch.manual_seed(settings.seed)
        aligner = Qwen3ForcedAligner.from_pretrained(str(out), dtype=torch.float32)
        model, processor = aligner.model, aligner.processor
        set_encoder_attention(model, WINDOWED)
        config = model.config
        ts_id = int(config.timestamp_token_id)
        segment_ms = float(config.timestamp_segment_time)
        tokenizer = processor.tokenizer
        pad_id = int(tokenizer.pad_token_id or tokenizer.eos_token_id)
        rng = np.random.default_rng(settings.seed + 1)
        _reinitialise(model.thinker, settings.init_std)
        model.train()
        optimizer = torch.optim.AdamW(
            model.thinker.parameters(), lr=settings.lr, weight_decay=settings.weight_decay
        )

        def lr_at(step: int) -> float:
            if step < settings.warmup_steps:
                return (step + 1) / settings.warmup_steps
            done = (step - settings.warmup_steps) / max(1, settings.steps - settings.warmup_steps)
            return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * done))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
        for step in range(settings.steps):
            clips = [_training_clip(rng, settings) for _ in range(settings.batch)]
            items = [
                processor(
                    text=[build_prompt(c.words)], audio=[c.wave], return_tensors="pt", padding=True
                )
                for c in clips
            ]
            input_ids, attention, features, feature_mask = _collate(items, pad_id)
            logits = model.thinker(
                input_ids=input_ids,
                attention_mask=attention,
                input_features=features,
                feature_attention_mask=feature_mask,
                use_cache=False,
            ).logits
            target = torch.tensor([t for c in clips for t in _targets(c, segment_ms)])
            loss = _slot_loss(logits[input_ids == ts_id], target, settings.label_sigma)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.thinker.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            if on_step is not None:
                on_step(step, float(loss.detach()))
        model.eval()
        model.save_pretrained(out, safe_serialization=True)
    # save_pretrained writes the thinker's class default model_type; the loader needs the aligner's.
    config_path = out / "config.json"
    data = json.loads(config_path.read_text())
    data["thinker_config"]["model_type"] = "qwen3_forced_aligner"
    config_path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return out


def cache_key(settings: TrainSettings = TrainSettings()) -> str:
    """A hash of the builders' source, the settings and the library versions behind the files."""
    import torch
    import transformers

    from qwen3_aligner_triton import encoder_attention

    from . import checkpoint_builder

    h = hashlib.sha256()
    for path in (
        Path(__file__),
        Path(checkpoint_builder.__file__),
        Path(encoder_attention.__file__),
    ):
        h.update(path.read_bytes())
    h.update(json.dumps(dataclasses.asdict(settings), sort_keys=True).encode())
    h.update(f"{torch.__version__} {transformers.__version__}".encode())
    return h.hexdigest()[:16]


def cache_root() -> Path:
    given = os.environ.get(CACHE_ENV)
    if given:
        return Path(given)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "qwen3-aligner-triton"


def kernels_pinned() -> bool:
    """Whether this process runs the pinned kernels (torch imported after the environment)."""
    import torch

    return (
        all(os.environ.get(k) == v for k, v in PINNED_KERNELS.items())
        and torch.backends.cpu.get_cpu_capability() == "DEFAULT"
    )


def checkpoint_digest(folder: str | Path) -> str:
    """sha256 over a checkpoint folder's files (names and bytes), the training record excluded."""
    h = hashlib.sha256()
    for path in sorted(Path(folder).iterdir()):
        if path.is_file() and path.name != RECORD_NAME:
            h.update(path.name.encode() + b"\0")
            h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def expected_digest() -> dict | None:
    """The recorded ``{"cache_key", "digest", ...}`` of the default settings' checkpoint."""
    if not EXPECTED_DIGEST_FILE.is_file():
        return None
    return json.loads(EXPECTED_DIGEST_FILE.read_text())


def train_reproducibly(
    out_dir: str | Path, settings: TrainSettings = TrainSettings(), extra_env: dict | None = None
) -> Path:
    """Train in a child process with :data:`PINNED_KERNELS`; the same bytes on every machine.

    ``extra_env`` adds variables to the child's environment (the tests restrict the processor
    features MKL, oneDNN, numpy and OpenBLAS may use, to prove they do not matter)."""
    env = {**os.environ, **(extra_env or {}), **PINNED_KERNELS}
    command = [
        sys.executable,
        "-m",
        __name__,
        str(out_dir),
        json.dumps(dataclasses.asdict(settings)),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(
            f"training the tiny checkpoint failed (exit {done.returncode}):\n{done.stderr[-4000:]}"
        )
    return Path(out_dir)


def cached_trained_checkpoint(settings: TrainSettings = TrainSettings()) -> Path:
    """The trained tiny checkpoint from the cache, trained and stored there first if missing.

    Concurrent builders each train into a private folder and rename it into place; the first
    rename wins and the others discard their copy.
    """
    root = cache_root()
    final = root / f"tiny-trained-{cache_key(settings)}"
    if (final / "config.json").is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".building-", dir=root))
    try:
        started = time.perf_counter()
        before = os.times()
        train_reproducibly(work / "checkpoint", settings)
        after = os.times()
        (work / "checkpoint" / RECORD_NAME).write_text(
            json.dumps(
                {
                    "settings": dataclasses.asdict(settings),
                    "cache_key": cache_key(settings),
                    "digest": checkpoint_digest(work / "checkpoint"),
                    "train_seconds": round(time.perf_counter() - started, 1),
                    "train_cpu_seconds": round(
                        (after.children_user + after.children_system)
                        - (before.children_user + before.children_system),
                        1,
                    ),
                },
                indent=2,
            )
            + "\n"
        )
        try:
            os.rename(work / "checkpoint", final)
        except OSError:
            if not (final / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final


def _main(argv: Sequence[str]) -> int:
    """``python -m qwen3_aligner_tools.checkpoint_training OUT_DIR SETTINGS_JSON``: the child
    process of :func:`train_reproducibly`; refuses to train without the pinned kernels."""
    out_dir, settings_json = argv
    if not kernels_pinned():
        print(
            "checkpoint_training: run through train_reproducibly(); the kernels are not pinned "
            f"({', '.join(f'{k}={v}' for k, v in PINNED_KERNELS.items())})",
            file=sys.stderr,
        )
        return 2
    import torch

    torch.backends.mkldnn.enabled = False  # oneDNN picks its kernels by processor
    torch.use_deterministic_algorithms(True)
    train_checkpoint(out_dir, TrainSettings(**json.loads(settings_json)))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
