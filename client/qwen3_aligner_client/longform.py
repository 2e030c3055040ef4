"""Aligning a long recording with its cues in pieces of a few minutes, then joining the pieces.

The server takes a whole recording with all its cues in one request, but then answers only once
everything is done. Splitting the cues into groups of at most :data:`GROUP_SECONDS` of audio and
sending each group with its slice of the audio as its own request (all in flight at once, so the
server's batcher runs them together) gives the same words and lets a caller report progress.

Each slice reaches :data:`SLICE_PAD_SECONDS` (twice the server's default 1 s cue margin) past its
first and last cue, but never into a neighbouring group's cues, so each cue is widened by the
same margin as in one whole-recording request. Times in a group's answer count from its slice's
first sample; :func:`merge_alignments` shifts them back and rebuilds the ``text`` of one request
(all cue texts joined by ``"\\n"``) with every character span moved to match.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from .audio import AudioSource, load_audio
from .client import AlignerClient, AlignItem, RequestRejectedError
from .results import AlignedWord, Alignment
from .segments import Segment, SubtitleError

GROUP_SECONDS = 300.0  # most audio one request of a cue file covers
SLICE_PAD_SECONDS = 2.0  # audio kept before a group's first cue and after its last
NO_WORDS = "no alignable words"  # the server's reason for a group of cues like "♪ ♪" only


@dataclass(frozen=True)
class CueGroup:
    """Cues sent in one request, with the slice ``start`` to ``end`` seconds of audio."""

    start: float  # seconds into the recording where the slice begins
    end: float  # seconds where it ends
    cues: tuple[Segment, ...]  # times from the start of the recording

    @property
    def text(self) -> str:
        """The group's cue texts joined by newlines, as the server will echo them."""
        return "\n".join(c.text for c in self.cues)


def plan_groups(
    cues: Sequence[Segment],
    duration: float,
    max_seconds: float = GROUP_SECONDS,
    pad: float = SLICE_PAD_SECONDS,
) -> list[CueGroup]:
    """Split tidy cues (in order, disjoint) into groups of at most ``max_seconds`` of audio.

    A group takes cues while its first cue's start to its last cue's end stays within
    ``max_seconds`` (a single cue is never split). Its slice reaches ``pad`` seconds beyond its
    cues, bounded by the neighbouring groups' cues and by the recording (``duration`` seconds).
    Cue ends past the recording are cut at its end; a cue that starts at or after it raises
    :class:`SubtitleError` (the subtitles are probably for another cut of the recording).
    """
    kept: list[Segment] = []
    for cue in cues:
        if cue.start >= duration:
            raise SubtitleError(
                f"cue {cue.start:.3f}-{cue.end:.3f} s ({cue.text[:40]!r}) starts after the end "
                f"of the {duration:.2f} s of audio"
            )
        kept.append(Segment(cue.start, min(cue.end, duration), cue.text))
    runs: list[list[Segment]] = []
    for cue in kept:
        if runs and cue.end - runs[-1][0].start <= max_seconds:
            runs[-1].append(cue)
        else:
            runs.append([cue])
    groups: list[CueGroup] = []
    for k, run in enumerate(runs):
        before = runs[k - 1][-1].end if k > 0 else 0.0
        after = runs[k + 1][0].start if k + 1 < len(runs) else duration
        start = max(before, run[0].start - pad, 0.0)
        end = min(after, run[-1].end + pad, duration)
        groups.append(CueGroup(start, end, tuple(run)))
    return groups


def slice_audio(
    wave: np.ndarray, sample_rate: int, group: CueGroup
) -> tuple[np.ndarray, float, list[Segment]]:
    """The group's audio slice, the exact time of its first sample, and its cues in slice time.

    The slice starts at the sample at or before ``group.start`` and ends at or after
    ``group.end``, so every cue lies inside it.
    """
    first = max(0, math.floor(group.start * sample_rate))
    last = min(wave.shape[0], math.ceil(group.end * sample_rate))
    offset = first / sample_rate
    cues = [
        Segment(max(0.0, c.start - offset), max(0.0, c.end - offset), c.text) for c in group.cues
    ]
    return wave[first:last], offset, cues


def shift_words(words: Sequence[AlignedWord], seconds: float, chars: int) -> list[AlignedWord]:
    """The words ``seconds`` later (rounded to the microsecond) with their spans ``chars`` on."""

    def move(value: int | None) -> int | None:
        return None if value is None else value + chars

    return [
        replace(
            w,
            start=round(w.start + seconds, 6),
            end=round(w.end + seconds, 6),
            char_start=move(w.char_start),
            char_end=move(w.char_end),
            display_start=move(w.display_start),
            display_end=move(w.display_end),
        )
        for w in words
    ]


def merge_alignments(parts: Sequence[tuple[float, Alignment]], duration: float) -> Alignment:
    """Join the alignments of consecutive groups into the alignment of the whole recording.

    ``parts`` are ``(offset seconds, alignment)`` in recording order. The result's ``text`` is
    the parts' texts joined by ``"\\n"`` (for cue requests: all cue texts joined by newlines),
    each word is moved by its part's offset and its spans by the characters before its part, and
    ``duration`` is the recording's. The language is the first part's.
    """
    if not parts:
        raise ValueError("nothing to merge")
    words: list[AlignedWord] = []
    texts: list[str] = []
    chars = 0
    for offset, alignment in parts:
        words.extend(shift_words(alignment.words, offset, chars))
        texts.append(alignment.text)
        chars += len(alignment.text) + 1  # the "\n" between parts
    return Alignment(
        language=parts[0][1].language,
        duration=duration,
        text="\n".join(texts),
        words=tuple(words),
    )


def align_groups(
    client: AlignerClient,
    wave: np.ndarray,
    sample_rate: int,
    groups: Sequence[CueGroup],
    language: str,
    concurrency: int = 8,
    on_done: Callable[[CueGroup], None] | None = None,
) -> Alignment:
    """Align every group as its own request, up to ``concurrency`` at once, and merge them.

    ``on_done`` is called with each group as its answer arrives (in any order), for progress.
    A group whose cues hold no alignable word (``♪ ♪``) contributes its text and no words. The
    first other failure stops the rest and is raised (the errors of
    :meth:`AlignerClient.align`); so is the server's refusal when no group has any word.
    """
    items = []
    offsets = []
    for index, group in enumerate(groups):
        piece, offset, cues = slice_audio(wave, sample_rate, group)
        offsets.append(offset)
        items.append(AlignItem((piece, sample_rate), "", language, key=index, segments=cues))
    found: dict[int, Alignment] = {}
    wordless: dict[int, Exception] = {}
    results = client.align_many(items, concurrency=max(1, min(concurrency, len(items))))
    try:
        for result in results:
            if result.error is not None:
                if isinstance(result.error, RequestRejectedError) and NO_WORDS in str(result.error):
                    wordless[result.index] = result.error
                else:
                    raise result.error
            else:
                assert result.alignment is not None
                found[result.index] = result.alignment
            if on_done is not None:
                on_done(groups[result.index])
    finally:
        results.close()  # cancels the requests not yet sent when one failed
    if not found:
        raise next(iter(wordless.values()))
    language_name = next(iter(found.values())).language
    parts = [
        (
            offsets[k],
            found.get(k) or Alignment(language_name, 0.0, group.text, ()),
        )
        for k, group in enumerate(groups)
    ]
    return merge_alignments(parts, wave.shape[0] / sample_rate)


def align_cues(
    client: AlignerClient,
    audio: AudioSource,
    cues: Sequence[Segment],
    language: str,
    concurrency: int = 8,
    max_seconds: float = GROUP_SECONDS,
) -> Alignment:
    """Align a recording of any length to its tidy cues, a few minutes per request.

    ``cues`` come from :func:`~qwen3_aligner_client.segments.parse_subtitles` or
    :func:`~qwen3_aligner_client.segments.tidy_cues`. The result is what one request with all
    cues would give: words over the whole recording, ``text`` the cue texts joined by ``"\\n"``.
    """
    wave, sample_rate = load_audio(audio)
    groups = plan_groups(cues, wave.shape[0] / sample_rate, max_seconds)
    return align_groups(client, wave, sample_rate, groups, language, concurrency)
