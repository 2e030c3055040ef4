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
from pathlib import Path

import pytest
from hub_standin import HubStandIn, Lies

from qwen3_aligner_triton import hub
from qwen3_aligner_triton.params import DEFAULT_CHECKPOINT
from qwen3_aligner_triton.tritonserver import (
    ServerError,
    python_library_dir,
    server_environment,
)

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


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("../x.json", "climbs out"),
        ("a/../../x.json", "climbs out"),
        ("a/..", "climbs out"),
        ("/etc/x.json", "absolute"),
        ("C:/x.json", "absolute"),
        ("a\\..\\x.json", "backslash"),
        ("a\x00.json", "U+0000"),
        ("a\n.json", "U+000A"),
        ("a\u202e.json", "U+202E"),
        ("", "empty name"),
        ("./x.json", "'.' segment"),
        ("a//x.json", "empty or '.' segment"),
        ("x.json/", "empty or '.' segment"),
    ],
)
def test_names_that_could_leave_the_folder_are_refused(name, why):
    assert why in hub.unsafe_name_reason(name)


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
