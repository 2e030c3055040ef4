"""The forward pass alone: what the ``qwen3_aligner_core`` model runs.

The core receives prepared clips: prompt ids with ``<|audio_pad|>`` expanded, and either the
log-mel frames of the clip alone or its 16 kHz waveform, whose frames the core then makes on its
own device with the checkpoint's feature extractor, exactly as upstream's processor makes them.
It answers, per clip, the bin of each ``<timestamp>`` slot and the model's confidence in it.
Clips are grouped into forward passes by prompt length; inside a pass the clips are laid end to
end, each attending to itself only (``packed_decoder``), or, with ``packed_decoder`` off, ids are
left-padded and frames right-padded with the masks off: either way each clip gets its lone result.

:class:`DeviceQueue` feeds the device: a pass starts as soon as the device is free and takes every
clip waiting then, so clips that arrive during a pass form the next one while the device works.

With the ``simulate_gpu`` parameter the core runs a stand-in forward instead of the model, to
measure the pipeline without a GPU: ``qwen3_aligner_tools.simulated_device``, a development tool
that the image does not hold (:func:`.loading.load_forward`).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from .batching import plan_batches
from .contract import HOP_SAMPLES, MEL_BINS, MEL_FRAME_MS
from .contract import MODEL_SAMPLE_RATE as MODEL_SAMPLE_RATE
from .packed_decoder import decode_packed, decoder_layout, split_slots
from .packed_encoder import encode_packed, installed_encoder_attention, packed_encoder_installed
from .params import CoreSettings
from .scores import slot_predictions

# The longest clip the core takes: the timestamp head's range (5000 bins x 80 ms). The front's
# window and cue settings are not the core's to know; no window of theirs can usefully exceed it.
MAX_CLIP_SECONDS = 400.0


@dataclass(frozen=True)
class CoreInput:
    """One prepared clip as the core receives it."""

    input_ids: np.ndarray  # int64 [tokens]: the prompt, <|audio_pad|> expanded
    features: np.ndarray | None = None  # float32 [mel_bins, frames]: the clip's own log-mel frames
    wave: np.ndarray | None = None  # float32 [samples] at 16 kHz, when the core makes the frames

    @property
    def tokens(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes of the clip's tensors (what one core call moves through shared memory)."""
        audio = self.features if self.features is not None else self.wave
        return int(self.input_ids.nbytes) + (0 if audio is None else int(audio.nbytes))

    @property
    def frames(self) -> int:
        """Log-mel frames of the clip (upstream's extractor makes one per full hop of audio)."""
        if self.features is not None:
            return int(self.features.shape[-1])
        if self.wave is not None:
            return frames_of_samples(int(self.wave.shape[0]))
        return 0


def frames_of_samples(samples: int) -> int:
    """Log-mel frames upstream's Whisper feature extractor makes of ``samples`` 16 kHz samples
    (tested against the processor for many lengths)."""
    return samples // HOP_SAMPLES


# Upstream's log-mel frames of audio within [-1, 1] lie within [-1.5, 2.2]; the front's waveforms
# are within [-1, 1]. Anything far outside is no clip a front sends.
FEATURE_LIMIT = 10.0
AUDIO_LIMIT = 1.0


@dataclass(frozen=True)
class ClipRules:
    """What a clip must satisfy for the checkpoint the core serves (``clip_rules``)."""

    vocab_size: int  # token ids lie in [0, vocab_size)
    audio_token_id: int  # <|audio_pad|>: one per audio token the clip's frames make


def clip_rules(config) -> ClipRules:
    """The rules of a checkpoint, from its ``Qwen3ASRConfig``."""
    thinker = config.thinker_config
    return ClipRules(
        vocab_size=int(thinker.text_config.vocab_size),
        audio_token_id=int(thinker.audio_token_id),
    )


def audio_tokens_of_frames(frames: int) -> int:
    """Audio tokens the encoder makes of ``frames`` log-mel frames: 13 per full 100 frames and the
    rest through three stride-2 convolutions (upstream's ``_get_feat_extract_output_lengths``,
    tested equal for every length)."""
    rest = frames % 100
    after_first = (rest - 1) // 2 + 1
    return ((after_first - 1) // 2 + 1 - 1) // 2 + 1 + (frames // 100) * 13


def refusal(item: CoreInput, settings: CoreSettings, rules: ClipRules | None = None) -> str | None:
    """Why the core refuses ``item``, or None. The front never sends such a clip, but a clip the
    core accepts shares a forward pass with other requests' clips: one malformed clip must not
    change their results (``masked_scatter`` fills the audio tokens of a whole pass in order),
    fail their pass or poison the device (an id outside the vocabulary is a device-side assert
    on CUDA)."""
    if (item.features is None) == (item.wave is None):
        return "exactly one of FEATURES and AUDIO is required"
    if item.features is not None and (
        item.features.ndim != 2 or item.features.shape[0] != MEL_BINS
    ):
        return f"FEATURES must be [{MEL_BINS}, frames] per clip, got {item.features.shape}"
    if item.input_ids.ndim != 1 or (item.wave is not None and item.wave.ndim != 1):
        return "INPUT_IDS and AUDIO must be one row per clip"
    frames = item.frames
    name = "FEATURES" if item.features is not None else "AUDIO"
    max_frames = round(MAX_CLIP_SECONDS * 1000.0 / MEL_FRAME_MS)
    if item.tokens == 0 or frames == 0:
        return f"INPUT_IDS and {name} must not be empty (AUDIO: at least one 10 ms frame)"
    if item.tokens > settings.max_forward_tokens:
        return (
            f"INPUT_IDS has {item.tokens} tokens; the limit is {settings.max_forward_tokens} "
            "(max_forward_tokens)"
        )
    if frames > max_frames:
        return (
            f"{name} has {frames} frames; the limit is {max_frames} "
            f"({MAX_CLIP_SECONDS:g} s, the timestamps' range)"
        )
    values = item.features if item.features is not None else item.wave
    limit = FEATURE_LIMIT if item.features is not None else AUDIO_LIMIT
    if not np.isfinite(values).all():
        return f"{name} contains NaN or infinite values"
    if float(np.max(np.abs(values))) > limit:
        return f"{name} values must lie within [-{limit:g}, {limit:g}]"
    if rules is not None:
        ids = item.input_ids
        if int(ids.min()) < 0 or int(ids.max()) >= rules.vocab_size:
            return f"INPUT_IDS must lie in [0, {rules.vocab_size}) (the model's vocabulary)"
        pads = int(np.count_nonzero(ids == rules.audio_token_id))
        expected = audio_tokens_of_frames(frames)
        if pads != expected:
            return (
                f"INPUT_IDS has {pads} audio tokens (id {rules.audio_token_id}) but {name}'s "
                f"{frames} frames make {expected}"
            )
    return None


def fatal_device_error(error: BaseException) -> bool:
    """Whether ``error`` leaves the device unusable for this process: a CUDA error such as a
    device-side assert poisons the process's CUDA context, so every later forward would fail
    while readiness stays green. Out-of-memory is not fatal (the pass is split and retried)."""
    if isinstance(error, torch.OutOfMemoryError):
        return False
    accelerator_error = getattr(torch, "AcceleratorError", None)
    if accelerator_error is not None and isinstance(error, accelerator_error):
        return True
    text = str(error)
    return "CUDA error" in text or "device-side assert" in text or "CUBLAS_STATUS" in text


@dataclass(frozen=True)
class SlotResult:
    """The core's answer for one clip: per ``<timestamp>`` slot, in prompt order."""

    bins: np.ndarray  # int32 [slots]: upstream's argmax bin (x timestamp_segment_time = ms)
    confidence: np.ndarray  # float32 [slots]: probability mass within one bin of it (scores.py)


class Forward(Protocol):
    """One forward pass over a batch of clips; raises if the pass fails."""

    def __call__(self, batch: Sequence[CoreInput]) -> list[SlotResult]: ...


class ForwardObserver(Protocol):
    """Receives the timing of each successful forward pass (for metrics)."""

    def forward_done(self, batch_size: int, forward_s: float, postprocess_s: float) -> None: ...


def pad_frames(clip_features: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Clips' log-mel frames [mel_bins, frames] as one zero-padded float32 batch
    [clips, mel_bins, most frames] with its mask [clips, most frames] (1 on each clip's frames)."""
    max_frames = max(int(f.shape[-1]) for f in clip_features)
    mel_bins = int(clip_features[0].shape[0])
    features = torch.zeros((len(clip_features), mel_bins, max_frames), dtype=torch.float32)
    mask = torch.zeros((len(clip_features), max_frames), dtype=torch.long)
    for b, clip in enumerate(clip_features):
        frames = int(clip.shape[-1])
        features[b, :, :frames] = clip
        mask[b, :frames] = 1
    return features, mask


class ModelForward:
    """The real forward: ``model.thinker`` once over a pass of clips.

    ``packed_decoder`` (the default): the clips laid end to end in one sequence, attention
    within each clip, the head at the ``<timestamp>`` rows only (:mod:`.packed_decoder`), the
    audio encoded by the packed encoder when it is installed (no frame padding either); one
    copy to the host per pass. Otherwise upstream's forward over a left-padded batch.

    Clips that come as waveforms get their log-mel frames here, one clip at a time (as upstream's
    processor makes them for a lone clip), from ``feature_extractor`` on the model's device."""

    def __init__(
        self,
        model: Any,
        pad_token_id: int,
        feature_extractor: Any = None,
        packed_decoder: bool = True,
    ) -> None:
        self.model = model
        self.device = model.device
        self.dtype = model.dtype
        self.pad_token_id = pad_token_id
        self.timestamp_token_id = int(model.config.timestamp_token_id)
        self.audio_token_id = int(model.config.thinker_config.audio_token_id)
        self.feature_extractor = feature_extractor
        self.packed_decoder = packed_decoder

    def features_of(self, item: CoreInput) -> torch.Tensor:
        """The clip's log-mel frames [mel_bins, frames] (float32, on the CPU)."""
        if item.features is not None:
            return torch.from_numpy(item.features)
        if self.feature_extractor is None:
            raise RuntimeError("this core was built without a feature extractor: send FEATURES")
        out = self.feature_extractor(
            item.wave,
            sampling_rate=MODEL_SAMPLE_RATE,
            padding=True,
            truncation=False,
            return_attention_mask=True,
            return_tensors="pt",
            device=str(self.device),
        )
        return out["input_features"][0]

    @torch.inference_mode()
    def __call__(self, batch: Sequence[CoreInput]) -> list[SlotResult]:
        if self.packed_decoder:
            return self._packed(batch)
        return self._padded(batch)

    def _audio_features(self, clip_features: list[torch.Tensor]) -> torch.Tensor:
        """The clips' audio encodings concatenated, as ``get_audio_features`` returns them: the
        packed encoder straight from each clip's frames when it is installed, else upstream's
        per-clip loop over a zero-padded batch."""
        thinker = self.model.thinker
        if packed_encoder_installed(thinker):
            return encode_packed(
                thinker.audio_tower, clip_features, installed_encoder_attention(thinker)
            )
        features, feature_mask = pad_frames(clip_features)
        return thinker.get_audio_features(
            features.to(self.device, self.dtype),
            feature_attention_mask=feature_mask.to(self.device),
        )

    def _packed(self, batch: Sequence[CoreInput]) -> list[SlotResult]:
        layout = decoder_layout(
            [it.input_ids for it in batch], self.audio_token_id, self.timestamp_token_id
        )
        clip_features = [self.features_of(it) for it in batch]
        for k, (pads, clip) in enumerate(zip(layout.audio_counts, clip_features, strict=True)):
            made = audio_tokens_of_frames(int(clip.shape[-1]))
            if pads != made:  # its encoding would spill into a batch-mate's audio tokens
                raise ValueError(
                    f"clip {k} of the pass has {pads} audio tokens but its frames make {made}"
                )
        audio = self._audio_features(clip_features)
        bins, confidence = slot_predictions(decode_packed(self.model.thinker, layout, audio))
        # The pass's one copy to the host: bins and confidences (bit for bit) in one int32 tensor.
        both = torch.stack([bins.to(torch.int32), confidence.view(torch.int32)])
        host = both.to("cpu").numpy()
        return [
            SlotResult(bins=b, confidence=c.view(np.float32))
            for b, c in zip(split_slots(layout, host[0]), split_slots(layout, host[1]), strict=True)
        ]

    def _padded(self, batch: Sequence[CoreInput]) -> list[SlotResult]:
        size = len(batch)
        max_tokens = max(it.tokens for it in batch)
        features, feature_mask = pad_frames([self.features_of(it) for it in batch])
        input_ids = torch.full((size, max_tokens), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((size, max_tokens), dtype=torch.long)
        for b, it in enumerate(batch):
            n = it.tokens
            input_ids[b, max_tokens - n :] = torch.from_numpy(it.input_ids.astype(np.int64))
            attention_mask[b, max_tokens - n :] = 1  # left padding, as the processor pads
        input_ids = input_ids.to(self.device)
        logits = self.model.thinker(
            input_ids=input_ids,
            attention_mask=attention_mask.to(self.device),
            input_features=features.to(self.device, self.dtype),
            feature_attention_mask=feature_mask.to(self.device),
            use_cache=False,  # one pass, no generation: a KV cache would only cost memory
        ).logits
        out = []
        for b in range(size):
            bins, confidence = slot_predictions(logits[b][input_ids[b] == self.timestamp_token_id])
            out.append(
                SlotResult(
                    bins=bins.to("cpu").numpy().astype(np.int32),
                    confidence=confidence.to("cpu").numpy().astype(np.float32),
                )
            )
        return out


class CoreRunner:
    """Runs the core's requests through ``forward`` in length-bucketed passes.

    A pass that fails (for example out of memory) is split in halves and retried, so one oversized
    batch costs only the clips that fail on their own.
    """

    def __init__(
        self,
        forward: Forward,
        settings: CoreSettings,
        observer: ForwardObserver | None = None,
        is_cuda: bool = False,
        oom_above_tokens: int = 0,
    ) -> None:
        self.forward = forward
        self.settings = settings
        # Fault injection (Simulation.simulate_oom_above_tokens): passes with more padded tokens
        # raise an out-of-memory error, so CPU tests exercise the split-and-retry path.
        self.oom_above_tokens = oom_above_tokens
        self.observer = observer
        self.is_cuda = is_cuda

    def plan(self, items: Sequence[CoreInput]) -> list[list[int]]:
        s = self.settings
        return plan_batches(
            [it.tokens for it in items],
            max_batch=s.max_forward_batch,
            max_tokens=s.max_forward_tokens,
            ratio=s.bucket_ratio,
        )

    def run(
        self, items: Sequence[CoreInput], on_batch: Callable[[int], None] | None = None
    ) -> list[SlotResult | Exception]:
        """Per item, its slots or the error its forward pass met."""
        results: list[SlotResult | Exception | None] = [None] * len(items)
        for group in self.plan(items):
            self._run_group(items, group, results, on_batch)
        return [r if r is not None else RuntimeError("not computed") for r in results]

    def _run_group(
        self,
        items: Sequence[CoreInput],
        group: list[int],
        results: list[SlotResult | Exception | None],
        on_batch: Callable[[int], None] | None,
    ) -> None:
        started = time.perf_counter()
        try:
            batch = [items[i] for i in group]
            limit = self.oom_above_tokens
            padded = len(batch) * max(it.tokens for it in batch)
            if limit and padded > limit:
                raise torch.OutOfMemoryError(
                    f"simulated out of memory: {len(batch)} clips, {padded} padded tokens > {limit}"
                )
            out = self.forward(batch)
            if len(out) != len(batch):
                raise RuntimeError(f"forward returned {len(out)} results for {len(batch)} clips")
        except Exception as e:
            if fatal_device_error(e):  # the device is gone for this process: no retries
                for i in group:
                    results[i] = e
                return
            if self.is_cuda:
                torch.cuda.empty_cache()
            if len(group) == 1:
                results[group[0]] = e
                return
            half = len(group) // 2
            self._run_group(items, group[:half], results, on_batch)
            self._run_group(items, group[half:], results, on_batch)
            return
        if self.observer is not None:
            self.observer.forward_done(len(group), time.perf_counter() - started, 0.0)
        if on_batch is not None:
            on_batch(len(group))
        for i, result in zip(group, out, strict=True):
            results[i] = result


Outcome = SlotResult | Exception


class NoResult(RuntimeError):
    """The forward answered fewer clips than it was given: this one got nothing."""

    def __init__(self) -> None:
        super().__init__("forward produced no result")


class PassLog:
    """A :class:`ForwardObserver` that keeps what the device thread observes until the event
    loop hands it on (:meth:`flush`): the device thread never waits for the metrics."""

    def __init__(self, target: ForwardObserver) -> None:
        self.target = target
        self._lock = threading.Lock()
        self._passes: list[tuple[int, float, float]] = []

    def forward_done(self, batch_size: int, forward_s: float, postprocess_s: float) -> None:
        with self._lock:
            self._passes.append((batch_size, forward_s, postprocess_s))

    def flush(self) -> None:
        with self._lock:
            passes, self._passes = self._passes, []
        for batch_size, forward_s, postprocess_s in passes:
            self.target.forward_done(batch_size, forward_s, postprocess_s)


def clips_held(max_forward_batch: int) -> int:
    """How many clips one core instance takes from Triton at once: its running pass and one
    more pass's worth waiting. With one clip per pass (CPU placements) it holds only the clip
    it runs (its ``execute()`` returns when that clip is answered): the others wait in Triton's
    queue, where whichever instance frees up first takes them, so a short clip never waits
    behind a long window at a busy instance while another instance idles."""
    return 1 if max_forward_batch <= 1 else 2 * max_forward_batch


def cpu_instances(model_config: dict) -> int:
    """How many CPU instances a model configuration (Triton's JSON form) asks for."""
    groups = model_config.get("instance_group") or [{}]
    return sum(
        int(group.get("count", 1))
        for group in groups
        if group.get("kind", "KIND_CPU") in ("KIND_CPU", "KIND_AUTO")
    )


def forward_threads(available: int, instances: int) -> int:
    """Torch threads for each of ``instances`` forward instances on the CPU that share
    ``available`` threads: a share each, at least one.

    Every instance running torch with all the cores oversubscribed them: on two cores with two
    forward instances, 5 s requests during a long recording took 3.2-3.7x their idle p95, 1.56x
    with one thread each (the tiny checkpoint trained on synthetic speech, ``bench-shape``).
    """
    return max(1, available // max(1, instances))


class DeviceQueue:
    """Clips waiting for one device, and the thread that runs their forward passes.

    :meth:`submit` returns as soon as the clip is queued (once fewer than ``max_held`` clips are
    held), so the model's ``execute()`` can return to Triton, which copies in the next clips
    while the device works. Whenever the device is free, the next pass takes every clip waiting
    (up to ``max_pass``): a lone clip starts at once and clips arriving during a pass share the
    next.
    ``run`` runs on the device thread and answers, per clip, its slots or its error; each clip's
    future gets its outcome on the event loop, then ``after_pass`` runs there. ``on_start`` gets
    each clip's wait for the device (seconds) as its pass starts, on the loop. ``thread_setup``
    runs on the device thread before its first pass.
    """

    def __init__(
        self,
        run: Callable[[list[CoreInput]], list[Outcome]],
        max_pass: int,
        max_held: int,
        after_pass: Callable[[], None] | None = None,
        on_start: Callable[[list[float]], None] | None = None,
        thread_setup: Callable[[], None] | None = None,
    ) -> None:
        if max_pass < 1 or max_held < 1:
            raise ValueError(f"max_pass and max_held must be >= 1, got {max_pass}, {max_held}")
        self._run = run
        self.max_pass = max_pass
        self._after_pass = after_pass
        self._on_start = on_start
        self._room = asyncio.Semaphore(max_held)
        self._waiting: deque[tuple[CoreInput, asyncio.Future, float]] = deque()
        self._driver: asyncio.Task | None = None
        # thread_setup runs once on the device thread before its first pass: per-thread settings
        # (OpenMP keeps torch's thread count per thread) must be made there.
        self._device = ThreadPoolExecutor(1, thread_name_prefix="device", initializer=thread_setup)
        self.passes = 0  # passes started (for tests and diagnostics)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def submit(self, item: CoreInput) -> asyncio.Future:
        """Queue ``item``; the returned future resolves to its outcome (never raises)."""
        await self._room.acquire()
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        future.add_done_callback(lambda _: self._room.release())
        self._waiting.append((item, future, time.perf_counter()))
        if self._driver is None:
            self._driver = loop.create_task(self._drive())
        return future

    async def room(self) -> None:
        """Wait until the instance holds fewer than ``max_held`` clips: until it can take another
        clip. ``execute()`` returns only then, so while the instance is full Triton counts it
        busy and hands new clips to another instance (or keeps them in its queue)."""
        await self._room.acquire()
        self._room.release()

    async def _drive(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._waiting:
                take = min(len(self._waiting), self.max_pass)
                batch = [self._waiting.popleft() for _ in range(take)]
                self.passes += 1
                running = loop.run_in_executor(
                    self._device, self._run, [item for item, _, _ in batch]
                )
                if self._on_start is not None:
                    now = time.perf_counter()
                    self._on_start([now - queued for _, _, queued in batch])
                try:
                    outcomes = await running
                except Exception as e:  # the run itself failed: every clip gets the error
                    outcomes = [e] * len(batch)
                for k, (_, future, _) in enumerate(batch):
                    outcome = outcomes[k] if k < len(outcomes) else NoResult()
                    if not future.done():
                        future.set_result(outcome)
                if self._after_pass is not None:
                    self._after_pass()
                # The loop goes straight on to the next pass: the futures' callbacks (sending
                # the responses) run while the device thread works on it.
        finally:
            self._driver = None

    def close(self) -> None:
        """Let the device thread end after its current pass (the model is being unloaded)."""
        self._device.shutdown(wait=False)
