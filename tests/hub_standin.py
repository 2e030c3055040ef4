"""A stand-in of the Hugging Face Hub over HTTPS on loopback, for tests of checkpoint downloads.

It answers the requests ``huggingface_hub`` makes, the way the Hub does:

- ``GET /api/models/{repo}[/revision/{rev}]``: model info with the commit ``sha`` and ``siblings``
  (with ``?blobs=true``: each file's ``size``, ``blobId`` and, for LFS files, ``lfs``) of the
  commit ``rev`` names (a branch or a full commit hash; ``main`` without one);
- ``HEAD``/``GET /{repo}/resolve/{rev}/{file}``: the file as it is in that commit, small files
  with ``X-Repo-Commit`` and a git ``ETag``; LFS files (``*.safetensors`` and anything large) with
  a 302 to an absolute CDN-like URL and ``X-Linked-Etag`` (sha256) / ``X-Linked-Size``;
- ``GET /lfs/{sha256}``: the LFS object, with ``Range`` requests answered 206;
- errors with ``X-Error-Code``: ``RepoNotFound`` (401), ``RevisionNotFound`` and
  ``EntryNotFound`` (404).

The certificate comes from a throwaway CA (``trustme``) written to :attr:`HubStandIn.ca_bundle`;
point ``REQUESTS_CA_BUNDLE``/``SSL_CERT_FILE`` at it and ``HF_ENDPOINT`` at
:attr:`HubStandIn.endpoint`. ``cut_once`` names files whose first full download is cut off
halfway (the connection closes early), as a dropped network would. ``tls=False`` serves plain
``http://`` instead.

A repository holds one commit, ``main``, unless ``older`` gives it a second one: the folder of an
earlier commit, the parent of ``main``, which the branches ``older_branches`` (``v1``) point at.
Its files differ from ``main``'s in whatever the two folders differ in; the commits are
:attr:`HubStandIn.commits` (``main``) and :attr:`HubStandIn.older_commits`.

``lies`` (:class:`Lies`) makes it a malicious mirror: files listed with names that climb out of
the download folder (``../../x.json``), ETags that are paths, commits that are not commit hashes,
sizes that understate what it sends, and listings that change after the first answer.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

LFS_THRESHOLD = 1 << 20  # bytes; larger files are stored in LFS, as the Hub does with big files


@dataclass(frozen=True)
class HostedFile:
    name: str
    data: bytes
    lfs: bool

    @property
    def etag(self) -> str:
        if self.lfs:
            return hashlib.sha256(self.data).hexdigest()
        header = f"blob {len(self.data)}\0".encode()
        return hashlib.sha1(header + self.data).hexdigest()


@dataclass
class Lies:
    """What a malicious mirror answers instead of the truth."""

    # Listed (from listing number ``from_listing`` on) and served besides the folder's files. A
    # name that climbs (``../../x.json``) is also answered at the dot-free URL that requests sends
    # for it (``/{repo}/x.json``), as a mirror answering whatever it is asked would.
    extra_files: dict[str, bytes] = field(default_factory=dict)
    etags: dict[str, str] = field(default_factory=dict)  # file -> raw ETag / X-Linked-Etag value
    sizes: dict[str, int] = field(default_factory=dict)  # file -> size in listings, X-Linked-Size
    commit: str | None = None  # the commit of listings from ``from_listing`` on; also a revision
    commit_header: str | None = None  # X-Repo-Commit of every file answer
    from_listing: int = 1  # the model-info answer the listing lies start with (1: the first)
    lfs_endpoint: str | None = None  # where LFS files are redirected to, instead of this stand-in


@dataclass
class Seen:
    """One request the stand-in answered."""

    method: str
    path: str
    range: str | None
    status: int
    authorization: str | None = None


@dataclass
class HubStandIn:
    """Serves ``repos`` (hub id -> checkpoint folder) at ``main``; those also in ``older`` (hub
    id -> folder) with an earlier commit too, which the branches ``older_branches`` point at."""

    repos: dict[str, Path]
    ca_dir: Path
    cut_once: set[str] = field(default_factory=set)
    seen: list[Seen] = field(default_factory=list)
    lies: Lies = field(default_factory=Lies)
    tls: bool = True
    older: dict[str, Path] = field(default_factory=dict)
    older_branches: tuple[str, ...] = ("v1",)

    def __post_init__(self) -> None:
        self.files: dict[str, dict[str, HostedFile]] = {}  # hub id -> main's files
        self.commits: dict[str, str] = {}  # hub id -> main's commit
        self.older_commits: dict[str, str] = {}  # hub id -> the earlier commit, where there is one
        self.snapshots: dict[str, dict[str, dict[str, HostedFile]]] = {}  # id -> commit -> files
        self.branches: dict[str, dict[str, str]] = {}  # hub id -> branch -> commit
        self.by_sha256: dict[str, HostedFile] = {}
        self.climbed: dict[str, tuple[str, HostedFile]] = {}  # URL path -> (repo, climbing file)
        self.listings = 0  # model-info answers so far
        for repo_id, folder in self.repos.items():
            snapshots: dict[str, dict[str, HostedFile]] = {}
            branches: dict[str, str] = {}
            parent = b""
            if repo_id in self.older:
                older, hosted = self._commit_of(repo_id, self.older[repo_id], b"")
                self.older_commits[repo_id] = older
                snapshots[older] = hosted
                branches.update(dict.fromkeys(self.older_branches, older))
                parent = bytes.fromhex(older)
            commit, hosted = self._commit_of(repo_id, folder, parent)
            self.commits[repo_id] = commit
            snapshots[commit] = hosted
            branches["main"] = commit
            self.snapshots[repo_id] = snapshots
            self.branches[repo_id] = branches
            self.files[repo_id] = hosted
        self._cut_done: set[str] = set()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def _commit_of(
        self, repo_id: str, folder: Path, parent: bytes
    ) -> tuple[str, dict[str, HostedFile]]:
        """The commit hash of ``folder``'s files (after ``parent``) and the files, lies included."""
        hosted = {}
        digest = hashlib.sha1(repo_id.encode() + parent)
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            name = path.relative_to(folder).as_posix()
            data = path.read_bytes()
            lfs = name.endswith(".safetensors") or len(data) > LFS_THRESHOLD
            hosted[name] = HostedFile(name, data, lfs)
            digest.update(name.encode() + hashlib.sha256(data).digest())
            if lfs:
                self.by_sha256[hosted[name].etag] = hosted[name]
        for name, data in self.lies.extra_files.items():
            hosted[name] = HostedFile(name, data, name.endswith(".safetensors"))
            if hosted[name].lfs:
                self.by_sha256[hosted[name].etag] = hosted[name]
            sent = posixpath.normpath(f"/{repo_id}/resolve/REVISION/{name}")
            if "/REVISION/" not in sent:
                self.climbed[sent] = (repo_id, hosted[name])
        return digest.hexdigest(), hosted

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> HubStandIn:
        hub = self

        class Handler(_Handler):
            standin = hub

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        if self.tls:
            import trustme

            ca = trustme.CA()
            cert = ca.issue_cert("127.0.0.1", "localhost")
            self.ca_dir.mkdir(parents=True, exist_ok=True)
            self.ca_bundle = self.ca_dir / "standin-ca.pem"
            ca.cert_pem.write_to_path(str(self.ca_bundle))
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            cert.configure_cert(context)
            server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        self.port = server.server_address[1]
        self.endpoint = f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> HubStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def environment(self) -> dict[str, str]:
        """Variables that send ``huggingface_hub`` (in a child process) to this stand-in."""
        if not self.tls:
            return {"HF_ENDPOINT": self.endpoint}
        bundle = str(self.ca_bundle)
        return {"HF_ENDPOINT": self.endpoint, "REQUESTS_CA_BUNDLE": bundle, "SSL_CERT_FILE": bundle}

    def next_listing(self) -> int:
        """The number of the model-info answer about to be sent (1 for the first)."""
        with self._lock:
            self.listings += 1
            return self.listings

    def file_commit(self, repo_id: str, commit: str | None = None) -> str:
        """The X-Repo-Commit of file answers of ``commit`` (default: main's)."""
        return self.lies.commit_header or self.lies.commit or commit or self.commits[repo_id]

    def resolve_revision(self, repo_id: str, revision: str) -> str | None:
        """The commit ``revision`` (a branch or a full commit hash) names; None if none."""
        if revision in self.branches[repo_id]:
            return self.branches[repo_id][revision]
        if revision in self.snapshots[repo_id]:
            return revision
        if revision == self.lies.commit:
            return self.commits[repo_id]
        return None

    def take_cut(self, name: str) -> bool:
        with self._lock:
            if name in self.cut_once and name not in self._cut_done:
                self._cut_done.add(name)
                return True
            return False

    def record(self, seen: Seen) -> None:
        with self._lock:
            self.seen.append(seen)


class _Handler(BaseHTTPRequestHandler):
    standin: HubStandIn
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    # -- plumbing -------------------------------------------------------------------------------

    def _send(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
        self.send_response(status)
        headers = {"Content-Length": str(len(body)), **headers}
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)
        self._record(status)

    def _record(self, status: int) -> None:
        self.standin.record(
            Seen(
                self.command,
                self.path,
                self.headers.get("Range"),
                status,
                self.headers.get("Authorization"),
            )
        )

    def _error(self, status: int, code: str, message: str, commit: str | None = None) -> None:
        body = json.dumps({"error": message}).encode()
        headers = {
            "Content-Type": "application/json",
            "X-Error-Code": code,
            "X-Error-Message": message,
        }
        if commit:
            headers["X-Repo-Commit"] = commit
        self._send(status, headers, body)

    def do_HEAD(self) -> None:
        self._route()

    def do_GET(self) -> None:
        self._route()

    # -- routes ---------------------------------------------------------------------------------

    def _route(self) -> None:
        url = urlparse(self.path)
        path = unquote(url.path)
        if path.startswith("/api/models/"):
            blobs = parse_qs(url.query).get("blobs", ["false"])[-1].lower() == "true"
            return self._model_info(path.removeprefix("/api/models/"), blobs)
        if path in self.standin.climbed:
            repo_id, hosted = self.standin.climbed[path]
            return self._file(repo_id, hosted, self.standin.file_commit(repo_id))
        if path.startswith("/lfs/"):
            return self._lfs(path.removeprefix("/lfs/"))
        if "/resolve/" in path:
            repo_id, _, rest = path.lstrip("/").partition("/resolve/")
            revision, _, filename = rest.partition("/")
            return self._resolve(repo_id, revision, filename)
        self._error(404, "NotFound", f"no route for {path}")

    def _model_info(self, rest: str, blobs: bool) -> None:
        repo_id, _, revision = rest.partition("/revision/")
        revision = revision or "main"
        if repo_id not in self.standin.files:
            return self._error(401, "RepoNotFound", "Repository not found")
        commit = self.standin.resolve_revision(repo_id, revision)
        if commit is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        lies = self.standin.lies
        lying = self.standin.next_listing() >= lies.from_listing
        files = [
            hosted
            for hosted in self.standin.snapshots[repo_id][commit].values()
            if lying or hosted.name not in lies.extra_files
        ]
        info = {
            "_id": hashlib.md5(repo_id.encode()).hexdigest()[:24],
            "id": repo_id,
            "modelId": repo_id,
            "sha": lies.commit if lying and lies.commit else commit,
            "private": False,
            "gated": False,
            "disabled": False,
            "tags": [],
            "library_name": "transformers",
            "lastModified": "2026-01-01T00:00:00.000Z",
            "siblings": [self._sibling(hosted, blobs) for hosted in files],
        }
        self._send(200, {"Content-Type": "application/json"}, json.dumps(info).encode())

    def _sibling(self, hosted: HostedFile, blobs: bool) -> dict[str, object]:
        entry: dict[str, object] = {"rfilename": hosted.name}
        if blobs:
            size = self.standin.lies.sizes.get(hosted.name, len(hosted.data))
            entry.update({"size": size, "blobId": HostedFile(hosted.name, hosted.data, False).etag})
            if hosted.lfs:
                entry["lfs"] = {"sha256": hosted.etag, "size": size, "pointerSize": 134}
        return entry

    def _resolve(self, repo_id: str, revision: str, filename: str) -> None:
        if repo_id not in self.standin.files:
            return self._error(401, "RepoNotFound", "Repository not found")
        resolved = self.standin.resolve_revision(repo_id, revision)
        if resolved is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        commit = self.standin.file_commit(repo_id, resolved)
        hosted = self.standin.snapshots[repo_id][resolved].get(filename)
        if hosted is None:
            return self._error(404, "EntryNotFound", f"{filename} does not exist", commit)
        self._file(repo_id, hosted, commit)

    def _file(self, repo_id: str, hosted: HostedFile, commit: str) -> None:
        lies = self.standin.lies
        headers = {"X-Repo-Commit": commit, "Accept-Ranges": "bytes"}
        if hosted.lfs:
            pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{hosted.etag}\n"
            headers.update(
                {
                    "ETag": f'"{hashlib.sha1(pointer.encode()).hexdigest()}"',
                    "X-Linked-Etag": lies.etags.get(hosted.name, f'"{hosted.etag}"'),
                    "X-Linked-Size": str(lies.sizes.get(hosted.name, len(hosted.data))),
                    "Location": f"{lies.lfs_endpoint or self.standin.endpoint}/lfs/{hosted.etag}",
                }
            )
            return self._send(302, headers)
        headers["ETag"] = lies.etags.get(hosted.name, f'"{hosted.etag}"')
        self._content(hosted, headers)

    def _lfs(self, sha256: str) -> None:
        hosted = self.standin.by_sha256.get(sha256)
        if hosted is None:
            return self._error(404, "EntryNotFound", "no such object")
        self._content(hosted, {"ETag": f'"{hosted.etag}"', "Accept-Ranges": "bytes"})

    def _content(self, hosted: HostedFile, headers: dict[str, str]) -> None:
        data, total = hosted.data, len(hosted.data)
        wanted = self.headers.get("Range")
        status, start = 200, 0
        if wanted and wanted.startswith("bytes="):
            first, _, last = wanted.removeprefix("bytes=").partition("-")
            start = int(first or 0)
            end = int(last) if last else total - 1
            if start >= total:
                return self._send(416, {"Content-Range": f"bytes */{total}"})
            data = hosted.data[start : end + 1]
            status = 206
            headers["Content-Range"] = f"bytes {start}-{start + len(data) - 1}/{total}"
        headers.setdefault("Content-Type", "application/octet-stream")
        if self.command == "GET" and status == 200 and self.standin.take_cut(hosted.name):
            # Announce the whole file, send half of it, drop the connection.
            self.send_response(200)
            for key, value in {**headers, "Content-Length": str(total)}.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data[: total // 2])
            self.wfile.flush()
            self.close_connection = True
            self._record(-200)  # a cut-off 200
            return
        self._send(status, headers, data)
