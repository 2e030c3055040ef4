"""Fetching the checkpoint from the Hub, against an HTTPS stand-in of it that ``huggingface_hub``
itself is checked against first, and against the stand-in as a malicious mirror; the backend
stub's libpython."""

from __future__ import annotations

import hashlib
import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from hub_standin import HubStandIn, Lies

from qwen3_aligner_triton import hub
from qwen3_aligner_triton.params import DEFAULT_CHECKPOINT
from qwen3_aligner_triton.triton_install import ServerError, python_library_dir, server_environment

REPO = DEFAULT_CHECKPOINT


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def standin(tmp_path, tiny_checkpoint, monkeypatch):
    """The tiny checkpoint served as ``Qwen/Qwen3-ForcedAligner-0.6B``, trusted by requests."""
    with HubStandIn({REPO: tiny_checkpoint}, tmp_path / "ca") as running:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(running.ca_bundle))
        yield running


def fetch(standin: HubStandIn, cache: Path, **kwargs) -> Path:
    return hub.fetch_checkpoint(REPO, endpoint=standin.endpoint, cache_dir=cache, **kwargs)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the stand-in answers as the Hub does -------------------------------------------------------


def test_hf_hub_download_gets_small_and_lfs_files_from_the_standin(standin, tmp_path):
    from huggingface_hub import hf_hub_download

    cache = tmp_path / "cache"
    for name in ("config.json", "model.safetensors"):
        path = hf_hub_download(REPO, name, cache_dir=cache, endpoint=standin.endpoint)
        assert sha256(Path(path)) == sha256(standin.repos[REPO] / name)
    blobs = {p.name for p in (cache / "models--Qwen--Qwen3-ForcedAligner-0.6B" / "blobs").iterdir()}
    # huggingface_hub names blobs by the ETag it read: sha256 for LFS files (X-Linked-Etag)
    assert sha256(standin.repos[REPO] / "model.safetensors") in blobs
    lfs_heads = [s for s in standin.seen if s.method == "HEAD" and "model.safetensors" in s.path]
    assert lfs_heads and lfs_heads[0].status == 302


def test_hub_errors_come_back_as_huggingface_hub_errors(standin, tmp_path):
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    kwargs = {"cache_dir": tmp_path / "cache", "endpoint": standin.endpoint}
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO, "no-such-file.json", **kwargs)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(REPO, "config.json", revision="v9", **kwargs)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("Qwen/no-such-model", "config.json", **kwargs)


def test_snapshot_download_fetches_the_aligner_files_at_the_commit(standin, tmp_path):
    from huggingface_hub import snapshot_download

    cache = tmp_path / "cache"
    folder = Path(
        snapshot_download(
            REPO, cache_dir=cache, endpoint=standin.endpoint, allow_patterns=list(hub.ALIGNER_FILES)
        )
    )
    commit = standin.commits[REPO]
    assert folder.name == commit
    ref = cache / "models--Qwen--Qwen3-ForcedAligner-0.6B" / "refs" / "main"
    assert ref.read_text() == commit
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        p.name for p in standin.repos[REPO].iterdir()
    )


# -- fetch_checkpoint ---------------------------------------------------------------------------


def test_fetch_downloads_only_what_the_aligner_loads(tmp_path, tiny_checkpoint, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    for f in tiny_checkpoint.iterdir():
        (repo / f.name).write_bytes(f.read_bytes())
    (repo / "README.md").write_text("# model card\n")
    (repo / "pytorch_model.bin").write_bytes(b"\0" * 1000)
    with HubStandIn({REPO: repo}, tmp_path / "ca") as standin:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(standin.ca_bundle))
        folder = fetch(standin, tmp_path / "cache")
    names = {p.name for p in folder.iterdir()}
    assert names == {p.name for p in tiny_checkpoint.iterdir()}
    assert sha256(folder / "model.safetensors") == sha256(tiny_checkpoint / "model.safetensors")


def test_token_is_sent(standin, tmp_path):
    fetch(standin, tmp_path / "cache", token="hf_test_token")
    api_calls = [s for s in standin.seen if s.path.startswith("/api/models/")]
    assert api_calls and all(s.authorization == "Bearer hf_test_token" for s in api_calls)


def test_revision_pins_a_commit(standin, tmp_path):
    commit = standin.commits[REPO]
    folder = fetch(standin, tmp_path / "cache", revision=commit)
    assert folder.name == commit
    assert any(f"/revision/{commit}" in s.path for s in standin.seen)
    with pytest.raises(hub.CheckpointUnavailable, match="no such revision"):
        fetch(standin, tmp_path / "cache", revision="v9")


def test_interrupted_download_resumes_with_a_range_request(tmp_path, tiny_checkpoint, monkeypatch):
    from huggingface_hub import constants

    # The real weights stream in 10 MB chunks; a smaller chunk lets the 2 MB test file be cut
    # after some of it reached the disk.
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 64 * 1024)
    cut = {"model.safetensors"}
    with HubStandIn({REPO: tiny_checkpoint}, tmp_path / "ca", cut_once=cut) as standin:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(standin.ca_bundle))
        folder = fetch(standin, tmp_path / "cache")
    weights = [s for s in standin.seen if s.method == "GET" and s.path.startswith("/lfs/")]
    assert [s.status for s in weights] == [-200, 206], weights  # cut off, then the rest
    first_byte = int(weights[1].range.removeprefix("bytes=").split("-")[0])
    assert 0 < first_byte < (tiny_checkpoint / "model.safetensors").stat().st_size
    assert sha256(folder / "model.safetensors") == sha256(tiny_checkpoint / "model.safetensors")


def test_offline_serves_the_cache_without_a_request(standin, tmp_path, monkeypatch):
    from huggingface_hub import constants

    online = fetch(standin, tmp_path / "cache")
    standin.stop()
    before = len(standin.seen)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert fetch(standin, tmp_path / "cache") == online
    assert len(standin.seen) == before


def test_offline_without_a_cache_says_how_to_serve_a_folder(standin, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(hub.CheckpointUnavailable) as caught:
        fetch(standin, tmp_path / "empty-cache")
    message = str(caught.value)
    assert "HF_HUB_OFFLINE is set" in message
    assert "./scripts/fetch-model" in message and "--model /path/to/checkpoint" in message
    assert not standin.seen


def test_unreachable_hub_serves_the_cache(standin, tmp_path):
    online = fetch(standin, tmp_path / "cache")
    dead = f"https://127.0.0.1:{closed_port()}"
    assert hub.fetch_checkpoint(REPO, endpoint=dead, cache_dir=tmp_path / "cache") == online


def test_unreachable_hub_without_a_cache_fails_fast_and_clearly(tmp_path):
    dead = f"https://127.0.0.1:{closed_port()}"
    started = time.monotonic()
    with pytest.raises(hub.CheckpointUnavailable) as caught:
        hub.fetch_checkpoint(REPO, endpoint=dead, cache_dir=tmp_path / "cache")
    assert time.monotonic() - started < 60
    message = str(caught.value)
    assert f"the Hub at {dead} cannot be reached" in message
    assert "holds no copy" in message and "./scripts/serve --model" in message


def test_an_interrupted_first_download_is_not_served_offline(standin, tmp_path, monkeypatch):
    from huggingface_hub import constants

    folder = fetch(standin, tmp_path / "cache")
    (folder / "model.safetensors").unlink()  # as if the download had stopped before the weights
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(hub.CheckpointUnavailable, match=r"incomplete \(missing \*\.safetensors\)"):
        fetch(standin, tmp_path / "cache")


def test_a_certificate_that_is_not_trusted_is_reported(standin, tmp_path, monkeypatch):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(Path(__import__("certifi").where())))
    with pytest.raises(hub.CheckpointUnavailable, match="TLS failure"):
        fetch(standin, tmp_path / "cache")


def test_folders_are_handed_over_as_they_are(tiny_checkpoint, tmp_path):
    assert hub.resolve_checkpoint(str(tiny_checkpoint)) == str(tiny_checkpoint)
    missing = str(tmp_path / "missing")
    assert hub.resolve_checkpoint(missing) == missing  # the model's load names the problem
    with pytest.raises(ValueError, match="--revision applies to hub ids"):
        hub.resolve_checkpoint(str(tiny_checkpoint), revision="main")


def test_fetch_model_writes_a_folder_to_copy(standin, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(hub, "fetch_checkpoint", _with_endpoint(standin, tmp_path / "cache"))
    target = tmp_path / "airgap"
    assert hub.main([str(target)]) == 0
    assert sha256(target / "model.safetensors") == sha256(standin.repos[REPO] / "model.safetensors")
    out = capsys.readouterr().out
    assert f"./scripts/serve --model {target}" in out


def _with_endpoint(standin, cache):
    real = hub.fetch_checkpoint

    def fetch_here(repo_id, revision=None, local_dir=None, token=None, **checks):
        return real(repo_id, revision, local_dir, token, standin.endpoint, cache, **checks)

    return fetch_here


# -- two commits: the download is the revision asked for ---------------------------------------

OLDER_ONLY = "added_tokens.json"  # in the older commit only
NEWER_ONLY = "generation_config.json"  # added by main's commit


def write_commit(folder: Path, marker: str, only: str) -> Path:
    """A loadable-looking checkpoint folder whose files say which commit they are of."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen3", "marker": marker}))
    (folder / "preprocessor_config.json").write_text(json.dumps({"marker": marker}))
    (folder / "tokenizer_config.json").write_text('{"model_max_length": 4096}')  # same in both
    (folder / "model.safetensors").write_bytes(f"weights of the {marker} commit;".encode() * 64)
    (folder / only).write_text(json.dumps({"only in": marker}))
    (folder / "README.md").write_text("# model card\n")  # not downloaded
    return folder


@pytest.fixture
def two_commits(tmp_path, monkeypatch):
    """A stand-in whose repository has an older commit (branch ``v1``) and ``main`` after it."""
    older = write_commit(tmp_path / "older", "older", OLDER_ONLY)
    newer = write_commit(tmp_path / "newer", "newer", NEWER_ONLY)
    with HubStandIn({REPO: newer}, tmp_path / "ca", older={REPO: older}) as running:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(running.ca_bundle))
        yield running


def assert_files_of(folder: Path, commit_folder: Path) -> None:
    """``folder`` holds exactly the aligner's files of ``commit_folder``, byte for byte."""
    marker = json.loads((commit_folder / "config.json").read_text())["marker"]
    assert json.loads((folder / "config.json").read_text())["marker"] == marker
    got = {p.name: sha256(p) for p in folder.iterdir() if p.is_file()}
    wanted = {p.name: sha256(p) for p in commit_folder.iterdir() if p.name != "README.md"}
    assert got == wanted


def refs_in(cache: Path) -> dict[str, str]:
    """The cache's refs of the repository: name -> commit."""
    refs = cache / "models--Qwen--Qwen3-ForcedAligner-0.6B" / "refs"
    return {p.relative_to(refs).as_posix(): p.read_text() for p in refs.rglob("*") if p.is_file()}


def test_the_standin_serves_each_commit_as_the_hub_does(two_commits, tmp_path):
    from huggingface_hub import (
        HfApi,
        get_hf_file_metadata,
        hf_hub_download,
        hf_hub_url,
        snapshot_download,
    )
    from huggingface_hub.errors import EntryNotFoundError, RevisionNotFoundError

    standin, endpoint = two_commits, two_commits.endpoint
    older, newer = standin.older_commits[REPO], standin.commits[REPO]
    assert older != newer
    kwargs = {"cache_dir": tmp_path / "cache", "endpoint": endpoint}
    api = HfApi(endpoint=endpoint)
    for revision, commit, marker in [
        (None, newer, "newer"),
        ("main", newer, "newer"),
        (newer, newer, "newer"),
        ("v1", older, "older"),
        (older, older, "older"),
    ]:
        assert api.model_info(REPO, revision=revision).sha == commit
        path = hf_hub_download(REPO, "config.json", revision=revision, **kwargs)
        assert json.loads(Path(path).read_text())["marker"] == marker
        assert Path(path).parent.name == commit
    # ETags are per content: a file changed between the commits has two, an unchanged one one.
    changed = {"config.json": True, "model.safetensors": True, "tokenizer_config.json": False}
    for name, changes in changed.items():
        old, new = (
            get_hf_file_metadata(hf_hub_url(REPO, name, revision=rev, endpoint=endpoint))
            for rev in (older, "main")
        )
        assert (old.commit_hash, new.commit_hash) == (older, newer)
        assert (old.etag != new.etag) is changes, name
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO, OLDER_ONLY, revision="main", **kwargs)
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO, NEWER_ONLY, revision=older, **kwargs)
    with pytest.raises(RevisionNotFoundError):
        api.model_info(REPO, revision=older[:7])  # short hashes are not served
    folder = Path(
        snapshot_download(REPO, revision=older, allow_patterns=list(hub.ALIGNER_FILES), **kwargs)
    )
    assert folder.name == older
    assert_files_of(folder, standin.older[REPO])


def test_fetch_model_revision_writes_the_files_of_that_commit(two_commits, tmp_path, monkeypatch):
    standin = two_commits
    older = standin.older_commits[REPO]
    monkeypatch.setattr(hub, "fetch_checkpoint", _with_endpoint(standin, tmp_path / "cache"))
    target = tmp_path / "airgap"
    assert hub.main(["--revision", older, str(target)]) == 0
    assert_files_of(target, standin.older[REPO])
    assert not (target / NEWER_ONLY).exists()
    files = [s.path for s in standin.seen if "/resolve/" in s.path]
    assert files and all(f"/resolve/{older}/" in path for path in files)


def test_resolve_checkpoint_at_a_commit_gives_that_commits_files(
    two_commits, tmp_path, monkeypatch
):
    standin = two_commits
    older, newer = standin.older_commits[REPO], standin.commits[REPO]
    cache = tmp_path / "cache"
    monkeypatch.setattr(hub, "fetch_checkpoint", _with_endpoint(standin, cache))
    folder = Path(hub.resolve_checkpoint(REPO, revision=older))
    assert folder == cache / "models--Qwen--Qwen3-ForcedAligner-0.6B" / "snapshots" / older
    assert_files_of(folder, standin.older[REPO])
    refs = refs_in(cache)
    assert "main" not in refs and all(commit == older for commit in refs.values()), refs
    # main afterwards, into the same cache: its own snapshot, the older one left as it was
    latest = Path(hub.resolve_checkpoint(REPO))
    assert latest.name == newer
    assert_files_of(latest, standin.repos[REPO])
    assert_files_of(folder, standin.older[REPO])
    assert refs_in(cache)["main"] == newer


@pytest.mark.parametrize("mode", ["local-dir", "cache"])
def test_no_revision_gives_the_files_of_main(two_commits, tmp_path, mode):
    standin = two_commits
    newer = standin.commits[REPO]
    folder = fetch_into(standin, tmp_path, mode)
    assert_files_of(folder, standin.repos[REPO])
    assert not (folder / OLDER_ONLY).exists()
    files = [s.path for s in standin.seen if "/resolve/" in s.path]
    assert files and all(f"/resolve/{newer}/" in path for path in files)
    if mode == "cache":
        assert folder.name == newer
        assert refs_in(tmp_path / "a" / "b" / "c" / "d" / "cache") == {"main": newer}


@pytest.mark.parametrize("mode", ["local-dir", "cache"])
def test_a_branch_gives_the_files_of_the_commit_it_points_at(two_commits, tmp_path, mode):
    standin = two_commits
    older = standin.older_commits[REPO]
    folder = fetch_into(standin, tmp_path, mode, revision="v1")
    assert_files_of(folder, standin.older[REPO])
    assert not (folder / NEWER_ONLY).exists()
    listings = [s.path for s in standin.seen if s.path.startswith("/api/models/")]
    assert "/revision/v1" in listings[0] and f"/revision/{older}" in listings[1]
    files = [s.path for s in standin.seen if "/resolve/" in s.path]
    assert files and all(f"/resolve/{older}/" in path for path in files)
    if mode == "cache":
        assert folder.name == older
        assert refs_in(tmp_path / "a" / "b" / "c" / "d" / "cache") == {"v1": older}


# -- a mirror that lies -------------------------------------------------------------------------

CLIMBING = "../../ESCAPED-local.json"


@pytest.fixture
def mirror(tmp_path, tiny_checkpoint, monkeypatch):
    """Starts stand-ins of the tiny checkpoint that tell the given lies; stops them at the end."""
    started: list[HubStandIn] = []

    def start(lies: Lies | None = None, tls: bool = True) -> HubStandIn:
        standin = HubStandIn({REPO: tiny_checkpoint}, tmp_path / "ca", lies=lies or Lies(), tls=tls)
        started.append(standin.start())
        if tls:
            monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(standin.ca_bundle))
        return standin

    yield start
    for standin in started:
        standin.stop()


def fetch_into(standin: HubStandIn, tmp_path: Path, mode: str, **kwargs) -> Path:
    """fetch_checkpoint into a folder (``local-dir``) or the cache (``cache``), four folders down
    ``tmp_path``: a path that climbs out of either still lands in ``tmp_path``."""
    deep = tmp_path / "a" / "b" / "c" / "d"
    local_dir = deep / "airgap" if mode == "local-dir" else None
    return hub.fetch_checkpoint(
        REPO, local_dir=local_dir, endpoint=standin.endpoint, cache_dir=deep / "cache", **kwargs
    )


def escaped(tmp_path: Path) -> list[Path]:
    """What a lying mirror got written (names with ESCAPED in them), in or next to ``tmp_path``."""
    return sorted({*tmp_path.rglob("*ESCAPED*"), *tmp_path.parent.glob("*ESCAPED*")})


def downloads(standin: HubStandIn) -> list[str]:
    return [s.path for s in standin.seen if not s.path.startswith("/api/")]


@pytest.mark.parametrize(
    ("mode", "name"),
    [
        ("local-dir", CLIMBING),
        ("cache", CLIMBING),
        ("local-dir", "/ESCAPED-absolute.json"),
        ("local-dir", "..\\..\\ESCAPED-backslash.json"),
        ("local-dir", "ESCAPED-nul\x00.json"),
    ],
)
def test_a_listed_name_that_could_leave_the_folder_is_refused_before_any_download(
    mirror, tmp_path, mode, name
):
    standin = mirror(Lies(extra_files={name: b"{}"}))
    with pytest.raises(hub.CheckpointUnavailable) as caught:
        fetch_into(standin, tmp_path, mode)
    assert type(caught.value).__name__ == "UnsafeDownload"
    message = str(caught.value)
    assert f"lists a file named {name!r}" in message and "nothing was downloaded" in message
    assert escaped(tmp_path) == []
    assert downloads(standin) == []


@pytest.mark.parametrize(
    ("name", "etag"),
    [
        ("config.json", '"../../../../../ESCAPED-etag"'),  # ETag of a small file
        ("config.json", 'W/"../../../../../ESCAPED-etag"'),
        ("model.safetensors", '"../../../../../ESCAPED-etag"'),  # X-Linked-Etag of an LFS file
    ],
)
def test_an_etag_that_climbs_out_of_the_cache_is_refused(mirror, tmp_path, name, etag):
    from huggingface_hub import get_session

    standin = mirror(Lies(etags={name: etag}))
    with pytest.raises(hub.CheckpointUnavailable, match="ESCAPED-etag") as caught:
        fetch_into(standin, tmp_path, "cache")
    assert "40 or 64 hexadecimal digits" in str(caught.value)
    assert escaped(tmp_path) == []
    assert not get_session().hooks["response"]  # the checks are gone with the download


@pytest.mark.parametrize("commit", ["../../../ESCAPED-sha", "g" * 40, "0123abc"])
@pytest.mark.parametrize("mode", ["local-dir", "cache"])
def test_a_commit_that_is_not_a_hash_is_refused(mirror, tmp_path, commit, mode):
    standin = mirror(Lies(commit=commit))
    with pytest.raises(hub.CheckpointUnavailable, match="not a commit hash") as caught:
        fetch_into(standin, tmp_path, mode)
    assert repr(commit) in str(caught.value)
    assert escaped(tmp_path) == []
    assert downloads(standin) == []


@pytest.mark.parametrize(
    ("header", "why"),
    [("../../../ESCAPED-header", "not a commit hash"), ("f" * 40, "for a download of commit")],
)
def test_a_file_answer_from_another_commit_is_refused(mirror, tmp_path, header, why):
    standin = mirror(Lies(commit_header=header))
    with pytest.raises(hub.CheckpointUnavailable, match="X-Repo-Commit") as caught:
        fetch_into(standin, tmp_path, "cache")
    assert why in str(caught.value)
    assert escaped(tmp_path) == []


def test_a_listing_that_changes_after_the_check_is_refused(mirror, tmp_path):
    """The first listing tells the truth, snapshot_download's own one lies."""
    lies = Lies(extra_files={CLIMBING: b"{}"}, commit="../../../ESCAPED-sha", from_listing=2)
    standin = mirror(lies)
    with pytest.raises(hub.CheckpointUnavailable, match="in its listing") as caught:
        fetch_into(standin, tmp_path, "cache")
    assert "ESCAPED-sha" in str(caught.value) and standin.listings == 2
    assert escaped(tmp_path) == []
    assert downloads(standin) == []


def test_a_file_listed_only_after_the_check_is_not_downloaded(mirror, tmp_path, tiny_checkpoint):
    standin = mirror(Lies(extra_files={CLIMBING: b"{}"}, from_listing=2))
    folder = fetch_into(standin, tmp_path, "local-dir")
    assert standin.listings == 2
    assert {p.name for p in folder.iterdir() if p.is_file()} == {
        p.name for p in tiny_checkpoint.iterdir()
    }
    assert escaped(tmp_path) == []


def test_a_file_listed_above_the_limit_is_refused_before_downloading(mirror, tmp_path, monkeypatch):
    monkeypatch.setenv("QWEN3_ALIGNER_MAX_DOWNLOAD_BYTES", "1M")
    standin = mirror()
    with pytest.raises(hub.CheckpointUnavailable) as caught:
        fetch_into(standin, tmp_path, "cache")
    message = str(caught.value)
    assert re.search(
        r"lists model\.safetensors at [\d.]+ MiB, more than the download limit of 1 MiB", message
    )
    assert "QWEN3_ALIGNER_MAX_DOWNLOAD_BYTES" in message and "--max-bytes" in message
    assert downloads(standin) == []


def test_files_that_add_up_to_more_than_the_limit_are_refused(mirror, tmp_path, tiny_checkpoint):
    weights = (tiny_checkpoint / "model.safetensors").stat().st_size
    standin = mirror()
    with pytest.raises(hub.CheckpointUnavailable, match="add up to"):
        fetch_into(standin, tmp_path, "cache", max_bytes=weights + 100)
    assert downloads(standin) == []


def test_a_mirror_that_sends_more_than_it_lists_is_cut_off(mirror, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 64 * 1024)
    standin = mirror(Lies(sizes={"model.safetensors": 1000}))
    limit = 1 << 20
    with pytest.raises(
        hub.CheckpointUnavailable, match="sent more than the download limit of 1 MiB"
    ):
        fetch_into(standin, tmp_path, "cache", max_bytes=limit)
    cache = tmp_path / "a" / "b" / "c" / "d" / "cache"
    written = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file() and not p.is_symlink())
    assert 0 < written <= limit


def test_a_plain_http_endpoint_is_refused_unless_allowed(mirror, tmp_path, monkeypatch):
    standin = mirror(tls=False)
    assert standin.endpoint.startswith("http://")
    with pytest.raises(hub.CheckpointUnavailable, match="must be an https:// address") as caught:
        fetch_into(standin, tmp_path, "cache")
    assert "QWEN3_ALIGNER_ALLOW_HTTP_HUB=1" in str(caught.value) and "--allow-http" in str(
        caught.value
    )
    assert standin.seen == []
    folder = fetch_into(standin, tmp_path, "cache", allow_http=True)
    assert folder.name == standin.commits[REPO]
    monkeypatch.setenv("QWEN3_ALIGNER_ALLOW_HTTP_HUB", "1")
    assert fetch_into(standin, tmp_path, "cache") == folder


def test_a_redirect_to_plain_http_is_refused(mirror, tmp_path):
    cdn = mirror(tls=False)
    standin = mirror(Lies(lfs_endpoint=cdn.endpoint))
    with pytest.raises(
        hub.CheckpointUnavailable, match=r"to http://127\.0\.0\.1:\d+, which is not"
    ):
        fetch_into(standin, tmp_path, "cache")
    weights = sha256(standin.repos[REPO] / "model.safetensors")  # its blob's name in the cache
    cache = tmp_path / "a" / "b" / "c" / "d" / "cache"
    assert not any(p.stat().st_size for p in cache.rglob(f"{weights}*"))


def test_the_download_is_pinned_to_the_commit_the_branch_points_at(standin, tmp_path):
    folder = fetch(standin, tmp_path / "cache")
    commit = standin.commits[REPO]
    assert folder.name == commit
    listings = [s.path for s in standin.seen if s.path.startswith("/api/models/")]
    assert "blobs=True" in listings[0]  # the first asks for sizes, of the branch
    assert f"/revision/{commit}" in listings[1]  # snapshot_download's, of the commit
    files = [s.path for s in standin.seen if "/resolve/" in s.path]
    assert files and all(f"/resolve/{commit}/" in path for path in files)
    refs = tmp_path / "cache" / "models--Qwen--Qwen3-ForcedAligner-0.6B" / "refs"
    assert (refs / "main").read_text() == commit  # for later starts offline


@pytest.mark.parametrize(
    "name", ["config.json", "sub/dir/tokenizer.json", "model-00001-of-00002.safetensors", "ü.json"]
)
def test_plain_relative_names_are_accepted(name):
    assert hub.unsafe_name_reason(name) is None


CLIMBS = "its '..' climbs out of the download folder"
ABSOLUTE = "it is an absolute path"
EMPTY_SEGMENT = "it has an empty or '.' segment"


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("../x.json", CLIMBS),
        ("a/../../x.json", CLIMBS),
        ("a/..", CLIMBS),
        ("/etc/x.json", ABSOLUTE),
        ("C:/x.json", ABSOLUTE),
        ("C:x.json", ABSOLUTE),  # a drive-relative Windows path
        ("a\\..\\x.json", "it holds a backslash"),
        ("a\x00.json", "it holds the control or invisible character U+0000"),
        ("a\n.json", "it holds the control or invisible character U+000A"),
        ("a\u202e.json", "it holds the control or invisible character U+202E"),
        ("", "an empty name"),
        ("./x.json", EMPTY_SEGMENT),
        ("a//x.json", EMPTY_SEGMENT),
        ("x.json/", EMPTY_SEGMENT),
        (5, "it is not a string"),
        (None, "it is not a string"),
    ],
)
def test_names_that_could_leave_the_folder_are_refused(name, why):
    assert hub.unsafe_name_reason(name) == why


def test_sizes_and_the_limit_from_the_environment():
    assert hub.parse_size("8G") == hub.parse_size("8GiB") == 8 << 30 == hub.DEFAULT_MAX_BYTES
    assert hub.parse_size("1.5M") == 3 << 19 and hub.parse_size("123") == 123
    for bad in ("", "0", "-1", "8X", "lots"):
        with pytest.raises(ValueError):
            hub.parse_size(bad)
    assert hub.download_limit({}) == 8 << 30
    assert hub.download_limit({hub.MAX_BYTES_ENV: "500M"}) == 500 << 20
    with pytest.raises(hub.CheckpointUnavailable, match="QWEN3_ALIGNER_MAX_DOWNLOAD_BYTES"):
        hub.download_limit({hub.MAX_BYTES_ENV: "lots"})
    assert hub.format_size(2206704) == "2.1 MiB" and hub.format_size(8 << 30) == "8 GiB"
    assert not hub.http_allowed({}) and hub.http_allowed({hub.ALLOW_HTTP_ENV: "1"})


def test_fetch_model_takes_the_limit_and_http_flags(standin, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(hub, "fetch_checkpoint", _with_endpoint(standin, tmp_path / "cache"))
    assert hub.main(["--max-bytes", "1M", str(tmp_path / "airgap")]) == 1
    err = capsys.readouterr().err
    assert "fetch-model: error: refusing to download" in err and "limit of 1 MiB" in err
    assert not (tmp_path / "airgap").exists()
    assert hub.parse_args(["--max-bytes", "8G"]).max_bytes == 8 << 30
    assert hub.parse_args(["--allow-http"]).allow_http
    assert not hub.parse_args([]).allow_http and hub.parse_args([]).max_bytes is None
    with pytest.raises(SystemExit):
        hub.parse_args(["--max-bytes", "lots"])


# -- the checks one by one, on crafted listings and answers ------------------------------------

HUB = "https://hub.example"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
OTHER_COMMIT = "f" * 40
SHA1 = "da39a3ee5e6b4b0d3255bfef95601890afd80709"
SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
REFUSING = f"refusing to download {REPO} from {HUB}"
ADVICE = (
    "If the checkpoint really is that large, raise the limit "
    "(QWEN3_ALIGNER_MAX_DOWNLOAD_BYTES=16G, or ./scripts/fetch-model --max-bytes 16G)"
)
LISTING_URL = f"{HUB}/api/models/{REPO}/revision/{COMMIT}"
LISTING_PATH = f"/api/models/{REPO}/revision/{COMMIT}"
CONFIG_PATH = f"/{REPO}/resolve/{COMMIT}/config.json"
WEIGHTS_PATH = f"/{REPO}/resolve/{COMMIT}/model.safetensors"


def listing(*siblings: dict, sha: object = COMMIT):
    """A ``model_info`` answer as ``huggingface_hub`` reads it."""
    from huggingface_hub.hf_api import ModelInfo

    return ModelInfo(id=REPO, sha=sha, siblings=list(siblings))


def sibling(name: str, size: object = None, lfs: object = None) -> dict:
    entry: dict = {"rfilename": name, "size": size}
    if lfs is not None:
        entry["lfs"] = {"size": lfs, "sha256": SHA256, "pointerSize": 134}
    return entry


def test_the_plan_is_the_commit_and_the_aligner_files_with_their_listed_sizes():
    info = listing(
        sibling("README.md", 50_000),  # not loaded by the aligner: neither fetched nor counted
        sibling("config.json", 100),
        sibling("tokenizer.json"),  # no size listed: left to the limit while downloading
        sibling("model.safetensors", 1500, lfs=2000),  # the larger of the two sizes counts
        sibling("vocab.txt", 0),
        sibling("chat_template.jinja", 5),
    )
    plan = hub.plan_download(info, REPO, HUB, max_bytes=2105)  # exactly the listed sum
    files = (
        "config.json",
        "tokenizer.json",
        "model.safetensors",
        "vocab.txt",
        "chat_template.jinja",
    )
    assert plan == hub.DownloadPlan(COMMIT, files, 2105)


@pytest.mark.parametrize("sha", ["g" * 40, COMMIT[:7], None])
def test_a_listing_whose_commit_is_not_a_hash_is_refused_by_the_plan(sha):
    with pytest.raises(hub.UnsafeDownload) as caught:
        hub.plan_download(listing(sibling("config.json", 1), sha=sha), REPO, HUB, 1000)
    assert str(caught.value) == (
        f"{REFUSING}: it gives the commit {sha!r}, which is not a commit hash "
        "(40 hexadecimal digits)"
    )


def test_a_listing_without_files_is_unavailable_not_unsafe():
    with pytest.raises(hub.CheckpointUnavailable) as caught:
        hub.plan_download(listing(), REPO, HUB, 1000)
    assert type(caught.value) is hub.CheckpointUnavailable
    assert str(caught.value) == f"cannot download {REPO}: {HUB} lists no files in it"


def test_every_listed_name_is_checked_not_only_the_aligners():
    info = listing(sibling("config.json", 1), sibling("../../notes.md", 1))
    with pytest.raises(hub.UnsafeDownload) as caught:
        hub.plan_download(info, REPO, HUB, 1000)
    assert str(caught.value) == (
        f"{REFUSING}: it lists a file named '../../notes.md' "
        "(its '..' climbs out of the download folder); nothing was downloaded"
    )


@pytest.mark.parametrize(
    ("size", "lfs"), [(-1, None), (1.5, None), ("12", None), (True, None), (10, -1)]
)
def test_a_listed_size_that_is_not_a_byte_count_is_refused(size, lfs):
    info = listing(sibling("model.safetensors", size, lfs=lfs))
    with pytest.raises(hub.UnsafeDownload) as caught:
        hub.plan_download(info, REPO, HUB, 1000)
    bad = size if lfs is None else lfs
    assert str(caught.value) == f"{REFUSING}: it lists model.safetensors at {bad!r} bytes"


def test_a_file_listed_at_the_limit_is_planned_and_one_byte_more_refused():
    at_limit = hub.plan_download(listing(sibling("model.safetensors", 1000)), REPO, HUB, 1000)
    assert at_limit.listed_bytes == 1000
    with pytest.raises(hub.UnsafeDownload) as caught:
        hub.plan_download(listing(sibling("model.safetensors", 1001)), REPO, HUB, 1000)
    assert str(caught.value) == (
        f"{REFUSING}: it lists model.safetensors at 1001 bytes, more than the download limit "
        f"of 1000 bytes; nothing was downloaded. {ADVICE}"
    )


def test_aligner_files_adding_up_to_more_than_the_limit_are_refused_by_the_plan():
    info = listing(
        sibling("README.md", 5000), sibling("config.json", 400), sibling("model.safetensors", 601)
    )
    with pytest.raises(hub.UnsafeDownload) as caught:
        hub.plan_download(info, REPO, HUB, 1000)
    assert str(caught.value) == (
        f"{REFUSING}: the 2 files the aligner loads add up to 1001 bytes, more than the download "
        f"limit of 1000 bytes; nothing was downloaded. {ADVICE}"
    )


def guard(
    max_bytes: int = 1 << 20, plan: hub.DownloadPlan | None = None, allow_http: bool = False
) -> hub.DownloadGuard:
    checks = hub.DownloadGuard(REPO, HUB, max_bytes, allow_http)
    checks.plan = plan
    return checks


def pinned(listed_bytes: int = 0) -> hub.DownloadPlan:
    return hub.DownloadPlan(COMMIT, ("config.json",), listed_bytes)


def answer(
    url: str, method: str = "GET", headers: dict | None = None, body: bytes = b"", status=200
):
    """A ``requests`` answer to ``method url``, as the response hook receives it."""
    import io

    import requests
    from requests.structures import CaseInsensitiveDict

    response = requests.Response()
    response.url = url
    response.status_code = status
    response.headers = CaseInsensitiveDict(headers or {})
    response.raw = io.BytesIO(body)
    response.encoding = "utf-8"
    response.request = requests.Request(method, url).prepare()
    return response


def refusal(checks: hub.DownloadGuard, response) -> str:
    """The message of the UnsafeDownload the guard answers ``response`` with (read whole)."""
    with pytest.raises(hub.UnsafeDownload) as caught:
        checks.check(response)
        response.content  # noqa: B018 (read through the hook's counting)
    return str(caught.value)


def test_the_guard_names_the_mirror_without_its_trailing_slash_and_finds_listings_under_its_path():
    mirror_hub = "https://mirror.example/HFX/"  # a mirror under a path
    checks = hub.DownloadGuard(REPO, mirror_hub, 1000, False)
    assert (checks.repo_id, checks.hub, checks.max_bytes, checks.allow_http) == (
        REPO,
        "https://mirror.example/HFX",
        1000,
        False,
    )
    assert (checks.plan, checks.received) == (None, 0)
    checks.plan = pinned()
    path = f"/HFX/api/models/{REPO}/revision/{COMMIT}"
    body = json.dumps({"sha": OTHER_COMMIT}).encode()
    assert refusal(checks, answer(f"https://mirror.example{path}", body=body)) == (
        f"refusing to download {REPO} from https://mirror.example/HFX: it gives the commit "
        f"{OTHER_COMMIT} in its listing {path}, for a download of commit {COMMIT}"
    )
    # The same answer outside the mirror's path is no listing of it.
    outside = answer(f"https://mirror.example/api/models/{REPO}/revision/{COMMIT}", body=body)
    assert checks.check(outside) is None and outside.json() == {"sha": OTHER_COMMIT}


def test_a_listing_is_recognised_whatever_the_case_of_the_host_and_the_default_port():
    checks = hub.DownloadGuard(REPO, "https://Hub.Example", 1000, False)
    checks.plan = pinned()
    body = json.dumps({"sha": "not-a-commit"}).encode()
    url = f"https://hub.example:443/api/models/{REPO}/revision/{COMMIT}"
    assert refusal(checks, answer(url, body=body)) == (
        f"{REFUSING.replace('hub.example', 'Hub.Example')}: it gives the commit 'not-a-commit' "
        f"in its listing {LISTING_PATH}, which is not a commit hash (40 hexadecimal digits)"
    )


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("HTTPS://Hub.Example/api", ("https", "hub.example", 443)),
        ("http://hub.example", ("http", "hub.example", 80)),
        ("https://hub.example:8443/x", ("https", "hub.example", 8443)),
        ("https://hub.example:99999/x", ("https", "hub.example", 443)),  # not a port
        ("ftp://hub.example", ("ftp", "hub.example", None)),
        ("", ("", "", None)),
    ],
)
def test_origins_compare_as_requests_compares_them(url, origin):
    assert hub._origin_key(url) == origin


def test_answers_must_come_over_https_or_allowed_http():
    cdn = "http://cdn.example:8080/lfs/abc"
    assert refusal(guard(), answer(cdn)) == (
        f"{REFUSING}: it sent the download to http://cdn.example:8080, which is not https"
    )
    assert guard(allow_http=True).check(answer(cdn)) is None
    assert refusal(guard(allow_http=True), answer("ftp://cdn.example/lfs/abc")) == (
        f"{REFUSING}: it sent the download to ftp://cdn.example, which is not https"
    )
    assert guard().check(answer(f"{HUB}{CONFIG_PATH}")) is None


def test_a_commit_header_must_be_a_hash_and_once_pinned_the_pinned_commit():
    url = f"{HUB}{CONFIG_PATH}"
    assert refusal(guard(), answer(url, "HEAD", {"X-Repo-Commit": "abc123", "ETag": SHA1})) == (
        f"{REFUSING}: it gives the commit 'abc123' in the X-Repo-Commit header of {CONFIG_PATH}, "
        "which is not a commit hash (40 hexadecimal digits)"
    )
    # Any commit before the revision is resolved; from any host.
    cdn = "https://cdn.example/lfs/abc"
    assert guard().check(answer(cdn, headers={"X-Repo-Commit": OTHER_COMMIT})) is None
    upper = {"X-Repo-Commit": COMMIT.upper(), "ETag": SHA1}
    assert guard(plan=pinned()).check(answer(url, "HEAD", upper)) is None
    assert refusal(guard(plan=pinned()), answer(cdn, headers={"X-Repo-Commit": OTHER_COMMIT})) == (
        f"{REFUSING}: it gives the commit {OTHER_COMMIT} in the X-Repo-Commit header of /lfs/abc, "
        f"for a download of commit {COMMIT}"
    )


@pytest.mark.parametrize(
    "headers",
    [
        {"ETag": f'"{SHA1}"'},
        {"ETag": f'W/"{SHA1}"'},  # weak, as a proxy that compresses marks it
        {"ETag": SHA256},
        # An LFS file is stored under X-Linked-Etag, whatever the redirect's own ETag is.
        {"X-Linked-Etag": f'"{SHA256}"', "ETag": '"not-a-blob-id"'},
        {},
    ],
)
def test_a_file_answer_stored_under_a_sha1_or_sha256_etag_is_accepted(headers):
    assert guard().check(answer(f"{HUB}{CONFIG_PATH}", "HEAD", headers)) is None


@pytest.mark.parametrize(
    ("headers", "raw"),
    [
        ({"ETag": '"../../ESCAPED"'}, '"../../ESCAPED"'),
        ({"X-Linked-Etag": '"../../ESCAPED"', "ETag": f'"{SHA1}"'}, '"../../ESCAPED"'),
        ({"ETag": f"X{SHA1}"}, f"X{SHA1}"),
        ({"ETag": f'"{SHA1}X"'}, f'"{SHA1}X"'),
    ],
)
def test_a_file_answer_stored_under_another_etag_is_refused(headers, raw):
    assert refusal(guard(), answer(f"{HUB}{WEIGHTS_PATH}", "HEAD", headers)) == (
        f"{REFUSING}: it answers {WEIGHTS_PATH} with the ETag {raw!r}; huggingface_hub stores "
        "files under their ETag, which on the Hub is a sha1 or a sha256 (40 or 64 hexadecimal "
        "digits)"
    )


def test_only_the_head_of_a_file_names_where_it_is_stored():
    s3_etag = {"ETag": '"d41d8cd98f00b204e9800998ecf8427e-3"'}  # an S3 multipart upload's
    assert guard().check(answer(f"{HUB}{WEIGHTS_PATH}", "GET", s3_etag)) is None
    assert guard().check(answer("https://cdn.example/lfs/abc", "HEAD", s3_etag)) is None


def test_a_file_announced_above_the_limit_is_refused_at_its_head():
    url = f"{HUB}{CONFIG_PATH}"
    at_limit = {"ETag": SHA1, "Content-Length": "1000"}
    assert guard(max_bytes=1000).check(answer(url, "HEAD", at_limit)) is None
    too_large = f"{REFUSING}: it announces {CONFIG_PATH} at 1001 bytes, more than the download "
    small = {"ETag": SHA1, "Content-Length": "1001"}
    assert refusal(guard(max_bytes=1000), answer(url, "HEAD", small)) == (
        f"{too_large}limit of 1000 bytes. {ADVICE}"
    )
    # An LFS file's redirect announces the file's size in X-Linked-Size, its own length is 0.
    lfs = {"X-Linked-Etag": SHA256, "X-Linked-Size": "1001", "Content-Length": "0"}
    assert refusal(guard(max_bytes=1000), answer(url, "HEAD", lfs)) == (
        f"{too_large}limit of 1000 bytes. {ADVICE}"
    )


def test_xet_headers_are_taken_off_file_answers():
    headers = {
        "ETag": SHA1,
        "X-Xet-Hash": "abc",
        "x-xet-refresh-route": "/api/x",
        "X-Linked-Size": "10",
    }
    response = answer(f"{HUB}{CONFIG_PATH}", "HEAD", headers)
    guard().check(response)
    assert dict(response.headers) == {"ETag": SHA1, "X-Linked-Size": "10"}


def test_a_pinned_listing_must_give_the_pinned_commit():
    body = json.dumps({"sha": "../../ESCAPED"}).encode()
    assert refusal(guard(plan=pinned()), answer(LISTING_URL, body=body)) == (
        f"{REFUSING}: it gives the commit '../../ESCAPED' in its listing {LISTING_PATH}, which "
        "is not a commit hash (40 hexadecimal digits)"
    )
    good = answer(LISTING_URL, body=json.dumps({"sha": COMMIT, "siblings": []}).encode())
    assert guard(plan=pinned()).check(good) is None


@pytest.mark.parametrize(
    ("plan", "url", "body"),
    [
        # The first listing, before the revision is resolved, is plan_download's to check.
        (None, LISTING_URL, {"sha": "not-a-commit"}),
        # Answers that are no listing: huggingface_hub reports them.
        (pinned(), LISTING_URL, {"error": "no sha here"}),
        (pinned(), LISTING_URL, ["sha"]),
        # A downloaded file is no listing, whatever it holds.
        (pinned(), f"{HUB}{CONFIG_PATH}", {"sha": "not-a-commit"}),
    ],
)
def test_answers_that_are_no_pinned_listing_are_not_read_as_one(plan, url, body):
    response = answer(url, body=json.dumps(body).encode())
    assert guard(plan=plan).check(response) is None
    assert response.json() == body


def test_an_error_answer_to_a_listing_is_left_to_huggingface_hub():
    response = answer(LISTING_URL, body=b'{"sha": "x"}', status=404)
    assert guard(plan=pinned()).check(response) is None


def test_a_listing_longer_than_the_answer_limit_is_cut_off(monkeypatch):
    monkeypatch.setattr(hub, "API_ANSWER_LIMIT", 10)
    listing_url = f"{HUB}/api/models/{REPO}"
    checks = guard(max_bytes=1000)
    at_limit = answer(listing_url, body=b'{"sha": 1}')  # 10 bytes
    checks.check(at_limit)
    assert list(at_limit.iter_content(4)) == [b'{"sh', b'a": ', b"1}"]
    too_long = answer(listing_url, body=b'{"sha": 12}')
    checks.check(too_long)
    chunks = too_long.iter_content(4)
    assert [next(chunks), next(chunks)] == [b'{"sh', b'a": ']
    with pytest.raises(hub.UnsafeDownload) as caught:
        next(chunks)
    assert str(caught.value) == (
        f"{REFUSING}: its answer to /api/models/{REPO} is longer than 10 bytes"
    )
    assert too_long.raw.closed
    # A file is no listing: only the download limit applies to it.
    file = answer(f"{HUB}{CONFIG_PATH}", body=b"0123456789ab")
    checks.check(file)
    assert file.content == b"0123456789ab"


def test_reading_through_the_guard_keeps_requests_chunks_and_decoding():
    checks = guard()
    for args, chunks in [((), [b"a", b"b", b"c"]), ((2,), [b"ab", b"c"]), ((2, True), ["ab", "c"])]:
        response = answer(f"{HUB}{CONFIG_PATH}", body=b"abc")
        checks.check(response)
        assert list(response.iter_content(*args)) == chunks
    assert checks.received == 9


def test_all_answers_together_must_stay_within_the_download_limit():
    checks = guard(max_bytes=10)
    for body in (b"012345", b"6789"):
        response = answer(f"{HUB}{CONFIG_PATH}", body=body)
        checks.check(response)
        assert response.content == body
    assert checks.received == 10  # exactly the limit: accepted
    one_more = answer("https://cdn.example/lfs/abc", body=b"x")
    assert refusal(checks, one_more) == (
        f"{REFUSING}: it sent more than the download limit of 10 bytes. {ADVICE}"
    )
    assert checks.received == 11 and one_more.raw.closed


@pytest.mark.parametrize(
    ("max_bytes", "listed", "said"),
    [
        (
            100,
            40,
            "sent more than the download limit of 100 bytes, while the files it lists add "
            "up to 40 bytes",
        ),
        # Listed sizes of half the limit or more: the checkpoint may really be that large.
        (101, 50, f"sent more than the download limit of 101 bytes. {ADVICE}"),
    ],
)
def test_a_mirror_sending_far_more_than_it_listed_is_told_so(max_bytes, listed, said):
    checks = guard(max_bytes=max_bytes, plan=pinned(listed))
    response = answer("https://cdn.example/lfs/abc", body=b"x" * (max_bytes + 1))
    assert refusal(checks, response) == f"{REFUSING}: it {said}"


def write_files(folder: Path, names: Sequence[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_text("{}")
    return folder


def test_a_folder_is_complete_with_its_required_files_and_weights(tmp_path):
    folder = write_files(tmp_path / "ok", [*hub.REQUIRED_FILES, "model.safetensors"])
    assert hub.check_complete(folder, REPO) == folder


@pytest.mark.parametrize(
    ("present", "missing"),
    [
        (["model.safetensors"], "config.json, preprocessor_config.json, tokenizer_config.json"),
        (list(hub.REQUIRED_FILES), "*.safetensors"),
        ([], "config.json, preprocessor_config.json, tokenizer_config.json, *.safetensors"),
    ],
)
def test_an_incomplete_folder_names_what_is_missing_and_how_to_finish_it(
    tmp_path, present, missing
):
    folder = write_files(tmp_path / "partial", present)
    with pytest.raises(hub.CheckpointUnavailable) as caught:
        hub.check_complete(folder, REPO)
    assert str(caught.value) == (
        f"the copy of {REPO} in {folder} is incomplete (missing {missing}): an earlier download "
        "was interrupted. Run again with network access to finish it (it resumes), or: To serve "
        "without the Hub, fetch the checkpoint on a machine with internet access "
        f"(./scripts/fetch-model /path/to/checkpoint, or huggingface-cli download {REPO} "
        "--local-dir /path/to/checkpoint), copy the folder here and run ./scripts/serve --model "
        "/path/to/checkpoint (container: MODEL_PATH=/path/to/checkpoint)"
    )


REPO_CACHE = "models--Qwen--Qwen3-ForcedAligner-0.6B"


def test_a_written_file_that_leads_out_of_the_folder_is_refused(tmp_path):
    local_dir = write_files(tmp_path / "airgap", ["config.json"])
    # A link to nothing yet still leads out; a missing file is check_complete's to name.
    (local_dir / "link.json").symlink_to(tmp_path / "outside.json")
    plan = hub.DownloadPlan(COMMIT, ("config.json", "absent.json", "link.json"), 0)
    with pytest.raises(hub.UnsafeDownload) as caught:
        hub._check_download(REPO, local_dir, plan, "main", local_dir, None)
    assert str(caught.value) == (
        f"refusing the download of {REPO}: {local_dir / 'link.json'} leads to "
        f"{(tmp_path / 'outside.json').resolve()}, outside {local_dir.resolve()}"
    )
    (local_dir / "link.json").unlink()
    assert hub._check_download(REPO, local_dir, plan, "main", local_dir, None) is None


def test_a_cached_download_must_be_the_snapshot_of_the_commit_inside_the_cache(tmp_path):
    cache = tmp_path / "cache"
    repo_cache = cache / REPO_CACHE
    snapshot = write_files(repo_cache / "snapshots" / COMMIT, ["config.json"])
    plan = hub.DownloadPlan(COMMIT, ("config.json",), 2)
    (snapshot / "config.json").unlink()
    (snapshot / "config.json").symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(hub.UnsafeDownload) as caught:
        hub._check_download(REPO, snapshot, plan, "main", None, cache)
    assert str(caught.value) == (
        f"refusing the download of {REPO}: {snapshot / 'config.json'} leads to "
        f"{(tmp_path / 'elsewhere.json').resolve()}, outside {repo_cache.resolve()}"
    )
    other = write_files(repo_cache / "snapshots" / OTHER_COMMIT, ["config.json"])
    with pytest.raises(hub.UnsafeDownload) as caught:
        hub._check_download(REPO, other, plan, "main", None, cache)
    assert str(caught.value) == (
        f"refusing the download of {REPO}: it went to {other}, not to the snapshot of commit "
        f"{COMMIT}"
    )
    assert not (repo_cache / "refs").exists()


def test_a_checked_cached_download_remembers_its_revision(tmp_path):
    cache = tmp_path / "cache"
    snapshot = write_files(cache / REPO_CACHE / "snapshots" / COMMIT, ["config.json"])
    plan = hub.DownloadPlan(COMMIT, ("config.json",), 2)
    hub._check_download(REPO, snapshot, plan, "main", None, cache)
    assert refs_in(cache) == {"main": COMMIT}


def test_revisions_are_remembered_as_their_commits_and_kept_current(tmp_path):
    repo_cache = tmp_path / REPO_CACHE  # no refs folder yet
    hub._remember_revision(repo_cache, "release/v1", COMMIT)
    hub._remember_revision(repo_cache, "release/v2", COMMIT)
    hub._remember_revision(repo_cache, "release/v1", OTHER_COMMIT)  # the branch moved
    refs = {
        p.relative_to(repo_cache / "refs").as_posix(): p.read_text()
        for p in (repo_cache / "refs").rglob("*")
        if p.is_file()
    }
    assert refs == {"release/v1": OTHER_COMMIT, "release/v2": COMMIT}


@pytest.mark.parametrize("revision", [COMMIT, "../ESCAPED", "../../ESCAPED", ".", "refs/.."])
def test_a_commit_or_a_revision_outside_the_refs_is_not_recorded(tmp_path, revision):
    repo_cache = tmp_path / "cache" / REPO_CACHE
    repo_cache.mkdir(parents=True)
    hub._remember_revision(repo_cache, revision, COMMIT)
    assert list(tmp_path.rglob("*")) == [tmp_path / "cache", repo_cache]


# -- the listing and the download, against the stand-in -----------------------------------------

SMALL_FILES = {
    "config.json": b'{"model_type": "qwen3"}',
    "preprocessor_config.json": b'{"sampling_rate": 16000}',
    "tokenizer_config.json": b'{"model_max_length": 4096}',
    "model.safetensors": b"\0" * 4096,
    "README.md": b"# model card\n",
}


@pytest.fixture
def small_hub(tmp_path, monkeypatch):
    """The stand-in serving a few small files (no checkpoint) as the aligner's repository."""
    folder = tmp_path / "small-repo"
    folder.mkdir()
    for name, data in SMALL_FILES.items():
        (folder / name).write_bytes(data)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with HubStandIn({REPO: folder}, tmp_path / "ca") as running:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(running.ca_bundle))
        yield running


def test_the_listing_gives_each_files_size_and_is_asked_with_the_token(small_hub):
    info = hub._list_repo(REPO, "main", "hf_listing_token", small_hub.endpoint)
    assert info.sha == small_hub.commits[REPO]
    assert {s.rfilename: s.size for s in info.siblings} == {
        name: len(data) for name, data in SMALL_FILES.items()
    }
    assert [(s.path, s.authorization) for s in small_hub.seen] == [
        (f"/api/models/{REPO}/revision/main?blobs=True", "Bearer hf_listing_token")
    ]


def test_a_listing_that_is_not_json_is_reported_as_no_listing(small_hub, monkeypatch):
    import hub_standin

    def garbage(handler, rest, blobs):
        handler._send(200, {"Content-Type": "application/json"}, b"<html>a login page</html>")

    monkeypatch.setattr(hub_standin._Handler, "_model_info", garbage)
    with pytest.raises(hub.CheckpointUnavailable) as caught:
        hub._list_repo(REPO, "main", None, small_hub.endpoint)
    assert str(caught.value) == (
        f"cannot download {REPO}: {small_hub.endpoint} answers its listing with something that "
        "is not a Hub listing (JSONDecodeError: Expecting value: line 1 column 1 (char 0))"
    )


def test_a_hub_that_never_answers_the_listing_is_given_up_after_the_probe_timeout(monkeypatch):
    import requests

    monkeypatch.setattr(hub, "PROBE_TIMEOUT_SECONDS", 0.2)
    with socket.socket() as silent:  # accepts connections (the backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        reason = hub._list_repo(REPO, "main", None, endpoint)
    assert isinstance(reason, requests.exceptions.Timeout)


def test_the_snapshot_is_fetched_at_the_commit_with_the_token(small_hub, tmp_path):
    commit = small_hub.commits[REPO]
    cache = tmp_path / "cache"
    folder = hub._snapshot(
        REPO,
        commit,
        ["config.json", "*.safetensors"],
        None,
        cache,
        small_hub.endpoint,
        "hf_file_token",
        False,
    )
    assert folder == cache / REPO_CACHE / "snapshots" / commit
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == {
        "config.json": SMALL_FILES["config.json"],
        "model.safetensors": SMALL_FILES["model.safetensors"],
    }
    files = [s for s in small_hub.seen if "/resolve/" in s.path]
    assert files and {s.authorization for s in files} == {"Bearer hf_file_token"}


def test_a_snapshot_from_the_cache_only_asks_nothing_of_the_hub(small_hub, tmp_path):
    from huggingface_hub.errors import LocalEntryNotFoundError

    with pytest.raises(LocalEntryNotFoundError):
        hub._snapshot(
            REPO, "main", ["*.json"], None, tmp_path / "cache", small_hub.endpoint, None, True
        )
    assert small_hub.seen == []


def flaky_snapshot(monkeypatch, failures: list[Exception], folder: Path) -> list[dict]:
    """Replaces huggingface_hub's snapshot_download by one raising ``failures`` one call after
    another, then returning ``folder``; the calls' arguments come back."""
    import huggingface_hub

    calls: list[dict] = []

    def snapshot_download(repo_id, **kwargs):
        calls.append({"repo_id": repo_id, **kwargs})
        if len(calls) <= len(failures):
            raise failures[len(calls) - 1]
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    return calls


def resumed(attempts: Sequence[int], why: str) -> str:
    return "".join(
        f"download of {REPO} interrupted ({why}); resuming (attempt {n} of 4)\n" for n in attempts
    )


def snapshot_of(tmp_path: Path) -> Path:
    return hub._snapshot(REPO, COMMIT, ["*.json"], None, tmp_path, HUB, None, False)


def test_a_broken_connection_is_resumed_up_to_four_attempts(monkeypatch, tmp_path, capsys):
    import requests

    broken = [requests.exceptions.ChunkedEncodingError("Connection broken: IncompleteRead")] * 2
    broken.append(requests.exceptions.ConnectionError("Connection reset by peer"))
    calls = flaky_snapshot(monkeypatch, broken, tmp_path / "done")
    assert snapshot_of(tmp_path) == tmp_path / "done"
    assert len(calls) == 4
    assert calls[0] == {
        "repo_id": REPO,
        "revision": COMMIT,
        "allow_patterns": ["*.json"],
        "local_dir": None,
        "cache_dir": tmp_path,
        "endpoint": HUB,
        "token": None,
        "local_files_only": False,
    }
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        resumed([2, 3], "ChunkedEncodingError: Connection broken: IncompleteRead")
        + resumed([4], "ConnectionError: Connection reset by peer")
    )


def test_a_connection_broken_four_times_is_given_up(monkeypatch, tmp_path, capsys):
    import requests

    last = requests.exceptions.ChunkedEncodingError("fourth")
    broken = [requests.exceptions.ChunkedEncodingError("again")] * 3 + [last]
    calls = flaky_snapshot(monkeypatch, broken, tmp_path / "never")
    with pytest.raises(requests.exceptions.ChunkedEncodingError) as caught:
        snapshot_of(tmp_path)
    assert caught.value is last and len(calls) == 4
    assert capsys.readouterr().err == resumed([2, 3, 4], "ChunkedEncodingError: again")


def test_a_tls_failure_is_not_retried(monkeypatch, tmp_path, capsys):
    import requests

    refused = requests.exceptions.SSLError("certificate verify failed")
    calls = flaky_snapshot(monkeypatch, [refused], tmp_path / "never")
    with pytest.raises(requests.exceptions.SSLError) as caught:
        snapshot_of(tmp_path)
    assert caught.value is refused and len(calls) == 1
    assert capsys.readouterr().err == ""


# -- the backend stub's libpython ---------------------------------------------------------------


def test_the_stub_gets_this_interpreters_shared_libpython():
    import sysconfig

    libdir = python_library_dir()
    assert (libdir / sysconfig.get_config_var("INSTSONAME")).is_file()
    env = server_environment({"LD_LIBRARY_PATH": "/opt/x"}, Path("/opt/python/lib"))
    assert env["LD_LIBRARY_PATH"] == "/opt/python/lib:/opt/x"
    assert env["HF_HUB_OFFLINE"] == "1"  # the model never downloads
    assert "LD_LIBRARY_PATH" not in server_environment({}, Path("/usr/lib"))
    assert "LD_LIBRARY_PATH" not in server_environment({}, None)


@pytest.mark.parametrize(
    ("shared", "cause"),
    [(0, "built without a shared libpython"), (1, "does not exist")],
)
def test_a_python_without_shared_libpython_is_refused_with_the_ways_out(tmp_path, shared, cause):
    settings = {"Py_ENABLE_SHARED": shared, "LIBDIR": str(tmp_path), "INSTSONAME": "libpythonX.so"}
    with pytest.raises(ServerError) as caught:
        python_library_dir(settings.get)
    message = str(caught.value)
    assert cause in message and sys.base_prefix in message
    for way_out in ("--enable-shared", "system Python", "NGC Triton container"):
        assert way_out in message


# -- the launchers hand the model a folder ------------------------------------------------------


def test_the_container_entrypoint_downloads_before_starting(monkeypatch, tmp_path, capsys):
    from qwen3_aligner_triton import entrypoint, serve
    from qwen3_aligner_triton.repository import load_config

    fetched = []

    def fake_fetch(repo_id, revision=None, local_dir=None, token=None):
        fetched.append((repo_id, revision, token))
        return tmp_path / "snapshot"

    class Exited:
        process = subprocess.Popen([sys.executable, "-c", "pass"])

        def wait(self, timeout=None):
            return self.process.wait(timeout=timeout)

        def stop(self):
            return self.process.wait()

    monkeypatch.setattr(hub, "fetch_checkpoint", fake_fetch)
    monkeypatch.setattr(entrypoint, "start", lambda *a, **k: Exited())
    monkeypatch.setattr(entrypoint, "cuda_device_count", lambda: 0)
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    monkeypatch.setenv(hub.REVISION_ENV, "abc123")  # read from the environment given to main
    environ = {"DEVICE": "cpu", hub.REVISION_ENV: "v1.0", entrypoint.RENDERED_ENV: str(tmp_path)}
    assert entrypoint.main([], environ) == 0
    assert fetched == [(DEFAULT_CHECKPOINT, "v1.0", "hf_secret")]
    config = load_config(tmp_path / "qwen3_aligner" / "config.pbtxt")
    assert config.parameters["checkpoint"].string_value == str(tmp_path / "snapshot")
    assert f"entrypoint: {DEFAULT_CHECKPOINT} is in {tmp_path / 'snapshot'}" in (
        capsys.readouterr().out
    )
    assert serve.parse_args(["--revision", "r1"]).revision == "r1"


def test_the_entrypoint_stops_before_the_server_when_the_checkpoint_cannot_be_had(
    monkeypatch, capsys
):
    from qwen3_aligner_triton import entrypoint

    def unavailable(*args, **kwargs):
        raise hub.CheckpointUnavailable("cannot get it")

    monkeypatch.setattr(hub, "fetch_checkpoint", unavailable)
    monkeypatch.setattr(entrypoint, "start", lambda *a, **k: pytest.fail("started anyway"))
    monkeypatch.setattr(entrypoint, "cuda_device_count", lambda: 0)
    assert entrypoint.main([], {"DEVICE": "cpu"}) == 1
    assert "entrypoint: error: cannot get it" in capsys.readouterr().err


def redirected(first_url: str, final):
    """``final`` as requests hands it over after a redirect from ``first_url``."""
    final.history = [answer(first_url, status=302, headers={"Location": final.url})]
    return final


def test_a_listing_redirected_elsewhere_on_the_mirror_is_still_checked():
    # A mirror once answered snapshot_download's own listing with a redirect to a path outside
    # its API and a commit that climbs out of the cache: huggingface_hub wrote a ref file there.
    body = json.dumps({"sha": "../../../../../ESCAPED-ref"}).encode()
    moved = answer(f"{HUB}/redirected/api/models/{REPO}/revision/main", body=body)
    assert refusal(guard(plan=pinned()), redirected(LISTING_URL, moved)) == (
        f"{REFUSING}: it gives the commit '../../../../../ESCAPED-ref' in its listing "
        f"/redirected/api/models/{REPO}/revision/main, which is not a commit hash (40 "
        "hexadecimal digits)"
    )
    elsewhere = answer(f"https://cdn.example/x/{REPO}", body=body)
    assert refusal(guard(plan=pinned()), redirected(LISTING_URL, elsewhere)).endswith(
        "which is not a commit hash (40 hexadecimal digits)"
    )


@pytest.mark.parametrize("path", ["/hf mirror", "/modèles", "/hf "])
def test_a_mirror_path_that_requests_percent_encodes_still_has_its_listings_checked(path):
    from requests.utils import requote_uri

    endpoint = f"https://mirror.example{path}"
    checks = hub.DownloadGuard(REPO, endpoint, 10 * 2**30, allow_http=False)
    checks.plan = pinned()
    url = f"https://mirror.example{requote_uri(path)}/api/models/{REPO}/revision/{COMMIT}"
    body = json.dumps({"sha": "../../x"}).encode()
    assert "which is not a commit hash" in refusal(checks, answer(url, body=body))
