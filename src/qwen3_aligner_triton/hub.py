"""Fetching a Hugging Face Hub checkpoint before the server starts.

The launcher (``./scripts/serve``, the container's entrypoint) turns a hub id into a local folder
here and hands that folder to the model, which never reaches the network itself. Downloads go
into the Hugging Face cache (``HF_HOME``, ``HF_HUB_CACHE``) with ``huggingface_hub``, which shows
progress bars, resumes interrupted files with HTTP ``Range`` requests and honours ``HF_ENDPOINT``,
``HF_TOKEN`` and ``HF_HUB_OFFLINE``. Only the files the aligner loads are fetched.

A mirror (``HF_ENDPOINT``) is not trusted further than the files it serves: the endpoint must be
https (unless plain http is allowed: ``QWEN3_ALIGNER_ALLOW_HTTP_HUB=1``), the revision is first
resolved to a commit hash and the download pinned to it, every file name of the listing must be a
plain relative path, the listed sizes must fit the download limit (8 GiB unless
``QWEN3_ALIGNER_MAX_DOWNLOAD_BYTES`` says otherwise), and while the files arrive every answer is
checked where ``huggingface_hub`` turns it into a path (commit, ETag) and the bytes are counted
against the limit. A mirror that fails a check is refused with :class:`UnsafeDownload`.

``./scripts/fetch-model [--revision R] [--max-bytes SIZE] [--allow-http] [DIR]`` runs
:func:`main`: the same download on its own, into the cache or into a folder to copy to machines
without internet.
"""

from __future__ import annotations

import argparse
import glob
import os
import posixpath
import re
import sys
import threading
import unicodedata
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .loading import describe_checkpoint
from .params import DEFAULT_CHECKPOINT

if TYPE_CHECKING:
    import requests
    from huggingface_hub.hf_api import ModelInfo

# What Qwen3ForcedAligner.from_pretrained reads: config and generation config, weights
# (safetensors, single or sharded with an index), tokenizer (vocab.json, merges.txt,
# tokenizer*.json, added and special tokens), processor and feature extractor, chat template.
ALIGNER_FILES = ("*.json", "*.safetensors", "*.txt", "*.jinja")
# Without these a folder cannot be loaded: what an interrupted first download may leave behind.
REQUIRED_FILES = ("config.json", "preprocessor_config.json", "tokenizer_config.json")
PROBE_TIMEOUT_SECONDS = 20.0  # one metadata request to the Hub; then the cache is used
DOWNLOAD_ATTEMPTS = 4  # a broken connection mid-file is resumed (HTTP Range) this many times
REVISION_ENV = "MODEL_REVISION"
ASR_REVISION_ENV = "ASR_MODEL_REVISION"  # the same for a hub-id ASR checkpoint
# The revision fetched when none is given (--revision, MODEL_REVISION). A branch: which commit of
# Qwen/Qwen3-ForcedAligner-0.6B to serve is not known to this project's build machines (they
# have no internet access), so production deployments pin one themselves (MODEL_REVISION, the
# Dockerfile's CHECKPOINT_REVISION); the download is pinned to the commit the branch points at.
DEFAULT_REVISION = "main"
MAX_BYTES_ENV = "QWEN3_ALIGNER_MAX_DOWNLOAD_BYTES"
# The real checkpoint is about 1.8 GB; a mirror that lists or sends more is refused.
DEFAULT_MAX_BYTES = 8 << 30
ALLOW_HTTP_ENV = "QWEN3_ALIGNER_ALLOW_HTTP_HUB"
API_ANSWER_LIMIT = 32 << 20  # bytes of one listing (a Hub listing of 50 000 files is ~10 MB)
COMMIT_HASH = re.compile(r"[0-9a-fA-F]{40}")
# huggingface_hub stores a file under its ETag: a git blob sha1, or the sha256 of an LFS object.
BLOB_ETAG = re.compile(r"[0-9a-fA-F]{40}|[0-9a-fA-F]{64}")
SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
LIMIT_ADVICE = (
    f"If the checkpoint really is that large, raise the limit ({MAX_BYTES_ENV}=16G, or "
    "./scripts/fetch-model --max-bytes 16G)"
)


class CheckpointUnavailable(RuntimeError):
    """A hub checkpoint that can be neither downloaded nor found in the cache."""


class UnsafeDownload(CheckpointUnavailable):
    """A Hub (or mirror) answer that would write outside the download folder, or write too much."""


def local_folder_advice(repo_id: str) -> str:
    return (
        "To serve without the Hub, fetch the checkpoint on a machine with internet access "
        f"(./scripts/fetch-model /path/to/checkpoint, or huggingface-cli download {repo_id} "
        "--local-dir /path/to/checkpoint), copy the folder here and run "
        "./scripts/serve --model /path/to/checkpoint (container: MODEL_PATH=/path/to/checkpoint)"
    )


def cache_location() -> str:
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def check_complete(folder: Path, repo_id: str) -> Path:
    """``folder`` if it holds a loadable checkpoint; CheckpointUnavailable otherwise."""
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if not any(folder.glob("*.safetensors")):
        missing.append("*.safetensors")
    if missing:
        raise CheckpointUnavailable(
            f"the copy of {repo_id} in {folder} is incomplete (missing {', '.join(missing)}): "
            "an earlier download was interrupted. Run again with network access to finish it "
            f"(it resumes), or: {local_folder_advice(repo_id)}"
        )
    return folder


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def parse_size(text: str) -> int:
    """Bytes of a size such as ``8589934592``, ``8G`` or ``1.5GiB`` (K, M, G, T: powers of 1024).

    ValueError for anything else, zero and negative sizes included.
    """
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text, re.IGNORECASE)
    if not found:
        raise ValueError(f"{text!r} is not a size (bytes, or a number with K, M, G or T: 8G)")
    size = int(float(found.group(1)) * SIZE_UNITS[found.group(2).lower()])
    if size <= 0:
        raise ValueError(f"{text!r} is not a size above zero")
    return size


def format_size(size: int) -> str:
    """``size`` bytes for people: ``2.1 MiB``, ``8 GiB``, ``512 bytes``."""
    if size < 1024:
        return f"{size} bytes"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024:
            return f"{value:.1f}".removesuffix(".0") + f" {unit}"
    return f"{value / 1024:.1f}".removesuffix(".0") + " TiB"


def download_limit(environ: Mapping[str, str] | None = None) -> int:
    """The most bytes one checkpoint download may take: ``$QWEN3_ALIGNER_MAX_DOWNLOAD_BYTES``."""
    value = (os.environ if environ is None else environ).get(MAX_BYTES_ENV, "").strip()
    if not value:
        return DEFAULT_MAX_BYTES
    try:
        return parse_size(value)
    except ValueError as e:
        raise CheckpointUnavailable(f"{MAX_BYTES_ENV}: {e}") from None


def http_allowed(environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``$QWEN3_ALIGNER_ALLOW_HTTP_HUB`` lets the download use a plain-http endpoint."""
    value = (os.environ if environ is None else environ).get(ALLOW_HTTP_ENV, "")
    return value.strip().lower() in ("1", "true", "yes")


def require_https(hub: str, allow_http: bool) -> None:
    """UnsafeDownload unless ``hub`` (the endpoint) is https, or http with ``allow_http``."""
    scheme = urlsplit(hub).scheme.lower()
    if scheme == "https" or (scheme == "http" and allow_http):
        return
    if scheme == "http":
        raise UnsafeDownload(
            f"refusing to download from {hub}: the Hub endpoint (HF_ENDPOINT) must be an https:// "
            "address, since over plain http anyone on the way can change the files. For a trusted "
            f"mirror on your own network set {ALLOW_HTTP_ENV}=1 (./scripts/fetch-model "
            "--allow-http)"
        )
    raise UnsafeDownload(
        f"refusing to download from {hub!r}: the Hub endpoint (HF_ENDPOINT) must be an https:// "
        "address"
    )


def unsafe_name_reason(name: object) -> str | None:
    """Why ``name``, a file name of a Hub listing, cannot be written under a folder; None if it can.

    A name must be a relative POSIX path of plain segments: no ``..``, ``.`` or empty segment, no
    leading ``/`` or drive, no backslash, no control or invisible character.
    """
    if not isinstance(name, str):
        return "it is not a string"
    if not name:
        return "an empty name"
    for char in name:
        if unicodedata.category(char).startswith("C"):
            return f"it holds the control or invisible character U+{ord(char):04X}"
    if "\\" in name:
        return "it holds a backslash"
    if name.startswith("/") or PureWindowsPath(name).drive:
        return "it is an absolute path"
    segments = name.split("/")
    if ".." in segments:
        return "its '..' climbs out of the download folder"
    if any(segment in ("", ".") for segment in segments):
        return "it has an empty or '.' segment"
    root = "/download"
    if not posixpath.normpath(posixpath.join(root, name)).startswith(root + "/"):
        return "it leads out of the download folder"
    return None


@dataclass(frozen=True)
class DownloadPlan:
    """What to fetch of a repository: its commit, and the files the aligner loads."""

    commit: str
    files: tuple[str, ...]
    listed_bytes: int  # the sizes the listing gives for them, added up


def plan_download(info: ModelInfo, repo_id: str, hub: str, max_bytes: int) -> DownloadPlan:
    """The files to fetch from the listing ``info`` of ``repo_id``; UnsafeDownload if it lies.

    The listing must name a commit hash and only plain relative file names (all of them, not
    only the aligner's), and the files the aligner loads must fit in ``max_bytes``, one by one
    and together. Sizes a mirror does not list are left to the limit enforced while downloading.
    """
    refusing = f"refusing to download {repo_id} from {hub}"
    if not isinstance(info.sha, str) or not COMMIT_HASH.fullmatch(info.sha):
        raise UnsafeDownload(
            f"{refusing}: it gives the commit {info.sha!r}, which is not a commit hash "
            "(40 hexadecimal digits)"
        )
    siblings = list(info.siblings or [])
    if not siblings:
        raise CheckpointUnavailable(f"cannot download {repo_id}: {hub} lists no files in it")
    for sibling in siblings:
        reason = unsafe_name_reason(sibling.rfilename)
        if reason:
            raise UnsafeDownload(
                f"{refusing}: it lists a file named {sibling.rfilename!r} ({reason}); "
                "nothing was downloaded"
            )
    from huggingface_hub.utils import filter_repo_objects

    wanted = list(
        filter_repo_objects(siblings, allow_patterns=list(ALIGNER_FILES), key=lambda s: s.rfilename)
    )
    listed = 0
    for sibling in wanted:
        sizes = [sibling.size, sibling.lfs.size if sibling.lfs else None]
        for size in sizes:
            if size is not None and (type(size) is not int or size < 0):
                raise UnsafeDownload(f"{refusing}: it lists {sibling.rfilename} at {size!r} bytes")
        if not any(size is not None for size in sizes):
            continue  # left to the limit enforced while downloading
        size = max(size for size in sizes if size is not None)
        if size > max_bytes:
            raise UnsafeDownload(
                f"{refusing}: it lists {sibling.rfilename} at {format_size(size)}, more than the "
                f"download limit of {format_size(max_bytes)}; nothing was downloaded. "
                f"{LIMIT_ADVICE}"
            )
        listed += size
    if listed > max_bytes:
        raise UnsafeDownload(
            f"{refusing}: the {len(wanted)} files the aligner loads add up to "
            f"{format_size(listed)}, more than the download limit of {format_size(max_bytes)}; "
            f"nothing was downloaded. {LIMIT_ADVICE}"
        )
    files = tuple(dict.fromkeys(sibling.rfilename for sibling in wanted))
    return DownloadPlan(info.sha, files, listed)


class DownloadGuard:
    """Checks each answer ``huggingface_hub`` gets while one checkpoint downloads.

    Installed as a response hook of its HTTP sessions (:meth:`installed`), it sees the answers the
    library acts on, the listing ``snapshot_download`` asks for itself and each file's metadata
    included, not copies fetched beforehand that a mirror could answer differently:

    - every request goes over https (or http, where allowed);
    - each ``X-Repo-Commit`` header and listed ``sha`` is a commit hash, once pinned that commit
      (``huggingface_hub`` names snapshot folders after it);
    - the ETag a file is stored under (``X-Linked-Etag``, else ``ETag``) is a sha1 or a sha256;
    - a file's announced size, one listing and all bytes received stay under their limits.

    Xet headers are taken off file answers so that files come over plain HTTPS, where these checks
    apply, rather than through ``hf_xet``'s own transfer.
    """

    def __init__(self, repo_id: str, hub: str, max_bytes: int, allow_http: bool) -> None:
        self.repo_id = repo_id
        self.hub = hub.rstrip("/")
        self.max_bytes = max_bytes
        self.allow_http = allow_http
        self.plan: DownloadPlan | None = None  # set once the revision is resolved
        self.received = 0  # bytes of all answers' bodies
        self._lock = threading.Lock()
        self._refusing = f"refusing to download {repo_id} from {self.hub}"
        self._hub_origin = _origin_key(self.hub)
        from requests.utils import requote_uri

        # The path as configured and as requests sends it (percent-encoded: a space, an accent).
        path = urlsplit(self.hub).path.rstrip("/")
        self._api_prefixes = tuple({f"{path}/api/", f"{requote_uri(path)}/api/"})

    @contextmanager
    def installed(self) -> Iterator[DownloadGuard]:
        """Every ``huggingface_hub`` HTTP session made inside the block checks its answers here."""
        from huggingface_hub import configure_http_backend
        from huggingface_hub.utils import _http

        previous: Callable[[], requests.Session] | None = getattr(
            _http, "_GLOBAL_BACKEND_FACTORY", None
        )

        def guarded_session() -> requests.Session:
            import requests

            session = previous() if previous is not None else requests.Session()
            session.hooks["response"].append(self.check)
            return session

        configure_http_backend(backend_factory=guarded_session)
        try:
            yield self
        finally:
            if previous is not None:
                configure_http_backend(backend_factory=previous)
            else:
                configure_http_backend()

    def check(self, response: requests.Response, *args: object, **kwargs: object) -> None:
        """The response hook: UnsafeDownload (the answer closed) when an answer fails a check."""
        try:
            self._check(response)
        except UnsafeDownload:
            response.close()
            raise

    def _check(self, response: requests.Response) -> None:
        url = urlsplit(response.url)
        scheme = url.scheme.lower()
        if scheme != "https" and not (scheme == "http" and self.allow_http):
            raise UnsafeDownload(
                f"{self._refusing}: it sent the download to {scheme}://{url.netloc}, which is not "
                "https"
            )
        # An answer to a request sent to the Hub's API is a listing wherever a redirect took it.
        asked = response.history[0].url if response.history else response.url
        listing = _origin_key(asked) == self._hub_origin and urlsplit(asked).path.startswith(
            self._api_prefixes
        )
        self._count(response, API_ANSWER_LIMIT if listing else None)
        # From any host: no answer of a download has a reason to carry a bad commit.
        commit = response.headers.get("X-Repo-Commit")
        if commit is not None:
            self._check_commit(commit, f"in the X-Repo-Commit header of {url.path}")
        if response.request.method == "HEAD" and "/resolve/" in url.path:
            self._check_file_answer(response, url.path)
        elif listing and self.plan is not None and response.ok:
            try:
                answer = response.json()
            except ValueError:
                return  # not a listing: huggingface_hub reports it
            if isinstance(answer, dict) and "sha" in answer:
                self._check_commit(answer["sha"], f"in its listing {url.path}")

    def _check_commit(self, commit: object, where: str) -> None:
        if not isinstance(commit, str) or not COMMIT_HASH.fullmatch(commit):
            raise UnsafeDownload(
                f"{self._refusing}: it gives the commit {commit!r} {where}, which is not a commit "
                "hash (40 hexadecimal digits)"
            )
        if self.plan is not None and commit.lower() != self.plan.commit.lower():
            raise UnsafeDownload(
                f"{self._refusing}: it gives the commit {commit} {where}, for a download of "
                f"commit {self.plan.commit}"
            )

    def _check_file_answer(self, response: requests.Response, where: str) -> None:
        headers = response.headers
        raw = headers.get("X-Linked-Etag") or headers.get("ETag")
        # As huggingface_hub reads it (file_download._normalize_etag): the name of the stored file.
        if raw is not None and not BLOB_ETAG.fullmatch(raw.lstrip("W/").strip('"')):
            raise UnsafeDownload(
                f"{self._refusing}: it answers {where} with the ETag {raw!r}; huggingface_hub "
                "stores files under their ETag, which on the Hub is a sha1 or a sha256 "
                "(40 or 64 hexadecimal digits)"
            )
        size = headers.get("X-Linked-Size") or headers.get("Content-Length") or ""
        if size.isdigit() and int(size) > self.max_bytes:
            raise UnsafeDownload(
                f"{self._refusing}: it announces {where} at {format_size(int(size))}, more than "
                f"the download limit of {format_size(self.max_bytes)}. {LIMIT_ADVICE}"
            )
        for name in [name for name in headers if name.lower().startswith("x-xet-")]:
            del headers[name]

    def _count(self, response: requests.Response, answer_limit: int | None) -> None:
        """Counts the body of ``response`` as it is read, against the limits."""
        read = response.iter_content

        def iter_content(chunk_size: int | None = 1, decode_unicode: bool = False) -> Iterator[Any]:
            in_answer = 0
            for chunk in read(chunk_size, decode_unicode):
                in_answer += len(chunk)
                try:
                    if answer_limit is not None and in_answer > answer_limit:
                        raise UnsafeDownload(
                            f"{self._refusing}: its answer to {urlsplit(response.url).path} "
                            f"is longer than {format_size(answer_limit)}"
                        )
                    self._spend(len(chunk))
                except UnsafeDownload:
                    response.close()
                    raise
                yield chunk

        response.iter_content = iter_content  # type: ignore[method-assign]

    def _spend(self, size: int) -> None:
        with self._lock:
            self.received += size
            if self.received > self.max_bytes:
                limit = format_size(self.max_bytes)
                if self.plan is not None and self.plan.listed_bytes < self.max_bytes // 2:
                    listed = format_size(self.plan.listed_bytes)
                    raise UnsafeDownload(
                        f"{self._refusing}: it sent more than the download limit of {limit}, "
                        f"while the files it lists add up to {listed}"
                    )
                raise UnsafeDownload(
                    f"{self._refusing}: it sent more than the download limit of {limit}. "
                    f"{LIMIT_ADVICE}"
                )


def _origin_key(url: str) -> tuple[str, str, int | None]:
    """Scheme, host and port of ``url``, as requests compares them (lower case, default ports)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    return scheme, (parts.hostname or "").lower(), port or {"https": 443, "http": 80}.get(scheme)


def _list_repo(
    repo_id: str, revision: str, token: str | None, endpoint: str | None
) -> ModelInfo | Exception:
    """The listing of ``repo_id`` at ``revision``, with file sizes; the connection error when the
    Hub cannot be reached.

    Authentication, missing repositories and revisions raise: those are not cured by the cache.
    """
    import requests
    from huggingface_hub import HfApi

    try:
        return HfApi(endpoint=endpoint, token=token).model_info(
            repo_id, revision=revision, timeout=PROBE_TIMEOUT_SECONDS, files_metadata=True
        )
    except requests.exceptions.SSLError:
        raise
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as e:
        return e
    except (KeyError, TypeError, requests.exceptions.JSONDecodeError) as e:
        # huggingface_hub could not read the answer as a listing
        where = endpoint or _endpoint()
        raise CheckpointUnavailable(
            f"cannot download {repo_id}: {where} answers its listing with something that is not "
            f"a Hub listing ({_short(e)})"
        ) from e


def _snapshot(
    repo_id: str,
    revision: str,
    patterns: list[str],
    local_dir: Path | None,
    cache_dir: Path | None,
    endpoint: str | None,
    token: str | None,
    local_files_only: bool,
) -> Path:
    """``snapshot_download``, resumed after a connection that breaks in the middle of a file."""
    import requests
    from huggingface_hub import snapshot_download

    for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
        try:
            return Path(
                snapshot_download(
                    repo_id,
                    revision=revision,
                    allow_patterns=patterns,
                    local_dir=local_dir,
                    cache_dir=cache_dir,
                    endpoint=endpoint,
                    token=token,
                    local_files_only=local_files_only,
                )
            )
        except (
            requests.exceptions.ChunkedEncodingError,
            requests.exceptions.ConnectionError,
        ) as e:
            # The connection broke in the middle of a file: what arrived is kept in the
            # cache's .incomplete file and the next attempt asks for the rest only.
            if attempt == DOWNLOAD_ATTEMPTS or isinstance(e, requests.exceptions.SSLError):
                raise
            print(
                f"download of {repo_id} interrupted ({_short(e)}); resuming "
                f"(attempt {attempt + 1} of {DOWNLOAD_ATTEMPTS})",
                file=sys.stderr,
                flush=True,
            )
    raise AssertionError("unreachable")


def _repo_cache(repo_id: str, cache_dir: Path | None) -> Path:
    """The cache folder of ``repo_id`` (``models--org--name``: blobs, refs, snapshots)."""
    from huggingface_hub.file_download import repo_folder_name

    folder_name = repo_folder_name(repo_id=repo_id, repo_type="model")
    return Path(cache_dir or cache_location()) / folder_name


def _check_written(repo_id: str, folder: Path, files: Sequence[str], root: Path) -> None:
    """UnsafeDownload if ``folder`` or one of its downloaded ``files`` leads outside ``root``."""
    top = root.resolve()
    for path in (folder, *(folder / name for name in files)):
        if not (path.exists() or path.is_symlink()):
            continue  # check_complete names what is missing
        real = path.resolve()
        if not real.is_relative_to(top):
            raise UnsafeDownload(
                f"refusing the download of {repo_id}: {path} leads to {real}, outside {top}"
            )


def _check_download(
    repo_id: str,
    folder: Path,
    plan: DownloadPlan,
    revision: str,
    local_dir: Path | None,
    cache_dir: Path | None,
) -> None:
    """UnsafeDownload unless ``plan`` was written inside its folder; then, in the cache, records
    that ``revision`` is the commit downloaded."""
    if local_dir is not None:
        _check_written(repo_id, folder, plan.files, Path(local_dir))
        return
    repo_cache = _repo_cache(repo_id, cache_dir)
    _check_written(repo_id, folder, plan.files, repo_cache)
    if folder.resolve() != (repo_cache / "snapshots" / plan.commit).resolve():
        raise UnsafeDownload(
            f"refusing the download of {repo_id}: it went to {folder}, not to the snapshot of "
            f"commit {plan.commit}"
        )
    _remember_revision(repo_cache, revision, plan.commit)


def _remember_revision(repo_cache: Path, revision: str, commit: str) -> None:
    """Records in the cache that ``revision`` is ``commit``, for later starts offline.

    ``snapshot_download`` does so itself for the revision it is given; here it is given the commit.
    """
    refs = repo_cache / "refs"
    ref = Path(os.path.normpath(refs / revision))
    if revision == commit or not ref.is_relative_to(refs) or ref == refs:
        return
    ref.parent.mkdir(parents=True, exist_ok=True)
    if not ref.is_file() or ref.read_text() != commit:
        ref.write_text(commit)


def fetch_checkpoint(
    repo_id: str,
    revision: str | None = None,
    local_dir: Path | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    cache_dir: Path | None = None,
    *,
    max_bytes: int | None = None,
    allow_http: bool | None = None,
) -> Path:
    """Download what the aligner loads of ``repo_id`` and return the local folder.

    Into the Hugging Face cache (the snapshot folder of the resolved commit), or into
    ``local_dir``. Offline (``HF_HUB_OFFLINE=1``) or with the Hub unreachable, the cached copy is
    returned; without one CheckpointUnavailable says how to serve from a local folder.
    ``endpoint`` and ``cache_dir`` default to ``HF_ENDPOINT`` and the cache of ``HF_HOME``.

    ``revision`` (default :data:`DEFAULT_REVISION`) is resolved to a commit first and the
    download pinned to it. UnsafeDownload (a CheckpointUnavailable) refuses an endpoint that is not
    https (unless ``allow_http``, default ``$QWEN3_ALIGNER_ALLOW_HTTP_HUB``), a listing with a
    file name that is not a plain relative path, files beyond ``max_bytes`` (default
    ``$QWEN3_ALIGNER_MAX_DOWNLOAD_BYTES``, else 8 GiB) and answers that would put files
    elsewhere than in the download folder (:class:`DownloadGuard`).
    """
    import requests
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    revision = revision or DEFAULT_REVISION
    where = f"{repo_id}" + (f" at revision {revision}" if revision != DEFAULT_REVISION else "")
    hub = (endpoint or _endpoint()).rstrip("/")
    cache = cache_dir or cache_location()
    limit = download_limit() if max_bytes is None else max_bytes
    plain_http = http_allowed() if allow_http is None else allow_http
    unreachable: Exception | None = None
    folder: Path | None = None
    try:
        if not _offline():
            require_https(hub, plain_http)
            with DownloadGuard(repo_id, hub, limit, plain_http).installed() as guard:
                listed = _list_repo(repo_id, revision, token, endpoint)
                if isinstance(listed, Exception):
                    unreachable = listed
                else:
                    plan = plan_download(listed, repo_id, hub, limit)
                    guard.plan = plan
                    # Exactly the names checked above, whatever a second listing says.
                    exact = [glob.escape(name) for name in plan.files]
                    folder = _snapshot(
                        repo_id, plan.commit, exact, local_dir, cache_dir, endpoint, token, False
                    )
                    _check_download(repo_id, folder, plan, revision, local_dir, cache_dir)
        if folder is None:
            folder = _snapshot(
                repo_id, revision, list(ALIGNER_FILES), local_dir, cache_dir, endpoint, token, True
            )
    except LocalEntryNotFoundError as e:
        if _offline():
            why = "HF_HUB_OFFLINE is set"
        else:
            why = f"the Hub at {hub} cannot be reached ({_network_reason(unreachable or e)})"
        raise CheckpointUnavailable(
            f"cannot get {where}: {why}, and the Hugging Face cache ({cache}) holds "
            f"no copy of it. {local_folder_advice(repo_id)}"
        ) from e
    except requests.exceptions.SSLError as e:
        raise CheckpointUnavailable(
            f"cannot download {where}: TLS failure talking to {hub} ({_short(e)}). "
            "Behind a proxy that re-signs HTTPS, point REQUESTS_CA_BUNDLE at its CA bundle"
        ) from e
    except GatedRepoError as e:
        raise CheckpointUnavailable(
            f"cannot download {where}: access is restricted; accept its terms on the Hub and "
            "set HF_TOKEN to a token of your account"
        ) from e
    except RepositoryNotFoundError as e:
        raise CheckpointUnavailable(
            f"cannot download {where}: no such repository on {hub} (or it is private: "
            "set HF_TOKEN). A local checkpoint folder must exist and be given as a path"
        ) from e
    except RevisionNotFoundError as e:
        raise CheckpointUnavailable(f"cannot download {where}: no such revision") from e
    except (HfHubHTTPError, requests.exceptions.RequestException, OSError) as e:
        raise CheckpointUnavailable(
            f"cannot download {where}: {_short(e)}. Run again to resume the download"
        ) from e
    return check_complete(folder, repo_id)


def _endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def _network_reason(error: BaseException) -> str:
    """The operating system's words for a failed connection ("Connection refused", ...)."""
    import requests

    found = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", str(error))
    if found:
        return found.group(1).strip()
    if isinstance(error, requests.exceptions.Timeout):
        return f"no answer within {PROBE_TIMEOUT_SECONDS:g} s"
    return _short(error)


def _short(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def is_hub_id(checkpoint: str) -> bool:
    """True for a hub id (no local folder of that name), False for a folder or a path."""
    try:
        return describe_checkpoint(checkpoint) == "hub"
    except ValueError:
        return False


def describe_source(checkpoint: str, revision: str | None = None) -> str:
    """One line saying where a hub checkpoint will come from."""
    at = f" at {revision}" if revision else ""
    if _offline():
        return f"HF_HUB_OFFLINE is set: {checkpoint}{at} from the cache {cache_location()}"
    return f"fetching {checkpoint}{at} from {_endpoint()} into {cache_location()}"


def resolve_checkpoint(checkpoint: str, revision: str | None = None) -> str:
    """A loadable folder for ``checkpoint``: folders as given, hub ids fetched first.

    Raises ValueError for ``revision`` with a folder, CheckpointUnavailable for a hub id that
    cannot be had.
    """
    try:
        kind = describe_checkpoint(checkpoint)
    except ValueError:
        return checkpoint  # a bad folder: the model's load reports it, as for any folder
    if kind == "folder":
        if revision:
            raise ValueError(f"--revision applies to hub ids, not to the folder {checkpoint!r}")
        return checkpoint
    token = os.environ.get("HF_TOKEN") or None
    return str(fetch_checkpoint(checkpoint, revision=revision or None, token=token))


def _size_argument(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="scripts/fetch-model",
        description=(
            "Download the aligner checkpoint from the Hugging Face Hub, into the Hugging Face "
            "cache ($HF_HOME) or into DIR (to copy to machines without internet)."
        ),
    )
    p.add_argument("dir", nargs="?", type=Path, help="folder to write the checkpoint into")
    p.add_argument("--model", default=DEFAULT_CHECKPOINT, help="hub id (default %(default)s)")
    p.add_argument(
        "--revision",
        help=f"branch, tag or commit to fetch (default: {DEFAULT_REVISION}); a commit pins the "
        "weights",
    )
    p.add_argument(
        "--max-bytes",
        type=_size_argument,
        metavar="SIZE",
        help=f"refuse a download larger than SIZE: bytes, or K, M, G, T (powers of 1024) "
        f"(default ${MAX_BYTES_ENV}, else {format_size(DEFAULT_MAX_BYTES).replace(' ', '')})",
    )
    p.add_argument(
        "--allow-http",
        action="store_true",
        help=f"accept a plain-http HF_ENDPOINT, for a trusted mirror on your own network "
        f"(default ${ALLOW_HTTP_ENV}=1; otherwise https is required)",
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """``./scripts/fetch-model``: 0 when the checkpoint is on disk, 1 when it cannot be had."""
    args = parse_args(argv)
    token = os.environ.get("HF_TOKEN") or None
    target = args.dir.resolve() if args.dir else None
    print(
        f"fetch-model: {args.model}"
        + (f" at {args.revision}" if args.revision else "")
        + f" -> {target or cache_location()}",
        flush=True,
    )
    try:
        folder = fetch_checkpoint(
            args.model,
            args.revision,
            local_dir=target,
            token=token,
            max_bytes=args.max_bytes,
            allow_http=args.allow_http or None,
        )
    except CheckpointUnavailable as e:
        print(f"fetch-model: error: {e}", file=sys.stderr, flush=True)
        return 1
    print(f"fetch-model: checkpoint in {folder}", flush=True)
    print(f"fetch-model: serve it with ./scripts/serve --model {folder}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
