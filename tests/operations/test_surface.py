"""Triton's own API surface: the admin groups closed on HTTP and gRPC, nothing secret in the
process list, and the watchdog's endpoint and stub bookkeeping."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from shared_fixtures import TEST_FRONT_INSTANCES, dedicated_server
from triton_calls import MODEL, build_inputs, parse
from tritonclient.utils import InferenceServerException

from qwen3_aligner_triton.triton_flags import (
    CLIENT_APIS,
    CLOSED_APIS,
    CLOSED_HEADER,
    ServerOptions,
    build_command,
    closing_flags,
    flag_values,
    http_endpoint,
    restricted_groups,
)
from qwen3_aligner_triton.triton_install import TritonInstallation, locate
from qwen3_aligner_triton.tritonserver import StubWatch, backend_stub_pids

INSTALL = TritonInstallation(Path("tritonserver"), None, "PATH")
RESTRICT = ("--http-restricted-api", "--grpc-restricted-protocol")
ONE_SECOND = np.zeros(16000, np.float32)


# --- the command line ------------------------------------------------------------------------


def test_every_closed_group_is_one_tritonserver_knows():
    out = subprocess.run(
        [str(locate().binary), "--help"], capture_output=True, text=True, timeout=60
    )
    help_text = " ".join((out.stdout + out.stderr).split())
    allowed = help_text.split("Allowed APIs:", 1)[1].split("GRPC:", 1)[0]
    known = {name.strip() for name in allowed.split(",")}
    assert set(CLOSED_APIS) | set(CLIENT_APIS) == known, known
    assert not set(CLOSED_APIS) & set(CLIENT_APIS)


def test_the_command_closes_every_admin_group_on_both_protocols_without_a_secret():
    cmd = build_command(INSTALL, ServerOptions(model_repository=Path("/repo")))
    for flag in RESTRICT:
        (value,) = flag_values(cmd, flag)
        groups, _, credential = value.partition(":")
        assert groups.split(",") == list(CLOSED_APIS)
        assert credential == f"{CLOSED_HEADER}=none"
    # The header name holds ':', which ends an HTTP header name and is illegal in gRPC metadata.
    assert ":" in CLOSED_HEADER
    # Model control "none": every model of the repository loads at start, none on request.
    assert not any(a.startswith(("--model-control-mode", "--load-model")) for a in cmd)


def test_a_group_the_operator_restricts_is_left_to_the_operators_flag():
    mine = "--http-restricted-api=model-config,logging:x-admin=from-a-file"
    flags = closing_flags(CLOSED_APIS, [mine])
    http = [f for f in flags if f.startswith("--http-")]
    grpc = [f for f in flags if f.startswith("--grpc-")]
    assert restricted_groups(http, RESTRICT[0]) == set(CLOSED_APIS) - {"model-config", "logging"}
    assert restricted_groups(grpc, RESTRICT[1]) == set(CLOSED_APIS)
    assert closing_flags((), []) == []


@pytest.mark.parametrize(
    ("args", "endpoint"),
    [
        ([], ("127.0.0.1", 8000)),
        (["--http-address=0.0.0.0", "--http-port=9000"], ("127.0.0.1", 9000)),
        (["--http-address=10.1.2.3", "--http-address=127.0.0.2"], ("127.0.0.2", 8000)),
        (["--http-address=::"], ("::1", 8000)),
        (["--http-address=[fd00::5]", "--http-port=1"], ("fd00::5", 1)),
    ],
)
def test_the_watchdog_polls_the_address_and_port_the_server_really_uses(args, endpoint):
    assert http_endpoint(["tritonserver", *args]) == endpoint
    opts = ServerOptions(model_repository=Path("/r"), address="0.0.0.0", extra_args=tuple(args))
    assert http_endpoint(build_command(INSTALL, opts)) == endpoint


# --- the watchdog's bookkeeping --------------------------------------------------------------


def test_stub_watch_notes_the_stubs_once_ready_and_reports_a_lost_one():
    watch = StubWatch()
    assert watch.observe({10, 11}, lambda: False) == set()  # loading: not yet noted
    assert watch.baseline is None
    assert watch.observe({10, 11}, lambda: True) == set()
    assert watch.observe({10, 11, 12}, lambda: pytest.fail("no need to ask")) == set()
    assert watch.observe({11, 12}, lambda: True) == {10}


def test_stub_watch_keeps_looking_when_it_first_sees_no_stubs():
    watch = StubWatch()
    for _ in range(3):
        assert watch.observe(set(), lambda: True) == set()
    assert watch.observe({7}, lambda: True) == set()
    assert watch.baseline == {7}
    assert watch.observe(set(), lambda: True) == {7}


def test_stub_watch_gives_a_stub_lost_while_not_ready_the_time_of_a_shutdown():
    watch = StubWatch({1, 2}, grace=10.0)
    assert watch.observe({2}, lambda: False, now=100.0) == set()  # maybe a shutdown
    assert watch.observe({2}, lambda: False, now=105.0) == set()
    # Still running without it 10 s later: the stub crashed and the server stays down.
    assert watch.observe({2}, lambda: False, now=110.0) == {1}


def test_stub_watch_forgets_a_stub_that_came_back_before_the_grace():
    watch = StubWatch({1, 2}, grace=10.0)
    assert watch.observe({2}, lambda: False, now=100.0) == set()
    assert watch.observe({2, 3}, lambda: True, now=104.0) == {1}  # ready again without it
    watch = StubWatch({1, 2}, grace=10.0)
    assert watch.observe({2}, lambda: False, now=100.0) == set()
    assert watch.observe({1, 2}, lambda: False, now=104.0) == set()
    assert watch.missing_since is None


# --- against a real server -------------------------------------------------------------------

SHM_BODY = json.dumps({"key": "/x", "offset": 0, "byte_size": 16})
CLOSED_HTTP = {
    "shared-memory": [
        ("POST", "/v2/systemsharedmemory/region/x/register", SHM_BODY),
        ("GET", "/v2/systemsharedmemory/status", None),
        ("POST", "/v2/systemsharedmemory/unregister", ""),
        ("POST", "/v2/cudasharedmemory/region/x/register", SHM_BODY),
        ("GET", "/v2/cudasharedmemory/status", None),
    ],
    "model-config": [("GET", f"/v2/models/{MODEL}/config", None)],
    "model-repository": [
        ("POST", "/v2/repository/index", ""),
        ("POST", f"/v2/repository/models/{MODEL}/load", ""),
        ("POST", f"/v2/repository/models/{MODEL}/unload", ""),
    ],
    "logging": [("GET", "/v2/logging", None), ("POST", "/v2/logging", '{"log_verbose_level": 1}')],
    "trace": [
        ("GET", "/v2/trace/setting", None),
        ("POST", "/v2/trace/setting", '{"trace_level": ["TIMESTAMPS"]}'),
        ("GET", f"/v2/models/{MODEL}/trace/setting", None),
    ],
}
OPEN_HTTP = [
    "/v2/health/live",
    "/v2/health/ready",
    f"/v2/models/{MODEL}/ready",
    "/v2",
    f"/v2/models/{MODEL}",
    f"/v2/models/{MODEL}/stats",
]


def raw_http(port: int, method: str, path: str, body: str | None, header: bytes = b"") -> tuple:
    """(status, body) of one request written by hand, so that any ``header`` line can be sent."""
    data = (body or "").encode()
    request = (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        line = header + b"\r\n" if header else b""
        sock.sendall(request + line + b"\r\n" + data)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head, _, payload = reply.partition(b"\r\n\r\n")
    return int(head.split()[1]), payload.decode("utf-8", "replace")


def grpc_calls(client: grpcclient.InferenceServerClient) -> dict:
    return {
        "shared-memory": [
            lambda h: client.get_system_shared_memory_status(headers=h),
            lambda h: client.register_system_shared_memory("x", "/x", 16, headers=h),
            lambda h: client.get_cuda_shared_memory_status(headers=h),
        ],
        "model-config": [lambda h: client.get_model_config(MODEL, headers=h)],
        "model-repository": [
            lambda h: client.get_model_repository_index(headers=h),
            lambda h: client.load_model(MODEL, headers=h),
            lambda h: client.unload_model(MODEL, headers=h),
        ],
        "logging": [
            lambda h: client.get_log_settings(headers=h),
            lambda h: client.update_log_settings({"log_verbose_level": 1}, headers=h),
        ],
        "trace": [
            lambda h: client.get_trace_settings(headers=h),
            lambda h: client.update_trace_settings(settings={"trace_rate": "1"}, headers=h),
        ],
    }


def _hpack_literal(name: str, value: str) -> bytes:
    """One header as an HPACK literal without indexing, no Huffman coding (RFC 7541 6.2.2)."""

    def string(text: str) -> bytes:
        data = text.encode()
        assert len(data) < 127
        return bytes([len(data)]) + data

    return b"\x00" + string(name) + string(value)


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    head = len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big")
    return head + payload


def raw_grpc_answers(port: int, method: str, extra: dict[str, str]) -> bool:
    """Whether a gRPC call written frame by frame (HTTP/2, any header bytes at all) gets a
    response message back: a client that skips every check gRPC libraries make."""
    headers = {
        ":method": "POST",
        ":scheme": "http",
        ":path": f"/inference.GRPCInferenceService/{method}",
        ":authority": "127.0.0.1",
        "content-type": "application/grpc",
        "te": "trailers",
        **extra,
    }
    block = b"".join(_hpack_literal(k, v) for k, v in headers.items())
    empty_message = b"\x00\x00\x00\x00\x00"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
            + _frame(4, 0, 0, b"")  # SETTINGS
            + _frame(1, 0x4, 1, block)  # HEADERS, END_HEADERS
            + _frame(0, 0x1, 1, empty_message)  # DATA, END_STREAM
        )
        buffer = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                return False
            if not chunk:
                return False
            buffer += chunk
            while len(buffer) >= 9:
                size = int.from_bytes(buffer[:3], "big")
                if len(buffer) < 9 + size:
                    break
                kind, flags = buffer[3], buffer[4]
                stream = int.from_bytes(buffer[5:9], "big") & 0x7FFFFFFF
                buffer = buffer[9 + size :]
                if kind == 4 and not flags & 0x1:
                    sock.sendall(_frame(4, 0x1, 0, b""))  # acknowledge the server's SETTINGS
                if stream == 1 and kind == 0 and size > 0:
                    return True  # a response message
                if (stream == 1 and (kind == 3 or flags & 0x1)) or kind == 7:
                    return False  # reset, trailers only, or connection closed


def process_text(pid: int) -> tuple[str, str]:
    """What other users may read of a process (its command line), and its environment."""
    proc = Path("/proc", str(pid))
    cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    environ = (proc / "environ").read_bytes().replace(b"\0", b"\n").decode()
    return cmdline, environ


@pytest.mark.integration
def test_admin_groups_are_closed_and_the_process_list_holds_no_key(tmp_path, tiny_checkpoint):
    with dedicated_server(tmp_path, tiny_checkpoint) as srv:
        port = int(srv.http_url.rsplit(":", 1)[1])
        server_pid = srv.running.process.pid
        # HTTP: every closed group answers 403 before it does anything.
        for group, calls in CLOSED_HTTP.items():
            for method, path, body in calls:
                status, text = raw_http(port, method, path, body)
                assert status == 403, (group, method, path, status, text)
                assert "restricted" in text, text
        for path in OPEN_HTTP:
            assert raw_http(port, "GET", path, None)[0] == 200, path
        # gRPC: the same groups are refused, the client's groups work.
        with grpcclient.InferenceServerClient(srv.grpc_url) as client:
            for group, calls in grpc_calls(client).items():
                for call in calls:
                    with pytest.raises(InferenceServerException) as info:
                        call(None)
                    status = info.value.status()
                    assert status in ("StatusCode.UNAVAILABLE", "StatusCode.PERMISSION_DENIED")
                    assert "restricted" in info.value.message(), (group, info.value)
            assert client.is_server_ready() and client.is_model_ready(MODEL)
            assert client.get_model_metadata(MODEL).name == MODEL
            assert client.get_inference_statistics(MODEL).model_stats
            inputs = build_inputs(grpcclient, ONE_SECOND, 16000, "hello", "en")
            assert parse(client.infer(MODEL, inputs))["units"]
        with httpclient.InferenceServerClient(srv.http_url) as client:
            inputs = build_inputs(httpclient, ONE_SECOND, 16000, "hello", "en")
            assert parse(client.infer(MODEL, inputs))["units"]

        # What `ps` shows of the server and its stubs: no credential of any kind.
        pids = [server_pid, *backend_stub_pids(server_pid)]
        assert len(pids) == 2 + TEST_FRONT_INSTANCES  # the server, the fronts' and the core's stubs
        ps = subprocess.run(
            ["ps", "-ww", "-o", "args=", "-p", ",".join(map(str, pids))],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
        assert "--http-restricted-api" in ps and "qwen3-aligner-admin" not in ps
        cmdline = process_text(server_pid)[0]
        seen = []
        for flag in RESTRICT:
            for value in flag_values(cmdline.split(), flag):
                key, _, secret = value.partition(":")[2].partition("=")
                assert key == CLOSED_HEADER and secret == "none", value
                seen.append((key, secret))
        assert len(seen) == 2
        for pid in pids:
            assert "restricted" not in process_text(pid)[1], "restriction settings in environ"
        # Whoever reads the command line and replays it gets nowhere: HTTP parses the header
        # name only up to the ':', gRPC refuses the key.
        key, value = seen[0]
        for header in (f"{key}: {value}", f"{key}:{value}", f"{key.split(':')[0]}: {value}"):
            status, _ = raw_http(port, *CLOSED_HTTP["model-config"][0][:2], None, header.encode())
            assert status == 403, header
            status, _ = raw_http(port, *CLOSED_HTTP["shared-memory"][0], header.encode())
            assert status == 403, header
        with grpcclient.InferenceServerClient(srv.grpc_url) as client:
            for metadata in ({f"triton-grpc-protocol-{key}": value}, {key: value}):
                with pytest.raises(InferenceServerException) as info:
                    client.get_system_shared_memory_status(headers=metadata)
                assert info.value.status() != "StatusCode.OK"
        # Not even a hand-written HTTP/2 client that sends the key as it is gets through.
        grpc_port = int(srv.grpc_url.rsplit(":", 1)[1])
        assert raw_grpc_answers(grpc_port, "ServerLive", {}), "the raw client works"
        assert not raw_grpc_answers(grpc_port, "SystemSharedMemoryStatus", {})
        for name in (f"triton-grpc-protocol-{key}", key):
            assert not raw_grpc_answers(grpc_port, "SystemSharedMemoryStatus", {name: value})
            assert not raw_grpc_answers(grpc_port, "RepositoryIndex", {name: value})
        assert srv.running.process.poll() is None and srv.running.restarts == 0


@pytest.mark.integration
def test_an_operator_reaches_a_group_with_a_header_of_their_own(tmp_path, tiny_checkpoint):
    """The documented way in: restrict the group yourself; the launcher leaves it to you."""
    import dataclasses

    from shared_fixtures import SERVER_READY_TIMEOUT

    from qwen3_aligner_triton.repository import Placement, render_repository
    from qwen3_aligner_triton.triton_flags import loopback_options
    from qwen3_aligner_triton.tritonserver import start

    repo = render_repository(
        tmp_path / "repo", Placement("KIND_CPU", 1), {"checkpoint": str(tiny_checkpoint)}
    )
    opts = loopback_options(repo)
    # 127.0.0.2 (loopback too): the launcher must poll where --http-address says.
    mine = ("--http-address=127.0.0.2", "--http-restricted-api=model-config:x-admin=let-me-in")
    running = start(dataclasses.replace(opts, extra_args=mine))
    try:
        running.wait_ready(SERVER_READY_TIMEOUT)
        assert (running.host, running.http_port) == ("127.0.0.2", opts.http_port)
        url = f"http://127.0.0.2:{opts.http_port}"
        import requests

        config = f"{url}/v2/models/{MODEL}/config"
        # Connection: close, so that the server's drain at stop waits for no idle connection.
        headers = {"Connection": "close"}
        assert requests.get(config, headers=headers, timeout=10).status_code == 403
        admin = {**headers, "x-admin": "let-me-in"}
        reply = requests.get(config, headers=admin, timeout=10)
        assert reply.status_code == 200 and reply.json()["name"] == MODEL
        index = requests.post(f"{url}/v2/repository/index", headers=admin, timeout=10)
        assert index.status_code == 403, "the other groups stay closed"
    finally:
        code = running.stop()
        assert code == 0, "\n".join(list(running.log_tail)[-25:])
