"""Batch inputs: a folder of audio files with same-stem ``.txt`` transcripts, or a JSONL manifest.

A manifest has one JSON object per line::

    {"audio": "clips/a.wav", "text": "Hello world.", "language": "en"}
    {"audio": "clips/b.flac", "text_file": "clips/b.txt", "id": "b-take2"}
    {"audio": "clips/c.mp3", "context": "Names: Ada Lovelace."}

An item without a transcript (no ``text`` or ``text_file``; in a folder, an audio file without
``STEM.txt``) is sent without one: a server with the ASR model (``./scripts/serve --asr``)
transcribes it, then aligns the transcript; a server without refuses that item alone. Its
``language`` is optional (absent or ``auto``: detected) and ``context`` (names, terms) guides the
transcription; ``context`` beside a transcript is refused.

``audio`` and ``text_file`` are relative to the manifest's folder and must stay inside it (an
absolute path or one that leads out with ``..`` or a link is refused: a manifest from elsewhere
must not make the CLI send, say, ``~/.ssh/id_rsa`` to a server as a transcript). A manifest of
one's own that names files elsewhere (a dataset under ``/data``) is read with ``root`` set to the
folder that holds them (``qwen3-align --manifest-root /data``): paths, absolute ones too, may then
point anywhere inside ``root``. ``language``
falls back to the command line's ``--language`` (an item with a transcript needs one); ``id``
(default: the audio file's stem) names the
output file, must be unique and holds no path separator or control character. A malformed
manifest is rejected as a whole (:class:`ManifestError`), before any work starts; an item whose
files are missing is kept and fails on its own when processed, so the rest of the batch still runs.

A folder's files must stay inside it too: an audio file or ``STEM.txt`` that is a link leading
out of the folder, or that is not a regular file (a FIFO, a device, a folder), is refused when its
item is processed (:class:`UnsafePathError`), and the rest of the batch goes on.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import sys
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from .audio import AUDIO_SUFFIXES

MANIFEST_KEYS = frozenset({"audio", "text", "text_file", "language", "id", "context"})


class ManifestError(ValueError):
    """A batch input that cannot be used at all (bad JSON, missing keys, clashing ids)."""


class UnsafePathError(ValueError):
    """A batch item's file that leads out of its folder or is not a regular file: refused."""


@dataclass(frozen=True)
class BatchItem:
    """One file to align; at most one of ``text`` and ``text_file`` is set, and with neither the
    server transcribes the audio (``language`` may then be ``None``: detected)."""

    key: str  # names the output file: KEY + the format's suffix
    audio: Path
    language: str | None
    text: str | None = None
    text_file: Path | None = None
    origin: str = ""  # where the item came from, for messages ("manifest.jsonl:3")
    within: Path | None = None  # folder mode: the folder that the item's files must stay in
    context: str | None = None  # without a transcript: names, terms guiding the transcription

    @property
    def transcribed(self) -> bool:
        """Whether the item has no transcript, so that the server is to transcribe it."""
        return self.text is None and self.text_file is None

    def transcript(self) -> str | None:
        """The transcript, read from ``text_file`` when it is not inline; ``None`` for an item
        without one (:attr:`transcribed`).

        Raises ``OSError`` or ``UnicodeDecodeError`` when the file cannot be read, and
        :class:`UnsafePathError` (folder mode) when it leads out of the folder or is not a
        regular file.
        """
        if self.text is not None:
            return self.text
        if self.text_file is None:
            return None
        if self.within is not None:
            return read_transcript_within(self.text_file, self.within)
        return read_transcript(self.text_file)

    def check_audio(self) -> None:
        """Folder mode: raise :class:`UnsafePathError` when the audio file leads out of the
        folder or is not a regular file. A missing one passes: decoding it reports that."""
        if self.within is None:
            return
        with contextlib.suppress(FileNotFoundError):
            _confined(self.audio, self.within)


def read_transcript(path: str | Path) -> str:
    """Read a UTF-8 transcript file (``-``: standard input).

    A byte-order mark and the line breaks at the end are dropped; nothing else changes, so the
    character spans of the result are also offsets into the file (in characters, after any BOM).
    """
    if str(path) == "-":
        stream = getattr(sys.stdin, "buffer", None)
        text = stream.read().decode("utf-8") if stream is not None else sys.stdin.read()
    else:
        text = Path(path).read_text(encoding="utf-8")
    return text.removeprefix("\ufeff").rstrip("\r\n")


def _resolves_inside(path: Path, folder: Path) -> Path | None:
    """The real path of ``path`` (links resolved) when it lies inside ``folder``, else None."""
    try:
        real = path.resolve()
    except RuntimeError:  # a loop of links (Python < 3.13)
        return None
    return real if real.is_relative_to(folder.resolve()) else None


def _confined(path: Path, folder: Path) -> tuple[Path, os.stat_result]:
    """The real path and status of ``path``, a regular file inside ``folder``.

    Raises :class:`UnsafePathError` for a path that leads out of ``folder`` (a link to
    ``/etc/passwd`` or ``../secret.txt``) or that is not a regular file, and ``OSError`` (with
    ``path`` as its file name) for one that cannot be looked up, a missing one among them.
    """
    real = _resolves_inside(path, folder)
    if real is None:
        raise UnsafePathError(f"{path} is a link that leads out of {folder}; refused")
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        raise UnsafePathError(f"{path} is not a regular file; refused")
    return real, info


def read_transcript_within(path: Path, folder: Path) -> str:
    """:func:`read_transcript` for a file that must be a regular file inside ``folder``.

    Raises :class:`UnsafePathError` when it is not (see :func:`_confined`). The file read is the
    one checked: its real path is opened without following a link or waiting on a FIFO, and a
    file swapped in between is refused.
    """
    real, info = _confined(path, folder)
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    fd = os.open(real, flags | getattr(os, "O_CLOEXEC", 0))
    with open(fd, encoding="utf-8") as handle:  # text mode, as Path.read_text reads
        opened = os.fstat(handle.fileno())
        if not stat.S_ISREG(opened.st_mode) or (opened.st_dev, opened.st_ino) != (
            info.st_dev,
            info.st_ino,
        ):
            raise UnsafePathError(f"{path} changed while it was being read; refused")
        text = handle.read()
    return text.removeprefix("\ufeff").rstrip("\r\n")


def items_from_folder(folder: Path, language: str | None) -> list[BatchItem]:
    """Every audio file directly in ``folder`` (sorted), with ``STEM.txt`` beside it as its
    transcript. An audio file without one is listed without a transcript (the server is to
    transcribe it); one whose audio or transcript leads out of ``folder`` fails when processed
    (see :class:`UnsafePathError`). ``language`` is required when any item has a transcript."""
    if not folder.is_dir():
        raise ManifestError(f"{folder} is not a folder")
    audio_files = sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES
    )
    if not audio_files:
        raise ManifestError(f"{folder} holds no audio files ({', '.join(AUDIO_SUFFIXES)})")
    items: list[BatchItem] = []
    seen: dict[str, Path] = {}
    for audio in audio_files:
        if audio.stem in seen:
            raise ManifestError(
                f"{audio.name} and {seen[audio.stem].name} would write the same output; "
                "rename one or list them in a manifest with distinct ids"
            )
        seen[audio.stem] = audio
        text_file = audio.with_suffix(".txt")
        # Anything at STEM.txt (a link, a FIFO) is the item's transcript, refused when unsafe.
        has_text = text_file.is_symlink() or text_file.exists()
        items.append(
            BatchItem(
                key=audio.stem,
                audio=audio,
                language=language or None,
                text_file=text_file if has_text else None,
                origin=str(audio),
                within=folder,
            )
        )
    if not language and not all(item.transcribed for item in items):
        raise ManifestError(
            "--language is required for a folder with transcripts (STEM.txt); only audio "
            "without one is transcribed in the language detected"
        )
    return items


def _field(entry: dict[str, object], key: str, where: str) -> str | None:
    value = entry.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ManifestError(f"{where}: {key!r} must be a non-empty string")
    return value


def _inside(base: Path, name: str, key: str, where: str, root: Path | None = None) -> Path:
    """``base / name``, refused unless it stays inside ``root`` (links resolved). Without
    ``root`` it must be relative and stay inside ``base``, the manifest's folder."""
    if "\0" in name:
        raise ManifestError(f"{where}: {key!r} holds a NUL character")
    path = Path(name)
    if root is None and (path.is_absolute() or path.drive):
        raise ManifestError(
            f"{where}: {key!r} is absolute ({name}); give it relative to the manifest's folder "
            "(or allow a folder with --manifest-root)"
        )
    joined = base / path
    allowed = base if root is None else root
    if _resolves_inside(joined, allowed) is None:
        outside = "the manifest's folder" if root is None else f"--manifest-root {root}"
        raise ManifestError(f"{where}: {key!r} ({name}) leads out of {outside}")
    return joined


def items_from_manifest(
    manifest: Path, language: str | None, root: Path | None = None
) -> list[BatchItem]:
    """Parse a JSONL manifest (see the module docstring); blank lines are skipped. ``root``: the
    folder its paths may point into (default: the manifest's own folder, relative paths only)."""
    try:
        lines = manifest.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ManifestError(f"cannot read manifest {manifest}: {e}") from e
    base = manifest.parent
    items: list[BatchItem] = []
    seen: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        where = f"{manifest}:{number}"
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as e:
            raise ManifestError(f"{where}: not valid JSON ({e.msg})") from None
        if not isinstance(entry, dict):
            raise ManifestError(f"{where}: each line must be a JSON object")
        unknown = set(entry) - MANIFEST_KEYS
        if unknown:
            raise ManifestError(
                f"{where}: unknown key(s) {', '.join(sorted(unknown))}; "
                f"known: {', '.join(sorted(MANIFEST_KEYS))}"
            )
        audio = _field(entry, "audio", where)
        if audio is None:
            raise ManifestError(f"{where}: 'audio' is required")
        text = entry.get("text")
        if text is not None and not isinstance(text, str):
            raise ManifestError(f"{where}: 'text' must be a string")
        text_file = _field(entry, "text_file", where)
        if text is not None and text_file is not None:
            raise ManifestError(
                f"{where}: give at most one of 'text' and 'text_file' (neither: the server "
                "transcribes the audio)"
            )
        context = _field(entry, "context", where)
        has_transcript = text is not None or text_file is not None
        if context is not None and has_transcript:
            raise ManifestError(
                f"{where}: 'context' guides the transcription: it is for items without "
                "'text' or 'text_file'"
            )
        item_language = _field(entry, "language", where) or language
        if not item_language and has_transcript:
            raise ManifestError(f"{where}: no 'language', and no --language to fall back on")
        audio_path = _inside(base, audio, "audio", where, root)
        key = _field(entry, "id", where) or audio_path.stem
        if (
            "/" in key
            or "\\" in key
            or key in (".", "..")
            or any(unicodedata.category(c) == "Cc" for c in key)
        ):
            raise ManifestError(f"{where}: id {key!r} cannot name a file")
        if key in seen:
            raise ManifestError(
                f"{where}: output name {key!r} is already used by {seen[key]}; "
                'give one of them an "id"'
            )
        seen[key] = where
        items.append(
            BatchItem(
                key=key,
                audio=audio_path,
                language=item_language or None,
                text=text,
                text_file=(
                    None
                    if text_file is None
                    else _inside(base, text_file, "text_file", where, root)
                ),
                origin=where,
                context=context,
            )
        )
    if not items:
        raise ManifestError(f"{manifest} lists no items")
    return items


def load_items(
    source: Path, language: str | None, manifest_root: Path | None = None
) -> list[BatchItem]:
    """Items from a folder or a JSONL manifest, whichever ``source`` is."""
    if source.is_dir():
        return items_from_folder(source, language)
    if not source.exists():
        raise ManifestError(f"{source} does not exist")
    return items_from_manifest(source, language, manifest_root)
