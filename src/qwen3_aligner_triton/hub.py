"""Fetching a Hugging Face Hub checkpoint before the server starts.

The launcher (``./scripts/serve``, the container's entrypoint) turns a hub id into a local folder
here and hands that folder to the model, which never reaches the network itself. Downloads go
into the Hugging Face cache (``HF_HOME``, ``HF_HUB_CACHE``) with ``huggingface_hub``, which shows
progress bars, resumes interrupted files with HTTP ``Range`` requests and honours ``HF_ENDPOINT``,
``HF_TOKEN`` and ``HF_HUB_OFFLINE``. Only the files the aligner loads are fetched.

``./scripts/fetch-model [--revision R] [DIR]`` runs :func:`main`: the same download on its own,
into the cache or into a folder to copy to machines without internet.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from .loading import describe_checkpoint
from .params import DEFAULT_CHECKPOINT

# What Qwen3ForcedAligner.from_pretrained reads: config and generation config, weights
# (safetensors, single or sharded with an index), tokenizer (vocab.json, merges.txt,
# tokenizer*.json, added and special tokens), processor and feature extractor, chat template.
ALIGNER_FILES = ("*.json", "*.safetensors", "*.txt", "*.jinja")
# Without these a folder cannot be loaded: what an interrupted first download may leave behind.
REQUIRED_FILES = ("config.json", "preprocessor_config.json", "tokenizer_config.json")
PROBE_TIMEOUT_SECONDS = 20.0  # one metadata request to the Hub; then the cache is used
DOWNLOAD_ATTEMPTS = 4  # a broken connection mid-file is resumed (HTTP Range) this many times
REVISION_ENV = "MODEL_REVISION"


class CheckpointUnavailable(RuntimeError):
    """A hub checkpoint that can be neither downloaded nor found in the cache."""


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


def _hub_reachable(
    repo_id: str, revision: str | None, token: str | None, endpoint: str | None
) -> Exception | None:
    """None when the Hub answers for ``repo_id``; the connection error otherwise.

    Authentication, missing repositories and revisions raise: those are not cured by the cache.
    """
    import requests
    from huggingface_hub import HfApi

    try:
        HfApi(endpoint=endpoint, token=token).model_info(
            repo_id, revision=revision, timeout=PROBE_TIMEOUT_SECONDS
        )
    except requests.exceptions.SSLError:
        raise
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as e:
        return e
    return None


def fetch_checkpoint(
    repo_id: str,
    revision: str | None = None,
    local_dir: Path | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    cache_dir: Path | None = None,
) -> Path:
    """Download what the aligner loads of ``repo_id`` and return the local folder.

    Into the Hugging Face cache (the snapshot folder of the resolved commit), or into
    ``local_dir``. Offline (``HF_HUB_OFFLINE=1``) or with the Hub unreachable, the cached copy is
    returned; without one CheckpointUnavailable says how to serve from a local folder.
    ``endpoint`` and ``cache_dir`` default to ``HF_ENDPOINT`` and the cache of ``HF_HOME``.
    """
    import requests
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{repo_id}" + (f" at revision {revision}" if revision else "")
    hub = endpoint or _endpoint()
    cache = cache_dir or cache_location()
    unreachable: Exception | None = None
    try:
        if not _offline():
            unreachable = _hub_reachable(repo_id, revision, token, endpoint)
        for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
            try:
                folder = snapshot_download(
                    repo_id,
                    revision=revision,
                    allow_patterns=list(ALIGNER_FILES),
                    local_dir=local_dir,
                    cache_dir=cache_dir,
                    endpoint=endpoint,
                    token=token,
                    local_files_only=_offline() or unreachable is not None,
                )
                break
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
    return check_complete(Path(folder), repo_id)


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
    p.add_argument("--revision", help="branch, tag or commit to fetch (default: main)")
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
        folder = fetch_checkpoint(args.model, args.revision, local_dir=target, token=token)
    except CheckpointUnavailable as e:
        print(f"fetch-model: error: {e}", file=sys.stderr, flush=True)
        return 1
    print(f"fetch-model: checkpoint in {folder}", flush=True)
    print(f"fetch-model: serve it with ./scripts/serve --model {folder}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
