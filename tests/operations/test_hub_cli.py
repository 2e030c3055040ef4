"""The Hub fetch as users drive it: fetch-model's arguments, messages and exit codes, in process.

``fetch_checkpoint`` runs against the HTTPS stand-in of the Hub (tests/hub_standin.py) serving a
small checkpoint-shaped folder written here, so these tests stay in the fast lane.
"""

from __future__ import annotations

import json
import re
import socket
import sys
from pathlib import Path

import hub_standin
import pytest
import requests
from hub_standin import HubStandIn, Lies

from qwen3_aligner_triton import hub
from qwen3_aligner_triton.params import DEFAULT_CHECKPOINT

REPO = DEFAULT_CHECKPOINT  # "Qwen/Qwen3-ForcedAligner-0.6B"
REPO_FOLDER = "models--Qwen--Qwen3-ForcedAligner-0.6B"
WEIGHTS_BYTES = 3000  # 2.9 KiB: model.safetensors of the checkpoints written here
ALIGNER_NAMES = {"config.json", "preprocessor_config.json", "tokenizer_config.json"}
# local_folder_advice(REPO), as a user reads it
ADVICE = (
    "To serve without the Hub, fetch the checkpoint on a machine with internet access "
    "(./scripts/fetch-model /path/to/checkpoint, or huggingface-cli download "
    "Qwen/Qwen3-ForcedAligner-0.6B --local-dir /path/to/checkpoint), copy the folder here and run "
    "./scripts/serve --model /path/to/checkpoint (container: MODEL_PATH=/path/to/checkpoint)"
)
LIMIT_ADVICE = (
    "If the checkpoint really is that large, raise the limit "
    "(QWEN3_ALIGNER_MAX_DOWNLOAD_BYTES=16G, or ./scripts/fetch-model --max-bytes 16G)"
)


def write_checkpoint(folder: Path, marker: str = "main") -> Path:
    """A folder shaped like the aligner's checkpoint (what check_complete needs), plus a README
    that is not downloaded; its files say which commit (``marker``) they are of."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen3", "marker": marker}))
    (folder / "preprocessor_config.json").write_text('{"sampling_rate": 16000}')
    (folder / "tokenizer_config.json").write_text('{"model_max_length": 4096}')
    weights = (marker.encode() * WEIGHTS_BYTES)[:WEIGHTS_BYTES]
    (folder / "model.safetensors").write_bytes(weights)
    (folder / "README.md").write_text("# model card\n")
    return folder


def marker_of(folder: Path) -> str:
    return json.loads((folder / "config.json").read_text())["marker"]


@pytest.fixture(autouse=True)
def environment(tmp_path, monkeypatch):
    """No limit, http permission, token or offline mode from the machine; a cache of its own."""
    from huggingface_hub import constants

    for name in (hub.MAX_BYTES_ENV, hub.ALLOW_HTTP_ENV, "HF_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "default-cache"))
    monkeypatch.setenv("COLUMNS", "100")  # argparse's help and usage width


@pytest.fixture
def checkpoint(tmp_path):
    return write_checkpoint(tmp_path / "checkpoint")


def start_standin(tmp_path, monkeypatch, repos, tls=True, **kwargs) -> HubStandIn:
    standin = HubStandIn(repos, tmp_path / "ca", tls=tls, **kwargs).start()
    return trust(monkeypatch, standin) if tls else standin


@pytest.fixture
def standin(tmp_path, checkpoint, monkeypatch):
    """The checkpoint served as ``Qwen/Qwen3-ForcedAligner-0.6B``, trusted by requests."""
    running = start_standin(tmp_path, monkeypatch, {REPO: checkpoint})
    yield running
    running.stop()


@pytest.fixture
def witness(tmp_path, checkpoint):
    """A second stand-in of the same commit that is asked nothing (a call that should make no
    request is checked here: the first stand-in may still be recording its last answers)."""
    running = HubStandIn({REPO: checkpoint}, tmp_path / "ca-witness").start()
    yield running
    running.stop()


def trust(monkeypatch, standin: HubStandIn) -> HubStandIn:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(standin.ca_bundle))
    return standin


def fetch(standin: HubStandIn, cache: Path, **kwargs) -> Path:
    return hub.fetch_checkpoint(REPO, endpoint=standin.endpoint, cache_dir=cache, **kwargs)


def set_offline(monkeypatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def failure(call) -> str:
    """The message of the CheckpointUnavailable that ``call()`` raises."""
    with pytest.raises(hub.CheckpointUnavailable) as caught:
        call()
    return str(caught.value)


# -- fetch_checkpoint: where the files go -------------------------------------------------------


def test_fetch_into_the_cache_gives_the_snapshot_of_the_commit_and_sends_the_token(
    standin, tmp_path
):
    cache = tmp_path / "cache"
    folder = fetch(standin, cache, token="hf_secret")
    commit = standin.commits[REPO]
    assert folder == cache / REPO_FOLDER / "snapshots" / commit
    assert {p.name for p in folder.iterdir()} == ALIGNER_NAMES | {"model.safetensors"}
    hub_requests = [s for s in standin.seen if s.path.startswith(("/api/", f"/{REPO}/resolve/"))]
    assert any("/resolve/" in s.path for s in hub_requests)
    assert all(s.authorization == "Bearer hf_secret" for s in hub_requests), hub_requests


def test_offline_the_cache_of_the_cache_dir_is_served_without_a_request(
    standin, witness, tmp_path, monkeypatch
):
    cache = tmp_path / "cache"
    online = fetch(standin, cache)
    trust(monkeypatch, witness)
    set_offline(monkeypatch)
    assert fetch(witness, cache) == online
    assert witness.seen == []


def test_offline_a_folder_fetched_before_is_served(standin, tmp_path, monkeypatch):
    target = tmp_path / "airgap"
    cache = tmp_path / "cache"
    assert fetch(standin, cache, local_dir=target) == target
    set_offline(monkeypatch)
    assert fetch(standin, cache, local_dir=target) == target
    assert marker_of(target) == "main"


def test_offline_a_revision_gives_the_commit_it_was_fetched_at(tmp_path, monkeypatch):
    older = write_checkpoint(tmp_path / "older", "older")
    newer = write_checkpoint(tmp_path / "newer", "newer")
    standin = start_standin(tmp_path, monkeypatch, {REPO: newer}, older={REPO: older})
    cache = tmp_path / "cache"
    try:
        at_v1 = fetch(standin, cache, revision="v1")
        at_main = fetch(standin, cache)
    finally:
        standin.stop()
    assert at_v1.name == standin.older_commits[REPO] and marker_of(at_v1) == "older"
    assert at_main.name == standin.commits[REPO] and marker_of(at_main) == "newer"
    set_offline(monkeypatch)
    assert fetch(standin, cache, revision="v1") == at_v1
    assert fetch(standin, cache) == at_main


def test_after_a_failed_probe_the_cache_is_served_and_nothing_more_is_asked(
    standin, witness, tmp_path, monkeypatch
):
    cache = tmp_path / "cache"
    online = fetch(standin, cache)
    trust(monkeypatch, witness)
    refused = requests.exceptions.ConnectionError("[Errno 111] Connection refused")
    monkeypatch.setattr(hub, "_list_repo", lambda *args: refused)
    assert fetch(witness, cache) == online
    assert witness.seen == []  # not a download that skips the checks


def test_an_unreachable_hub_serves_the_cache(standin, tmp_path):
    cache = tmp_path / "cache"
    online = fetch(standin, cache)
    dead = f"https://127.0.0.1:{closed_port()}"
    assert hub.fetch_checkpoint(REPO, endpoint=dead, cache_dir=cache) == online


# -- fetch_checkpoint: what a user reads when it cannot -----------------------------------------


def test_offline_without_a_copy_names_the_cache_and_the_way_out(tmp_path, monkeypatch):
    set_offline(monkeypatch)
    cache = tmp_path / "cache"
    message = failure(lambda: hub.fetch_checkpoint(REPO, endpoint="https://hub", cache_dir=cache))
    assert message == (
        f"cannot get {REPO}: HF_HUB_OFFLINE is set, and the Hugging Face cache ({cache}) holds "
        f"no copy of it. {ADVICE}"
    )
    default_cache = tmp_path / "default-cache"  # HF_HUB_CACHE
    message = failure(lambda: hub.fetch_checkpoint(REPO, revision="v2", endpoint="https://hub"))
    assert message == (
        f"cannot get {REPO} at revision v2: HF_HUB_OFFLINE is set, and the Hugging Face cache "
        f"({default_cache}) holds no copy of it. {ADVICE}"
    )


def test_an_unreachable_hub_without_a_copy_says_why_it_cannot_be_reached(tmp_path):
    dead = f"https://127.0.0.1:{closed_port()}"
    cache = tmp_path / "cache"
    message = failure(lambda: hub.fetch_checkpoint(REPO, endpoint=dead + "/", cache_dir=cache))
    assert message == (
        f"cannot get {REPO}: the Hub at {dead} cannot be reached (Connection refused), and the "
        f"Hugging Face cache ({cache}) holds no copy of it. {ADVICE}"
    )


def test_an_incomplete_copy_is_named_with_what_it_misses(standin, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    folder = fetch(standin, cache)
    (folder / "model.safetensors").unlink()
    set_offline(monkeypatch)
    assert failure(lambda: fetch(standin, cache)) == (
        f"the copy of {REPO} in {folder} is incomplete (missing *.safetensors): an earlier "
        "download was interrupted. Run again with network access to finish it (it resumes), or: "
        f"{ADVICE}"
    )


def test_a_missing_repository_or_revision_is_named(standin, tmp_path):
    cache = tmp_path / "cache"
    for revision in (None, "main"):  # the default revision is not repeated
        message = failure(
            lambda revision=revision: hub.fetch_checkpoint(
                "Qwen/no-such-model", revision, endpoint=standin.endpoint, cache_dir=cache
            )
        )
        assert message == (
            f"cannot download Qwen/no-such-model: no such repository on {standin.endpoint} (or it "
            "is private: set HF_TOKEN). A local checkpoint folder must exist and be given as a path"
        )
    message = failure(lambda: fetch(standin, cache, revision="v9"))
    assert message == f"cannot download {REPO} at revision v9: no such revision"


def test_a_gated_repository_asks_for_a_token(standin, tmp_path, monkeypatch):
    def gated(handler, rest, blobs):
        handler._error(
            403, "GatedRepo", "Access to model Qwen/Qwen3-ForcedAligner-0.6B is restricted"
        )

    monkeypatch.setattr(hub_standin._Handler, "_model_info", gated)
    assert failure(lambda: fetch(standin, tmp_path / "cache")) == (
        f"cannot download {REPO}: access is restricted; accept its terms on the Hub and set "
        "HF_TOKEN to a token of your account"
    )


def test_a_hub_error_names_the_answer_and_says_to_run_again(standin, tmp_path, monkeypatch):
    def broken(handler, rest, blobs):
        handler._send(500, {"Content-Type": "text/plain"}, b"down for maintenance")

    monkeypatch.setattr(hub_standin._Handler, "_model_info", broken)
    message = failure(lambda: fetch(standin, tmp_path / "cache"))
    assert message.startswith(f"cannot download {REPO}: HfHubHTTPError: 500 Server Error: ")
    assert message.endswith(". Run again to resume the download")


def test_an_untrusted_certificate_is_reported_with_the_proxy_advice(standin, tmp_path, monkeypatch):
    import certifi

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())
    message = failure(lambda: fetch(standin, tmp_path / "cache"))
    assert message.startswith(
        f"cannot download {REPO}: TLS failure talking to {standin.endpoint} (SSLError: "
    )
    assert message.endswith(
        "). Behind a proxy that re-signs HTTPS, point REQUESTS_CA_BUNDLE at its CA bundle"
    )


def test_a_file_answer_of_another_commit_is_refused_naming_the_repository(
    tmp_path, checkpoint, monkeypatch
):
    other = "f" * 40
    standin = start_standin(
        tmp_path, monkeypatch, {REPO: checkpoint}, lies=Lies(commit_header=other)
    )
    try:
        message = failure(lambda: fetch(standin, tmp_path / "cache"))
    finally:
        standin.stop()
    commit = standin.commits[REPO]
    assert re.fullmatch(
        f"refusing to download {re.escape(REPO)} from {re.escape(standin.endpoint)}: it gives "
        f"the commit {other} in the X-Repo-Commit header of /{re.escape(REPO)}/resolve/{commit}/"
        rf"[\w.]+, for a download of commit {commit}",
        message,
    ), message


# -- fetch_checkpoint: the download limit and plain http ---------------------------------------


def test_the_limit_given_is_used_over_the_environments(standin, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    refusal = (
        f"refusing to download {REPO} from {standin.endpoint}: it lists model.safetensors at "
        "2.9 KiB, more than the download limit of {}; nothing was downloaded. " + LIMIT_ADVICE
    )
    assert failure(lambda: fetch(standin, cache, max_bytes=1000)) == refusal.format("1000 bytes")
    monkeypatch.setenv(hub.MAX_BYTES_ENV, "1K")
    assert failure(lambda: fetch(standin, cache)) == refusal.format("1 KiB")
    assert all(s.path.startswith("/api/") for s in standin.seen)  # no file was fetched
    folder = fetch(standin, cache, max_bytes=1 << 20)
    assert (folder / "model.safetensors").stat().st_size == WEIGHTS_BYTES


def test_a_plain_http_hub_is_used_only_when_allowed(tmp_path, checkpoint, monkeypatch):
    standin = start_standin(tmp_path, monkeypatch, {REPO: checkpoint}, tls=False)
    cache = tmp_path / "cache"
    refusal = (
        f"refusing to download from {standin.endpoint}: the Hub endpoint (HF_ENDPOINT) must be an "
        "https:// address, since over plain http anyone on the way can change the files. For a "
        "trusted mirror on your own network set QWEN3_ALIGNER_ALLOW_HTTP_HUB=1 "
        "(./scripts/fetch-model --allow-http)"
    )
    try:
        assert failure(lambda: fetch(standin, cache)) == refusal
        assert standin.seen == []
        folder = fetch(standin, cache, allow_http=True)
        assert folder.name == standin.commits[REPO]
        monkeypatch.setenv(hub.ALLOW_HTTP_ENV, "1")
        assert fetch(standin, cache) == folder
        assert failure(lambda: fetch(standin, cache, allow_http=False)) == refusal
    finally:
        standin.stop()


def test_the_endpoint_is_named_without_its_trailing_slash(tmp_path):
    message = failure(
        lambda: hub.fetch_checkpoint(
            REPO, endpoint="http://mirror.example/hub-X/", cache_dir=tmp_path / "cache"
        )
    )
    assert message.startswith(
        "refusing to download from http://mirror.example/hub-X: the Hub endpoint (HF_ENDPOINT)"
    )


# -- the small pieces -----------------------------------------------------------------------------


def test_require_https_accepts_https_and_allowed_http_only():
    hub.require_https("https://huggingface.co", False)
    hub.require_https("HTTPS://mirror.example", False)
    hub.require_https("http://mirror.example", True)
    hub.require_https("HTTP://mirror.example", True)
    for endpoint, allow in [("ftp://mirror.example", True), ("mirror.example", True)]:
        with pytest.raises(hub.UnsafeDownload) as caught:
            hub.require_https(endpoint, allow)
        assert str(caught.value) == (
            f"refusing to download from {endpoint!r}: the Hub endpoint (HF_ENDPOINT) must be an "
            "https:// address"
        )
    with pytest.raises(hub.UnsafeDownload) as caught:
        hub.require_https("HTTP://mirror.example", False)
    assert str(caught.value).startswith(
        "refusing to download from HTTP://mirror.example: the Hub endpoint (HF_ENDPOINT) must be "
        "an https:// address, since over plain http"
    )


@pytest.mark.parametrize(
    ("value", "allowed"),
    [
        ("1", True),
        ("true", True),
        ("True", True),
        (" YES ", True),
        ("yes", True),
        ("0", False),
        ("", False),
        ("no", False),
        ("on", False),
        ("2", False),
    ],
)
def test_http_allowed_reads_yes_words(value, allowed):
    assert hub.http_allowed({hub.ALLOW_HTTP_ENV: value}) is allowed


def test_http_allowed_defaults_to_the_process_environment(monkeypatch):
    assert hub.http_allowed() is False
    assert hub.http_allowed({}) is False
    monkeypatch.setenv(hub.ALLOW_HTTP_ENV, "yes")
    assert hub.http_allowed() is True


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 bytes"),
        (1023, "1023 bytes"),
        (1024, "1 KiB"),
        (1536, "1.5 KiB"),
        (1024 * 1000, "1000 KiB"),
        ((1 << 20) - 1, "1024 KiB"),  # rounded, still counted in KiB
        (1 << 20, "1 MiB"),
        (2206704, "2.1 MiB"),
        (1 << 30, "1 GiB"),
        (8 << 30, "8 GiB"),
        (1 << 40, "1 TiB"),
        (3 << 39, "1.5 TiB"),
        (1000 << 40, "1000 TiB"),
        (2048 << 40, "2048 TiB"),
    ],
)
def test_format_size(size, text):
    assert hub.format_size(size) == text


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1", 1),
        ("123", 123),
        ("1k", 1 << 10),
        ("1KiB", 1 << 10),
        ("1kb", 1 << 10),
        (" 2 M ", 2 << 20),
        ("1.5M", 3 << 19),
        ("8G", 8 << 30),
        ("8gib", 8 << 30),
        ("1T", 1 << 40),
        ("1.9", 1),
    ],
)
def test_parse_size(text, size):
    assert hub.parse_size(text) == size


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("lots", "'lots' is not a size (bytes, or a number with K, M, G or T: 8G)"),
        ("8X", "'8X' is not a size (bytes, or a number with K, M, G or T: 8G)"),
        ("-1", "'-1' is not a size (bytes, or a number with K, M, G or T: 8G)"),
        ("0", "'0' is not a size above zero"),
        ("0.0001K", "'0.0001K' is not a size above zero"),
        ("0.5", "'0.5' is not a size above zero"),
    ],
)
def test_parse_size_refuses_what_is_no_size(text, why):
    with pytest.raises(ValueError) as caught:
        hub.parse_size(text)
    assert str(caught.value) == why


def test_the_network_reason_is_the_operating_systems_words():
    refused = requests.exceptions.ConnectionError(
        "HTTPSConnectionPool(host='127.0.0.1', port=9): Max retries exceeded (Caused by "
        "NewConnectionError('<conn>: Failed to establish a new connection: "
        "[Errno 111] Connection refused'))"
    )
    assert hub._network_reason(refused) == "Connection refused"
    unknown = OSError("[Errno -3] Temporary failure in name resolution")
    assert hub._network_reason(unknown) == "Temporary failure in name resolution"
    assert hub._network_reason(requests.exceptions.ReadTimeout("read")) == "no answer within 20 s"
    dropped = requests.exceptions.ConnectionError("Remote end closed connection\nwithout response")
    assert hub._network_reason(dropped) == "ConnectionError: Remote end closed connection"


def test_is_hub_id(tmp_path, checkpoint):
    assert hub.is_hub_id(REPO) is True
    assert hub.is_hub_id(str(checkpoint)) is False
    assert hub.is_hub_id(str(tmp_path / "missing")) is False  # a path, not an id
    assert hub.is_hub_id(str(checkpoint / "config.json")) is False  # a file


def test_describe_source_says_where_the_checkpoint_comes_from(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "https://mirror.example")
    cache = tmp_path / "default-cache"
    assert hub.describe_source(REPO) == f"fetching {REPO} from https://mirror.example into {cache}"
    assert hub.describe_source(REPO, "v1") == (
        f"fetching {REPO} at v1 from https://mirror.example into {cache}"
    )
    set_offline(monkeypatch)
    assert hub.describe_source(REPO) == f"HF_HUB_OFFLINE is set: {REPO} from the cache {cache}"
    assert hub.describe_source(REPO, "v1") == (
        f"HF_HUB_OFFLINE is set: {REPO} at v1 from the cache {cache}"
    )


def test_resolve_checkpoint_hands_folders_over_and_fetches_hub_ids(
    tmp_path, checkpoint, monkeypatch
):
    fetched = []

    def fake_fetch(repo_id, revision=None, token=None):
        fetched.append((repo_id, revision, token))
        return tmp_path / "snapshot"

    monkeypatch.setattr(hub, "fetch_checkpoint", fake_fetch)
    assert hub.resolve_checkpoint(str(checkpoint)) == str(checkpoint)
    missing = str(tmp_path / "missing")
    assert hub.resolve_checkpoint(missing) == missing  # the model's load names the problem
    assert fetched == []
    with pytest.raises(ValueError) as caught:
        hub.resolve_checkpoint(str(checkpoint), revision="main")
    assert (
        str(caught.value) == f"--revision applies to hub ids, not to the folder {str(checkpoint)!r}"
    )
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    assert hub.resolve_checkpoint(REPO, revision="v1") == str(tmp_path / "snapshot")
    assert fetched == [(REPO, "v1", "hf_secret")]


# -- fetch-model: arguments ---------------------------------------------------------------------

USAGE = (
    "usage: scripts/fetch-model [-h] [--model MODEL] [--revision REVISION] [--max-bytes SIZE]\n"
    "                           [--allow-http]\n"
    "                           [dir]\n"
)


def test_fetch_model_defaults():
    assert vars(hub.parse_args([])) == {
        "dir": None,
        "model": REPO,
        "revision": None,
        "max_bytes": None,
        "allow_http": False,
    }


def test_fetch_model_takes_every_option():
    args = ["--model", "org/model", "--revision", "v1", "--max-bytes", "1.5G", "--allow-http"]
    assert vars(hub.parse_args([*args, "out/dir"])) == {
        "dir": Path("out/dir"),
        "model": "org/model",
        "revision": "v1",
        "max_bytes": 3 << 29,
        "allow_http": True,
    }


def test_fetch_model_help(capsys):
    with pytest.raises(SystemExit) as caught:
        hub.parse_args(["--help"])
    assert caught.value.code == 0
    assert capsys.readouterr().out == (
        USAGE + "\n"
        "Download the aligner checkpoint from the Hugging Face Hub, into the Hugging Face cache "
        "($HF_HOME)\n"
        "or into DIR (to copy to machines without internet).\n"
        "\n"
        "positional arguments:\n"
        "  dir                  folder to write the checkpoint into\n"
        "\n"
        "options:\n"
        "  -h, --help           show this help message and exit\n"
        "  --model MODEL        hub id (default Qwen/Qwen3-ForcedAligner-0.6B)\n"
        "  --revision REVISION  branch, tag or commit to fetch (default: main); a commit pins the "
        "weights\n"
        "  --max-bytes SIZE     refuse a download larger than SIZE: bytes, or K, M, G, T (powers "
        "of 1024)\n"
        "                       (default $QWEN3_ALIGNER_MAX_DOWNLOAD_BYTES, else 8GiB)\n"
        "  --allow-http         accept a plain-http HF_ENDPOINT, for a trusted mirror on your own "
        "network\n"
        "                       (default $QWEN3_ALIGNER_ALLOW_HTTP_HUB=1; otherwise https is "
        "required)\n"
    )


@pytest.mark.parametrize(
    ("size", "why"),
    [
        ("lots", "'lots' is not a size (bytes, or a number with K, M, G or T: 8G)"),
        ("0", "'0' is not a size above zero"),
    ],
)
def test_fetch_model_refuses_a_bad_size_with_usage(capsys, size, why):
    with pytest.raises(SystemExit) as caught:
        hub.parse_args(["--max-bytes", size])
    assert caught.value.code == 2
    assert capsys.readouterr().err == (
        f"{USAGE}scripts/fetch-model: error: argument --max-bytes: {why}\n"
    )


# -- fetch-model: messages and exit codes -------------------------------------------------------


def with_endpoint(standin: HubStandIn, cache: Path):
    """fetch_checkpoint aimed at the stand-in (HF_ENDPOINT is read once, at import)."""
    real = hub.fetch_checkpoint

    def fetch_here(repo_id, revision=None, local_dir=None, token=None, **checks):
        return real(repo_id, revision, local_dir, token, standin.endpoint, cache, **checks)

    return fetch_here


def test_fetch_model_writes_a_folder_and_says_how_to_serve_it(
    standin, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(hub, "fetch_checkpoint", with_endpoint(standin, tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    target = tmp_path.resolve() / "airgap"
    assert hub.main(["airgap"]) == 0
    assert marker_of(target) == "main"
    assert capsys.readouterr().out == (
        f"fetch-model: {REPO} -> {target}\n"
        f"fetch-model: checkpoint in {target}\n"
        f"fetch-model: serve it with ./scripts/serve --model {target}\n"
    )


def test_fetch_model_into_the_cache_names_the_cache_and_the_revision(
    standin, tmp_path, monkeypatch, capsys
):
    cache = tmp_path / "default-cache"  # HF_HUB_CACHE
    monkeypatch.setattr(hub, "fetch_checkpoint", with_endpoint(standin, cache))
    assert hub.main(["--revision", "main"]) == 0
    snapshot = cache / REPO_FOLDER / "snapshots" / standin.commits[REPO]
    assert capsys.readouterr().out == (
        f"fetch-model: {REPO} at main -> {cache}\n"
        f"fetch-model: checkpoint in {snapshot}\n"
        f"fetch-model: serve it with ./scripts/serve --model {snapshot}\n"
    )


def test_fetch_model_refusal_exits_1_with_the_reason_on_stderr(
    standin, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(hub, "fetch_checkpoint", with_endpoint(standin, tmp_path / "cache"))
    target = tmp_path / "airgap"
    assert hub.main(["--max-bytes", "2K", str(target)]) == 1
    captured = capsys.readouterr()
    assert captured.out == f"fetch-model: {REPO} -> {target}\n"
    assert captured.err == (
        f"fetch-model: error: refusing to download {REPO} from {standin.endpoint}: it lists "
        "model.safetensors at 2.9 KiB, more than the download limit of 2 KiB; nothing was "
        f"downloaded. {LIMIT_ADVICE}\n"
    )
    assert not target.exists()


def test_fetch_model_passes_its_options_and_the_token_on(tmp_path, monkeypatch, capsys):
    calls = []

    def fake_fetch(repo_id, revision=None, local_dir=None, token=None, **checks):
        calls.append((repo_id, revision, local_dir, token, checks))
        return tmp_path / "snapshot"

    monkeypatch.setattr(hub, "fetch_checkpoint", fake_fetch)
    assert hub.main([]) == 0
    monkeypatch.setenv("HF_TOKEN", "")  # set but empty: no token
    assert hub.main(["--revision", "v1", "--model", "org/model"]) == 0
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    options = ["--max-bytes", "2G", "--allow-http", str(tmp_path / "out")]
    assert hub.main(options) == 0
    unset = {"max_bytes": None, "allow_http": None}
    assert calls == [
        (REPO, None, None, None, unset),
        ("org/model", "v1", None, None, unset),
        (REPO, None, tmp_path / "out", "hf_secret", {"max_bytes": 2 << 30, "allow_http": True}),
    ]


class Transcript:
    """stdout and stderr in one list of what was written to which, and when each was flushed."""

    def __init__(self, events: list[tuple[str, str]], name: str) -> None:
        self.events, self.name = events, name

    def write(self, text: str) -> int:
        self.events.append((self.name, text))
        return len(text)

    def flush(self) -> None:
        self.events.append((self.name, "<flush>"))


def test_fetch_model_flushes_each_line_as_it_prints(tmp_path, monkeypatch):
    """Its lines reach a pipe (a container's log) when printed, not when the download ends."""
    events: list[tuple[str, str]] = []
    monkeypatch.setattr(sys, "stdout", Transcript(events, "out"))
    monkeypatch.setattr(sys, "stderr", Transcript(events, "err"))
    results = [tmp_path / "snapshot", hub.CheckpointUnavailable("cannot get it")]

    def fake_fetch(*args, **kwargs):
        result = results.pop(0)
        if isinstance(result, Exception):
            raise result
        return result

    monkeypatch.setattr(hub, "fetch_checkpoint", fake_fetch)
    cache = tmp_path / "default-cache"
    snapshot = tmp_path / "snapshot"
    assert hub.main([]) == 0
    assert hub.main([]) == 1
    first = [("out", f"fetch-model: {REPO} -> {cache}"), ("out", "\n"), ("out", "<flush>")]
    assert events == [
        *first,
        ("out", f"fetch-model: checkpoint in {snapshot}"),
        ("out", "\n"),
        ("out", "<flush>"),
        ("out", f"fetch-model: serve it with ./scripts/serve --model {snapshot}"),
        ("out", "\n"),
        ("out", "<flush>"),
        *first,
        ("err", "fetch-model: error: cannot get it"),
        ("err", "\n"),
        ("err", "<flush>"),
    ]


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ValueError(), "ValueError"),
        (OSError("  disk full\nand more lines  "), "OSError: disk full"),
        (RuntimeError("ends in X"), "RuntimeError: ends in X"),
        (ConnectionError(": "), "ConnectionError"),
    ],
)
def test_an_error_is_named_by_its_type_and_first_line(error, expected):
    assert hub._short(error) == expected
