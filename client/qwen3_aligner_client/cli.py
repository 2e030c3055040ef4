"""``qwen3-align``: align a transcript to audio with a Triton server from the command line.

One file::

    qwen3-align speech.wav transcript.txt --language en --format srt -o speech.srt
    qwen3-align speech.wav transcript.txt --language en -o speech.html   # see and hear it
    qwen3-align speech.wav lyrics.txt -l en -f all -o out/speech --cues lines   # every format

No transcript: a server started with ``./scripts/serve --asr`` transcribes the audio (language
detected unless ``--language`` forces one; ``--context`` names terms to expect), then aligns the
transcript, which is written beside the output (``speech.txt`` here; ``--transcript-out PATH``
chooses)::

    qwen3-align speech.wav -o speech.srt
    qwen3-align interview.mp3 --context "Names: Ada Lovelace, Babbage." -l en -o interview.json

A long recording with its subtitles (SRT or WebVTT: each cue guides where its words go; sent a
few minutes per request, with a progress bar)::

    qwen3-align lecture.mp3 lecture.srt --language en -o lecture.words.srt

A folder (audio files with same-stem .txt transcripts; those without one are transcribed by a
server with the ASR model, their transcript written as ID.txt in --out-dir) or a JSONL
manifest::

    qwen3-align --batch clips/ --language en --out-dir aligned/ --format vtt --concurrency 8

and set aside the items the aligner was unsure of (mean score below 0.5, or more than 10% of
their words' times repaired)::

    qwen3-align --batch clips/ --language en --out-dir aligned/ --flag-below 0.5

Whether the server and the model are ready::

    qwen3-align --check --url localhost:8001 --protocol grpc

Exit status: 0 success; 1 some items failed (batch) or the server failed a request; 2 bad input
or usage; 3 server unreachable; 4 server up but model not ready.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .audio import AudioError, load_audio, read_audio_file
from .batch import BatchItem, ManifestError, UnsafePathError, load_items, read_transcript
from .client import (
    DEFAULT_SEND,
    DEFAULT_TIMEOUT,
    PROTOCOLS,
    SEND_MODES,
    AlignerClient,
    AlignerError,
    AlignItem,
    ModelNotReadyError,
    RequestRejectedError,
    ServerUnreachableError,
    TranscriptionUnavailableError,
    default_url,
)
from .cues import CUE_MODES, CueOptions
from .files import write_atomic
from .longform import CueGroup, align_groups, plan_groups
from .plot import PlotOptions, require_matplotlib
from .results import Alignment
from .segments import Segment, SubtitleError, parse_subtitles, subtitle_kind
from .writers import (
    FORMATS,
    Format,
    WriteOptions,
    format_of_path,
    formats_without_audio,
    render,
    save,
)

EXIT_OK = 0
EXIT_FAILED = 1  # some batch items failed, or the server failed the request
EXIT_USAGE = 2  # bad input or usage
EXIT_UNREACHABLE = 3  # nothing answers at the server address
EXIT_NOT_READY = 4  # the server answers but the model is not ready
CHECK_TIMEOUT = 10.0  # seconds for the health calls made before aligning
DEFAULT_CONCURRENCY = 8
LONG_AUDIO_SECONDS = 180.0  # a plain transcript for longer audio shows a spinner while it waits
SPINNER_INTERVAL = 0.25  # seconds between two redraws of the spinner
DEFAULT_FLAG_REPAIRED = 0.1  # --flag-below also flags items with more of their units repaired
ALL_FORMATS = "all"  # --format all: one file in each format that needs no audio
TRANSCRIPT_SUFFIX = ".txt"  # a transcript the server made: beside the output, or ID.txt (batch)


class CliError(Exception):
    """Stops the command with a message on stderr and an exit status."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def output_formats(name: str) -> list[Format]:
    """The formats ``--format name`` writes: that one, or for ``all`` each that needs no audio."""
    return formats_without_audio() if name == ALL_FORMATS else [FORMATS[name]]


def build_parser() -> argparse.ArgumentParser:
    """The command line; see the module docstring for the three modes."""
    formats = ", ".join(FORMATS)
    parser = argparse.ArgumentParser(
        prog="qwen3-align",
        description="Align a transcript to speech with the qwen3_aligner model on Triton: "
        "word start and end times as JSON (also WhisperX's and OpenAI's verbose_json), "
        "subtitles (SRT, WebVTT, ASS karaoke, enhanced LRC), Praat TextGrid, CTM, TSV, an HTML "
        "page to see and hear the alignment, or PNG pictures. Without a transcript, a server "
        "started with ./scripts/serve --asr transcribes the audio first.",
        epilog="Without a transcript: 'qwen3-align speech.wav -o speech.srt' writes speech.srt "
        "and the server's transcript, speech.txt. Exit status: 0 success, 1 some items failed, "
        "2 bad input or usage (a server without the ASR model refuses audio without a "
        "transcript), 3 server unreachable, 4 model not ready.",
    )
    parser.add_argument("audio", nargs="?", help="audio file (WAV, FLAC, OGG, MP3; any rate)")
    parser.add_argument(
        "transcript",
        nargs="?",
        help="UTF-8 transcript file, or - for stdin; an SRT or WebVTT file (by its .srt/.vtt "
        "suffix or its content) aligns each cue's words within the cue's times; left out, the "
        "server transcribes the audio (it must run the ASR model: ./scripts/serve --asr)",
    )
    parser.add_argument(
        "-l",
        "--language",
        help="language name or code: Chinese/zh, English/en, Cantonese/yue, French/fr, "
        "German/de, Italian/it, Japanese/ja, Korean/ko, Portuguese/pt, Russian/ru, Spanish/es; "
        "required with a transcript, else optional (detected; given: forced); in batch mode, "
        "the default for items that name none",
    )
    parser.add_argument(
        "--context",
        metavar="TEXT",
        help="without a transcript: names and terms that guide the transcription (upstream's "
        "context; in batch mode, for the items without a transcript and a context of their own)",
    )
    parser.add_argument(
        "--transcript-out",
        metavar="PATH",
        help="without a transcript: write the server's transcript to PATH (default: beside -o, "
        f"its name with {TRANSCRIPT_SUFFIX} for the format's suffix, unless that file exists; "
        "none when the output goes to stdout, where the JSON formats carry it as text)",
    )
    parser.add_argument(
        "-f",
        "--format",
        choices=[*FORMATS, ALL_FORMATS],
        help=f"output format ({formats}; or all: every format but html and png, each in "
        "its own file named after -o or the item); default: from -o's suffix, else json",
    )
    parser.add_argument("-o", "--output", help="output file (default: standard output)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--batch",
        metavar="FOLDER_OR_MANIFEST",
        help="align every audio file of a folder (STEM.txt beside each; without one, "
        "transcribed first) or a JSONL manifest",
    )
    mode.add_argument(
        "--check", action="store_true", help="report whether the server and model are ready"
    )
    parser.add_argument("--out-dir", help="batch mode: folder for the output files")
    parser.add_argument(
        "--manifest-root",
        metavar="DIR",
        help="batch mode: paths in the manifest may point anywhere inside DIR, absolute ones too "
        "(default: only inside the manifest's own folder)",
    )
    parser.add_argument(
        "--flag-below",
        type=float,
        metavar="S",
        help="batch mode: report items whose mean score is below S (0-1) or whose repaired "
        "share exceeds --flag-repaired, and count them in the summary",
    )
    parser.add_argument(
        "--flag-repaired",
        type=float,
        default=DEFAULT_FLAG_REPAIRED,
        metavar="SHARE",
        help="with --flag-below: flag items with more than this share (0-1) of units whose "
        f"times the server repaired (default {DEFAULT_FLAG_REPAIRED:g})",
    )
    parser.add_argument(
        "-j",
        "--concurrency",
        type=int,
        default=DEFAULT_CONCURRENCY,
        help=f"requests in flight: files in batch mode, groups of cues for a subtitle file "
        f"(default {DEFAULT_CONCURRENCY})",
    )
    progress = parser.add_mutually_exclusive_group()
    progress.add_argument(
        "--no-progress", action="store_true", help="no progress bar or spinner on stderr"
    )
    progress.add_argument(
        "--progress",
        action="store_true",
        help="show progress on stderr even when it is not a terminal (default: only on one)",
    )
    server = parser.add_argument_group("server")
    server.add_argument(
        "--url", help="host:port of the server (default localhost:8000 http, localhost:8001 grpc)"
    )
    server.add_argument("--protocol", choices=PROTOCOLS, default="http", help="default http")
    server.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"seconds to wait for one alignment (default {DEFAULT_TIMEOUT:g})",
    )
    server.add_argument(
        "--send",
        choices=SEND_MODES,
        default=DEFAULT_SEND,
        help="how the audio travels: 'file' sends the file as it is (the server decodes WAV, "
        "FLAC, OGG, MP3), 'samples' decodes it here and sends float32 samples (several times "
        "the bytes), 'auto' the file unless the client cuts the audio (subtitle cues) or the "
        f"server cannot decode it; same alignment either way (default {DEFAULT_SEND})",
    )
    cues = parser.add_argument_group(
        "subtitle cues (srt, vtt, ass, lrc, textgrid; whisperx and verbose_json segments)"
    )
    defaults = CueOptions()
    cues.add_argument(
        "--cues",
        choices=CUE_MODES,
        default=defaults.mode,
        help="auto: group the words into cues by the limits below; lines: one cue per "
        f"non-blank line of the transcript, as written (default {defaults.mode})",
    )
    cues.add_argument(
        "--max-chars",
        type=int,
        default=defaults.max_chars_per_line,
        help=f"columns per line; CJK characters count two (default {defaults.max_chars_per_line})",
    )
    cues.add_argument(
        "--max-lines",
        type=int,
        default=defaults.max_lines,
        help=f"lines per cue (default {defaults.max_lines})",
    )
    cues.add_argument(
        "--max-duration",
        type=float,
        default=defaults.max_duration,
        help=f"seconds per cue (default {defaults.max_duration:g})",
    )
    cues.add_argument(
        "--min-duration",
        type=float,
        default=defaults.min_duration,
        help="shorter cues are stretched into the following silence "
        f"(default {defaults.min_duration:g} s)",
    )
    cues.add_argument(
        "--max-pause",
        type=float,
        default=defaults.max_pause,
        help=f"a longer silence always ends a cue (default {defaults.max_pause:g} s)",
    )
    cues.add_argument(
        "--word-timestamps",
        action="store_true",
        help="vtt: an inline timestamp where each word starts (karaoke captions)",
    )
    cues.add_argument(
        "--no-karaoke",
        dest="karaoke",
        action="store_false",
        help="ass: plain text, without the \\k karaoke tag that times each word",
    )
    plot = parser.add_argument_group("pictures (png)")
    layout = PlotOptions()
    plot.add_argument(
        "--seconds-per-row",
        type=float,
        default=layout.seconds_per_row,
        help=f"seconds of audio per row (default {layout.seconds_per_row:g})",
    )
    plot.add_argument(
        "--rows-per-page",
        type=int,
        default=layout.rows_per_page,
        help="rows per PNG file; longer recordings continue in STEM-2.png, STEM-3.png, ... "
        f"(default {layout.rows_per_page})",
    )
    return parser


@dataclass
class Settings:
    """Parsed and checked options shared by the modes."""

    url: str
    protocol: str
    timeout: float
    format: str
    cues: CueOptions
    plot: PlotOptions = field(default_factory=PlotOptions)
    send: str = DEFAULT_SEND  # one of SEND_MODES
    karaoke: bool = True  # ass: a \k tag per word
    word_timestamps: bool = False  # vtt: inline timestamps

    def client(self, timeout: float | None = None) -> AlignerClient:
        """A client for the chosen server; ``timeout`` overrides the per-request timeout."""
        return AlignerClient(
            self.url, self.protocol, timeout=timeout or self.timeout, send=self.send
        )

    def write_options(
        self, recording: str, audio: tuple[np.ndarray, int] | None = None
    ) -> WriteOptions:
        """The writers' options for one recording (``audio``: for html and png)."""
        return WriteOptions(
            cues=self.cues,
            recording=recording,
            audio=audio,
            plot=self.plot,
            karaoke=self.karaoke,
            word_timestamps=self.word_timestamps,
        )


def _settings(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Settings:
    fmt = args.format
    if fmt is None and args.output:
        detected = format_of_path(args.output)
        fmt = None if detected is None else detected.name
    try:
        cues = CueOptions(
            max_chars_per_line=args.max_chars,
            max_lines=args.max_lines,
            max_duration=args.max_duration,
            min_duration=args.min_duration,
            max_pause=args.max_pause,
            mode=args.cues,
        )
        plot = PlotOptions(seconds_per_row=args.seconds_per_row, rows_per_page=args.rows_per_page)
    except ValueError as e:
        parser.error(str(e))
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    return Settings(
        url=args.url or default_url(args.protocol),
        protocol=args.protocol,
        timeout=args.timeout,
        format=fmt or "json",
        cues=cues,
        plot=plot,
        send=args.send,
        karaoke=args.karaoke,
        word_timestamps=args.word_timestamps,
    )


def _require_ready(settings: Settings) -> None:
    """Stop with status 3 or 4 unless the server and the model are ready."""
    with settings.client(min(settings.timeout, CHECK_TIMEOUT)) as client:
        readiness = client.check()
    where = f"{settings.url} ({settings.protocol})"
    if not readiness.reachable:
        raise CliError(f"server unreachable at {where}: {readiness.error}", EXIT_UNREACHABLE)
    if not readiness.ok:
        raise CliError(f"server at {where} is up but not ready: {readiness.error}", EXIT_NOT_READY)


def _write_stdout(text: str) -> None:
    stream = getattr(sys.stdout, "buffer", None)
    if stream is not None:
        sys.stdout.flush()
        stream.write(text.encode("utf-8"))
        stream.flush()
    else:
        sys.stdout.write(text)


def run_check(settings: Settings) -> int:
    """``--check``: say whether the server and the model are ready."""
    _require_ready(settings)
    print(f"ready: server {settings.url} ({settings.protocol}), model qwen3_aligner")
    return EXIT_OK


def _progress_disabled(args: argparse.Namespace) -> bool | None:
    """tqdm's ``disable``: True with --no-progress, False with --progress, else None (only when
    stderr is a terminal)."""
    if args.no_progress:
        return True
    return False if args.progress else None


@contextlib.contextmanager
def _spinner(description: str, disable: bool | None) -> Iterator[None]:
    """Show ``description``, a spinner and the elapsed time on stderr while the body runs.

    For one long request there is nothing to count, so a background thread redraws the line
    every :data:`SPINNER_INTERVAL` seconds to show that the client is still waiting.
    """
    from tqdm import tqdm

    bar = tqdm(total=None, file=sys.stderr, disable=disable, bar_format="{desc} {elapsed} elapsed")
    if bar.disable:
        yield
        return
    stop = threading.Event()

    def spin() -> None:
        for frame in itertools.cycle("|/-\\"):
            bar.set_description_str(f"{frame} {description}", refresh=True)
            if stop.wait(SPINNER_INTERVAL):
                return

    thread = threading.Thread(target=spin, name="qwen3-align-spinner", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        bar.close()


def _read_cues(path: str, text: str) -> list[Segment] | None:
    """The tidy cues when the transcript is an SRT or WebVTT file, else None."""
    kind = subtitle_kind(path, text)
    if kind is None:
        return None
    try:
        return parse_subtitles(text, kind)
    except SubtitleError as e:
        raise CliError(f"cannot use subtitles {path}: {e}", EXIT_USAGE) from e


def _align_cues(
    client: AlignerClient,
    audio: tuple[np.ndarray, int],
    groups: list[CueGroup],
    args: argparse.Namespace,
) -> Alignment:
    """Align a subtitle file's groups of cues, each its own request, with a progress bar."""
    from tqdm import tqdm

    wave, rate = audio
    with tqdm(
        total=len(groups),
        file=sys.stderr,
        unit="group",
        desc=f"aligning {sum(len(g.cues) for g in groups)} cues",
        disable=_progress_disabled(args),
    ) as bar:
        return align_groups(
            client,
            wave,
            rate,
            groups,
            args.language,
            concurrency=args.concurrency,
            on_done=lambda group: bar.update(1),
        )


def run_single(args: argparse.Namespace, settings: Settings) -> int:
    """Align one audio file and write one output (guided by cues for a subtitle transcript).

    Without a transcript the server transcribes the audio first; its transcript is then written
    to :func:`transcript_target`'s file, if any.
    """
    text: str | None = None
    cues: list[Segment] | None = None
    transcript_out: Path | None = None
    skipped: str | None = None  # why the transcript is not written beside the output
    if args.transcript is None:
        transcript_out, skipped = transcript_target(args)
    else:
        try:
            text = read_transcript(args.transcript)
        except (OSError, UnicodeDecodeError) as e:
            raise CliError(f"cannot read transcript {args.transcript}: {e}", EXIT_USAGE) from e
        cues = _read_cues(args.transcript, text)
    # The samples are decoded here only where they are needed: to cut the recording into groups
    # of cues (unless --send file sends it whole), to picture it (html, png) or to send them.
    # Otherwise the file's header gives its length. Either way before contacting the server, so
    # that bad input is status 2.
    cut = cues is not None and settings.send != "file"
    audio: tuple[np.ndarray, int] | None = None
    try:
        if cut or settings.send == "samples" or _needs_audio(settings.format):
            audio = load_audio(args.audio)
            seconds = audio[0].shape[0] / audio[1]
        else:
            seconds = read_audio_file(args.audio).seconds
    except AudioError as e:
        raise CliError(str(e), EXIT_USAGE) from e
    groups = None
    if cues is not None:
        try:
            groups = plan_groups(cues, seconds)
        except SubtitleError as e:
            raise CliError(f"cannot use subtitles {args.transcript}: {e}", EXIT_USAGE) from e
    # One request for the whole recording: the file (the client reads it again, undecoded)
    # unless the samples are to be sent; with --send file, all cues go with it.
    source = audio if audio is not None and settings.send == "samples" else args.audio
    segments = None if groups is None else [c for g in groups for c in g.cues]
    _require_ready(settings)
    with settings.client() as client:
        try:
            if groups is not None and cut:
                assert audio is not None
                alignment = _align_cues(client, audio, groups, args)
            else:
                doing = "aligning" if text is not None else "transcribing and aligning"
                wait = (
                    _spinner(f"{doing} {seconds / 60:.1f} min of audio", _progress_disabled(args))
                    if seconds > LONG_AUDIO_SECONDS
                    else contextlib.nullcontext()
                )
                with wait:
                    alignment = client.align(
                        source, text, args.language, segments, context=args.context
                    )
        except TranscriptionUnavailableError as e:
            raise CliError(
                f"no transcript given, and the server at {settings.url} cannot transcribe: start "
                "it with ./scripts/serve --asr (it then runs the ASR model), or give the "
                f"transcript file after the audio (the server: {e.__cause__ or e})",
                EXIT_USAGE,
            ) from e
        except (AudioError, RequestRejectedError) as e:
            raise CliError(str(e), EXIT_USAGE) from e
        except ServerUnreachableError as e:
            raise CliError(str(e), EXIT_UNREACHABLE) from e
        except ModelNotReadyError as e:
            raise CliError(str(e), EXIT_NOT_READY) from e
        except AlignerError as e:
            raise CliError(f"alignment failed: {e}", EXIT_FAILED) from e
    options = settings.write_options(Path(args.audio).stem, audio)
    _write_single(alignment, settings.format, args.output, options)
    if transcript_out is not None:
        try:
            write_atomic(transcript_out, alignment.text + "\n")
        except OSError as e:
            raise CliError(f"cannot write transcript {transcript_out}: {e}", EXIT_USAGE) from e
        print(f"transcript ({alignment.language}): {transcript_out}", file=sys.stderr)
    elif skipped is not None:
        print(f"qwen3-align: note: {skipped}", file=sys.stderr)
    return EXIT_OK


def transcript_target(args: argparse.Namespace) -> tuple[Path | None, str | None]:
    """Where a single-file run without a transcript writes the server's transcript: the path,
    or None and why not (None, None: the output goes to standard output).

    ``--transcript-out PATH`` names it; it may not be the audio or the output file (status 2).
    By default it sits beside ``-o``: the output's name with ``.txt`` for the format's suffix
    (``speech.srt`` -> ``speech.txt``; with ``-f all``, ``BASE.txt``); not written when that
    path already exists (it may be a transcript of one's own), nor when the output goes to
    standard output (the JSON formats carry the transcript as ``text``).
    """
    audio = Path(args.audio)
    if args.transcript_out:
        target = Path(args.transcript_out)
        for other, what in ((audio, "the audio"), (args.output, "the output")):
            if other and _same_file(target, Path(other)):
                raise CliError(
                    f"--transcript-out {target} is {what} file; give another path", EXIT_USAGE
                )
        return target, None
    if not args.output:
        return None, None
    target = Path(_output_base(args.output) + TRANSCRIPT_SUFFIX)
    if _exists(target):  # the audio, or a transcript of one's own: never replaced unasked
        return None, (
            f"the transcript is not written to {target}, which exists "
            "(--transcript-out PATH writes it there or elsewhere)"
        )
    return target, None


def _exists(path: Path) -> bool:
    return path.is_symlink() or path.exists()


def _same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name one file (the same path, or links to one file)."""
    if a.absolute() == b.absolute():
        return True
    try:
        return a.samefile(b)
    except OSError:  # either is missing: only the same path is the same file
        return False


def _needs_audio(format_name: str) -> bool:
    return any(f.needs_audio for f in output_formats(format_name))


def _output_base(output: str) -> str:
    """``-o`` without a format's suffix: where ``--format all`` puts each format's suffix."""
    fmt = format_of_path(output)
    return output if fmt is None else output[: len(output) - len(fmt.suffix)]


def _write_single(
    alignment: Alignment, format_name: str, output: str | None, options: WriteOptions
) -> None:
    """Write one recording's result to ``output`` (for ``all``: a file per format beside it,
    ``BASE.json``, ``BASE.srt``, ...) or, without one, to standard output."""
    targets: list[tuple[str, str]]  # (format, path); none: standard output
    if not output:
        targets = []
    elif format_name == ALL_FORMATS:
        base = _output_base(output)
        targets = [(f.name, base + f.suffix) for f in formats_without_audio()]
    else:
        targets = [(format_name, output)]
    try:
        if not targets:
            _write_stdout(render(alignment, format_name, options))
        for name, path in targets:
            try:
                save(alignment, name, path, options)
            except OSError as e:
                raise CliError(f"cannot write {path}: {e}", EXIT_USAGE) from e
    except ValueError as e:  # a format that cannot hold this alignment (--cues lines, no spans)
        raise CliError(f"cannot write {format_name}: {e}", EXIT_USAGE) from e


@dataclass
class BatchSummary:
    """Counts of one batch run, and what failed."""

    aligned: int = 0
    skipped: int = 0
    transcribed: int = 0  # of the aligned: items the server transcribed first
    failures: list[tuple[BatchItem, str]] = field(default_factory=list)
    flagged: list[tuple[BatchItem, str]] | None = None  # with --flag-below: items to set aside


@dataclass(frozen=True)
class FlagRule:
    """``--flag-below``: which aligned items to report as doubtful."""

    below: float  # mean score under this flags an item
    repaired: float  # a repaired share above this flags an item

    def reason(self, alignment: Alignment) -> str | None:
        """Why ``alignment`` is flagged, or None when it is not (or carries no scores)."""
        mean, share = alignment.mean_score, alignment.repaired_share
        if mean is None or share is None:
            return None
        if mean < self.below or share > self.repaired:
            return f"mean score {mean:.3f}, {100 * share:.1f}% of units repaired"
        return None


def run_batch(args: argparse.Namespace, settings: Settings) -> int:
    """Align every item of a folder or manifest into ``--out-dir``, skipping finished ones."""
    from tqdm import tqdm

    try:
        root = Path(args.manifest_root) if args.manifest_root else None
        items = load_items(Path(args.batch), args.language, root)
    except ManifestError as e:
        raise CliError(str(e), EXIT_USAGE) from e
    out_dir = Path(args.out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CliError(f"cannot create --out-dir {out_dir}: {e}", EXIT_USAGE) from e
    formats = output_formats(settings.format)
    needs_audio = _needs_audio(settings.format)

    def outputs(item: BatchItem) -> list[str]:
        return [f"{item.key}{f.suffix}" for f in formats]

    # Inputs are never overwritten by a transcript that the server made (--out-dir may be the
    # folder of the audio itself, holding other items' transcripts).
    inputs = {p.absolute() for item in items for p in (item.audio, item.text_file) if p}

    def transcript_name(item: BatchItem) -> str | None:
        """``ID.txt`` for an item the server transcribed, None when that would be an input."""
        name = f"{item.key}{TRANSCRIPT_SUFFIX}"
        return None if (out_dir / name).absolute() in inputs else name

    summary = BatchSummary()
    rule = None
    if args.flag_below is not None:
        rule = FlagRule(args.flag_below, args.flag_repaired)
        summary.flagged = []
    todo: list[BatchItem] = []
    for item in items:
        targets = [out_dir / name for name in outputs(item)]
        if all(not t.is_symlink() and t.exists() for t in targets):  # links are refused below
            summary.skipped += 1
        else:
            todo.append(item)
    if todo:
        _require_ready(settings)

    progress = tqdm(total=len(todo), file=sys.stderr, unit="file", disable=_progress_disabled(args))

    def fail(item: BatchItem, message: str) -> None:
        summary.failures.append((item, message))
        progress.write(f"failed: {item.origin}: {message}", file=sys.stderr)
        progress.update(1)

    jobs: list[AlignItem] = []
    for item in todo:
        problem = _outputs_problem(out_dir, outputs(item))
        if problem is not None:
            fail(item, problem)
            continue
        try:
            item.check_audio()
        except UnsafePathError as e:
            fail(item, f"cannot read audio: {e}")
            continue
        except OSError as e:
            fail(item, f"cannot read audio {e.filename or ''}: {e.strerror or e}")
            continue
        try:
            text = item.transcript()
        except OSError as e:
            fail(item, f"cannot read transcript {e.filename or ''}: {e.strerror or e}")
            continue
        except (UnicodeDecodeError, ValueError) as e:
            fail(item, f"cannot read transcript {item.text_file}: {e}")
            continue
        context = (item.context or args.context) if text is None else None
        jobs.append(AlignItem(item.audio, text, item.language, key=item, context=context))

    with progress, settings.client() as client:
        for result in client.align_many(jobs, concurrency=args.concurrency):
            item = result.item.key
            if result.alignment is None:
                fail(item, str(result.error))
                continue
            options = settings.write_options(item.key)
            transcript = transcript_name(item) if result.alignment.transcribed else None
            names = [*outputs(item), *([transcript] if transcript else [])]
            problem = _outputs_problem(out_dir, names)
            if problem is not None:  # checked again: a link may have appeared meanwhile
                fail(item, problem)
                continue
            try:
                if needs_audio:  # decoded again: align_many keeps no audio in memory
                    item.check_audio()
                    options = replace(options, audio=load_audio(item.audio))
                # Written to a temporary file that then replaces the target: never through a link.
                if transcript:  # first: an item whose outputs exist is done, and skipped
                    write_atomic(out_dir / transcript, result.alignment.text + "\n")
                for fmt, name in zip(formats, outputs(item), strict=True):
                    save(result.alignment, fmt.name, out_dir / name, options)
            except UnsafePathError as e:
                fail(item, f"cannot read audio: {e}")
                continue
            except AudioError as e:
                fail(item, str(e))
                continue
            except (OSError, ValueError) as e:  # ValueError: a name the OS cannot take
                fail(item, f"cannot write output: {e}")
                continue
            summary.aligned += 1
            summary.transcribed += result.alignment.transcribed
            reason = rule.reason(result.alignment) if rule is not None else None
            if reason is not None and summary.flagged is not None:
                summary.flagged.append((item, reason))
                progress.write(f"flagged: {item.origin}: {reason}", file=sys.stderr)
            progress.update(1)

    _report(summary, out_dir)
    return EXIT_FAILED if summary.failures else EXIT_OK


def _output_problem(out_dir: Path, name: str) -> str | None:
    """Why batch mode must not write ``out_dir / name``, or None when it may.

    The output must be a file directly in ``out_dir`` (a name from a folder or a manifest never
    leads elsewhere) and not a symbolic link, which is refused rather than replaced: writing
    through it could overwrite a file anywhere.
    """
    target = out_dir / name
    if target.name != name or target.parent != out_dir:
        return f"output name {name!r} leads out of {out_dir}; refused"
    if target.is_symlink():
        return f"output {target} is a symbolic link; refused (remove it to write there)"
    return None


def _outputs_problem(out_dir: Path, names: list[str]) -> str | None:
    """The first reason batch mode must not write one of ``names`` in ``out_dir``, or None."""
    return next((p for p in (_output_problem(out_dir, n) for n in names) if p is not None), None)


def _report(summary: BatchSummary, out_dir: Path) -> None:
    flagged = "" if summary.flagged is None else f", {len(summary.flagged)} flagged"
    transcribed = f", {summary.transcribed} transcribed" if summary.transcribed else ""
    print(
        f"{summary.aligned} aligned, {summary.skipped} skipped (output already in {out_dir}), "
        f"{len(summary.failures)} failed{flagged}{transcribed}",
        file=sys.stderr,
    )
    for item, message in summary.failures:
        print(f"  FAILED {item.origin}: {message}", file=sys.stderr)
    for item, message in summary.flagged or []:
        print(f"  FLAGGED {item.origin}: {message}", file=sys.stderr)


def _check_usage(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Reject option combinations that do not make sense (exit status 2)."""
    if args.check:
        if args.audio or args.transcript:
            parser.error("--check takes no AUDIO or TRANSCRIPT")
    elif args.batch:
        if args.audio or args.transcript or args.output:
            parser.error("--batch takes no AUDIO, TRANSCRIPT or -o (use --out-dir)")
        if not args.out_dir:
            parser.error("--batch needs --out-dir")
        if args.transcript_out:
            parser.error("--transcript-out is for one file; --batch writes ID.txt in --out-dir")
        if args.concurrency < 1:
            parser.error("--concurrency must be at least 1")
        if args.flag_below is not None and not 0.0 <= args.flag_below <= 1.0:
            parser.error("--flag-below must be between 0 and 1")
        if not 0.0 <= args.flag_repaired <= 1.0:
            parser.error("--flag-repaired must be between 0 and 1")
    else:
        if not args.audio:
            parser.error(
                "give AUDIO and TRANSCRIPT (or AUDIO alone, transcribed by a server started "
                "with ./scripts/serve --asr), or --batch, or --check"
            )
        if args.transcript is not None:
            if not args.language:
                parser.error(
                    "--language is required with a TRANSCRIPT (only a transcription by the "
                    "server, without one, detects the language)"
                )
            if args.context is not None:
                parser.error("--context guides a transcription: it is for AUDIO without TRANSCRIPT")
            if args.transcript_out:
                parser.error("--transcript-out is for AUDIO without TRANSCRIPT (the server's)")
        if args.out_dir:
            parser.error("--out-dir is for --batch; use -o for one file")
    if not args.batch and args.flag_below is not None:
        parser.error("--flag-below is for --batch")


def _check_output(parser: argparse.ArgumentParser, args: argparse.Namespace, fmt: str) -> None:
    """Formats written to files only (png, and all: a file per format) need -o in single-file
    mode, and png matplotlib."""
    if args.check:
        return
    if not (args.batch or args.output):
        if fmt == ALL_FORMATS:
            parser.error("--format all writes a file per format: give -o BASE (or --batch)")
        if FORMATS[fmt].save is not None:
            parser.error(f"--format {fmt} writes files: give -o FILE{FORMATS[fmt].suffix}")
    if fmt == "png":
        try:
            require_matplotlib()
        except ModuleNotFoundError as e:
            parser.error(str(e))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status (the console script exits with it)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_usage(parser, args)
    settings = _settings(parser, args)
    _check_output(parser, args, settings.format)
    try:
        if args.check:
            return run_check(settings)
        if args.batch:
            return run_batch(args, settings)
        return run_single(args, settings)
    except CliError as e:
        print(f"qwen3-align: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        print("qwen3-align: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
