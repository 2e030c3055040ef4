"""The ``tritonserver`` command line: options of one run, the API groups closed to the network,
and where a server started with given flags answers.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .contract import MODEL_NAME
from .triton_install import TritonInstallation

SHM_PREFIX = "triton_python_backend_shm_region_"  # the Python backend's default region prefix
EXIT_TIMEOUT_SECONDS = 30  # tritonserver's drain time for in-flight requests on SIGTERM
# Triton's API groups (the names --http-restricted-api and --grpc-restricted-protocol take).
# Clients, probes and Prometheus need these ...
CLIENT_APIS = ("health", "metadata", "inference", "statistics")
# ... and nobody needs these from the network: shared memory (system and CUDA) lets a caller map
# memory into the server, the repository API loads code, the others reveal or change settings.
CLOSED_APIS = ("shared-memory", "model-config", "model-repository", "logging", "trace")
# Closed groups are restricted to a header that no request can carry: ':' ends an HTTP/1.1 header
# name, and gRPC refuses metadata keys with ':' (Triton expects "triton-grpc-protocol-<key>").
# So nothing on the command line opens them: there is no secret to leak.
CLOSED_HEADER = "closed:no-credential"
CLOSED_VALUE = "none"
RESTRICT_FLAGS = ("--http-restricted-api", "--grpc-restricted-protocol")


@dataclass(frozen=True)
class ServerOptions:
    """Command-line options of one server run."""

    model_repository: Path
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    address: str = "0.0.0.0"
    gpu: bool = False
    log_verbose: int = 0
    extra_args: tuple[str, ...] = ()
    # Restart tritonserver when a backend stub process dies (Triton 2.51 would otherwise keep
    # reporting ready while every request fails).
    watchdog: bool = True
    # Triton API groups closed on HTTP and gRPC (see CLOSED_APIS). A group that ``extra_args``
    # restrict under a credential of the operator's own is left to that flag.
    closed_apis: tuple[str, ...] = CLOSED_APIS
    # The Python backend's shared-memory regions are named after this prefix, so stopping this
    # server cleans its own regions and never those of another server on the same machine.
    shm_prefix: str = field(default_factory=lambda: f"{SHM_PREFIX}{secrets.token_hex(4)}_")


def loopback_options(
    model_repository: Path, gpu: bool = False, open_apis: Iterable[str] = ()
) -> ServerOptions:
    """Options for a server on 127.0.0.1 with three free ports (tests, benchmarks, soak);
    ``open_apis`` lists groups of CLOSED_APIS to leave open (perf_analyzer reads model-config)."""
    http, grpc, metrics = free_ports(3)
    opened = set(open_apis)
    unknown = opened - set(CLOSED_APIS)
    if unknown:
        raise ValueError(f"not a closed API group: {sorted(unknown)}; closed: {CLOSED_APIS}")
    return ServerOptions(
        model_repository=model_repository,
        http_port=http,
        grpc_port=grpc,
        metrics_port=metrics,
        address="127.0.0.1",
        gpu=gpu,
        closed_apis=tuple(a for a in CLOSED_APIS if a not in opened),
    )


def flag_values(args: Sequence[str], flag: str) -> list[str]:
    """Every value given to ``flag`` (as ``--flag=value``), in order; tritonserver uses the last
    one of most flags and every one of the restriction flags."""
    return [a.split("=", 1)[1] for a in args if a.startswith(flag + "=")]


def restricted_groups(args: Sequence[str], flag: str) -> set[str]:
    """API groups that ``args`` restrict with ``flag`` (``--flag=group,group:key=value``)."""
    groups: set[str] = set()
    for value in flag_values(args, flag):
        groups.update(g.strip() for g in value.split(":", 1)[0].split(",") if g.strip())
    return groups


def closing_flags(closed: Sequence[str], extra_args: Sequence[str]) -> list[str]:
    """The restriction flags that close ``closed`` on HTTP and gRPC. Triton refuses to start when
    one group appears in two flags, so groups that ``extra_args`` restrict are left to them."""
    flags = []
    for flag in RESTRICT_FLAGS:
        taken = restricted_groups(extra_args, flag)
        groups = [g for g in closed if g not in taken]
        if groups:
            flags.append(f"{flag}={','.join(groups)}:{CLOSED_HEADER}={CLOSED_VALUE}")
    return flags


def _reachable(host: str) -> str:
    """The address to connect to for a server listening on ``host`` (a wildcard: loopback)."""
    host = host.strip("[]")
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def http_endpoint(args: Sequence[str]) -> tuple[str, int]:
    """Where the server started with ``args`` answers HTTP, as (host to connect to, port): the
    last --http-address and --http-port given; a wildcard address is reached on loopback."""
    host = (flag_values(args, "--http-address") or ["0.0.0.0"])[-1]
    port = int((flag_values(args, "--http-port") or ["8000"])[-1])
    return _reachable(host), port


def metrics_endpoint(args: Sequence[str]) -> tuple[str, int] | None:
    """Where the server started with ``args`` serves Prometheus metrics, or None when metrics
    are off (``--allow-metrics=false``). The metrics address defaults to the HTTP address."""
    allowed = (flag_values(args, "--allow-metrics") or ["true"])[-1].strip().lower()
    if allowed in ("false", "0", "off", "no"):
        return None
    host = (
        flag_values(args, "--metrics-address") or flag_values(args, "--http-address") or ["0.0.0.0"]
    )[-1]
    port = int((flag_values(args, "--metrics-port") or ["8002"])[-1])
    return _reachable(host), port


def build_command(install: TritonInstallation, opts: ServerOptions) -> list[str]:
    """The ``tritonserver`` argument list for ``opts``."""
    cmd = [
        str(install.binary),
        f"--model-repository={opts.model_repository}",
        f"--http-address={opts.address}",
        f"--http-port={opts.http_port}",
        f"--grpc-address={opts.address}",
        f"--grpc-port={opts.grpc_port}",
        f"--metrics-address={opts.address}",
        f"--metrics-port={opts.metrics_port}",
        "--strict-readiness=true",
        "--exit-on-error=true",
        "--disable-auto-complete-config",
        f"--log-verbose={opts.log_verbose}",
        f"--exit-timeout-secs={EXIT_TIMEOUT_SECONDS}",
    ]
    # Model control mode "none" (the default): every model in the repository is loaded at start
    # and the repository API can load nothing, with or without a credential.
    cmd += closing_flags(opts.closed_apis, opts.extra_args)
    cmd.append(f"--backend-config=python,shm-region-prefix-name={opts.shm_prefix}")
    if install.backend_dir is not None:
        cmd.append(f"--backend-directory={install.backend_dir}")
    if not opts.gpu:
        cmd += ["--allow-gpu-metrics=false", "--pinned-memory-pool-byte-size=0"]
    cmd += list(opts.extra_args)
    return cmd


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct TCP ports free on ``host`` right now."""
    import socket

    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def describe_endpoints(host: str, opts: ServerOptions) -> Iterable[str]:
    yield f"HTTP    http://{host}:{opts.http_port}  (KServe v2; ready: /v2/health/ready)"
    yield f"gRPC    {host}:{opts.grpc_port}"
    yield f"metrics http://{host}:{opts.metrics_port}/metrics"
    yield f"model   {MODEL_NAME}"
