"""The deployment files in docker/ checked with real tools and against a real tritonserver.

Static: hadolint on the Dockerfile, ``docker-compose config`` (the Compose v2 binary, which needs
no Docker engine for it) on compose.yaml, the Kubernetes schemas of ``kubernetes-validate`` on the
kustomize build, a PromQL parser on every query, and the pins against docker/constraints.txt and
the hashes of docker/requirements.lock.
Live: the probe paths, metric names and server flags that these files use are checked against
what tritonserver (the same 2.51 release as the image's base) really serves and accepts, and the
container's entrypoint is run for real.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
import yaml
from google.protobuf import text_format
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from serve_launch import children_named
from shared_fixtures import SERVER_READY_TIMEOUT
from triton_calls import MODEL, build_inputs

from qwen3_aligner_triton import entrypoint
from qwen3_aligner_triton.params import CHECKPOINT_ENV, DEFAULT_CHECKPOINT
from qwen3_aligner_triton.repository import (
    SOURCE_REPOSITORY,
    default_front_instances,
    load_config,
)

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from qwen3_aligner_triton.contract import CORE_MODEL_NAME
from qwen3_aligner_triton.triton_flags import CLOSED_APIS, CLOSED_HEADER, build_command, free_ports
from qwen3_aligner_triton.triton_install import ServerError, TritonInstallation, locate
from qwen3_aligner_triton.tritonserver import (
    WATCHDOG_INTERVAL_SECONDS,
    backend_stub_pids,
    http_ready,
    shm_regions,
)

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
CLIENT = ROOT / "client"
COMPOSE = DOCKER / "compose.yaml"
K8S = DOCKER / "k8s"
ADAPTER_RULES = K8S / "prometheus-adapter-rules.yaml"
DASHBOARD = DOCKER / "grafana-dashboard.json"
CONSTRAINTS = DOCKER / "constraints.txt"
LOCK = DOCKER / "requirements.lock"
BIN = Path(sys.executable).parent
K8S_VERSIONS = ("1.27.0", None)  # oldest supported here, and the newest schemas shipped
HTTP_PORT, GRPC_PORT, METRICS_PORT = 8000, 8001, 8002
OPENAI_PORT = 9000  # the OpenAI-style front (OPENAI_PORT), its default port
MIN_STARTUP_BUDGET = 600  # seconds a pod may take to download the checkpoint and load it
# Metrics the model exports itself (model.py); each with labels model and version.
CUSTOM_COUNTERS = (
    "qwen3_aligner_audio_seconds_total",
    "qwen3_aligner_units_total",
    "qwen3_aligner_rejected_requests_total",
)
CUSTOM_HISTOGRAMS = (
    "qwen3_aligner_forward_batch_size",
    "qwen3_aligner_stage_seconds",
    "qwen3_aligner_request_mean_score",
    "qwen3_aligner_request_repaired_share",
)
# Triton metrics the dashboard must show.
TRITON_METRICS = (
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_infer_duration_us",
    "nv_inference_pending_request_count",
    "nv_inference_exec_count",
)
# Exported by Triton only with a GPU; not on the CPU server of these tests.
GPU_ONLY_METRICS = frozenset({"nv_gpu_utilization", "nv_gpu_memory_used_bytes"})


# ---------------------------------------------------------------------------------------------
# Readers


def tool(name: str) -> str:
    """A command-line tool of the test extra (installed into this environment's bin/)."""
    path = BIN / name
    if path.is_file():
        return str(path)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed; ./scripts/setup-venv installs the test extra")
    return found


@cache
def dockerfile() -> tuple[tuple[str, str], ...]:
    """The Dockerfile's instructions as (INSTRUCTION, arguments), continuation lines joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, rest = full.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    return tuple(out)


def instructions(keyword: str) -> list[str]:
    return [rest for kw, rest in dockerfile() if kw == keyword]


def build_args() -> dict[str, str]:
    """ARG defaults (the global ones before FROM, and any stage ARG with a default)."""
    args: dict[str, str] = {}
    for rest in instructions("ARG"):
        name, eq, value = rest.partition("=")
        if eq:
            args[name] = value.strip('"')
    return args


def exec_form(keyword: str) -> list[str]:
    (rest,) = instructions(keyword)
    return json.loads(rest)


def image_env() -> dict[str, str]:
    """ENV values of the image, ${VAR} references resolved."""
    env: dict[str, str] = {}
    for rest in instructions("ENV"):
        for key, value in re.findall(r'(\w+)=("[^"]*"|\S+)', rest):
            value = value.strip('"')
            env[key] = re.sub(r"\$\{(\w+)\}", lambda m: env.get(m.group(1), m.group(0)), value)
    return env


def go_seconds(duration: str) -> float:
    """A Go duration as Compose prints it ("15m0s", "45s") in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


def flag_value(args: list[str], flag: str) -> str:
    values = [a.split("=", 1)[1] for a in args if a.startswith(flag + "=")]
    assert values, f"{flag} is not set in {args}"
    return values[-1]


def pip_pins() -> dict[str, str]:
    """Packages the Dockerfile installs, name -> version (ARG references resolved)."""
    args = build_args()
    pins: dict[str, str] = {}
    for rest in instructions("RUN"):
        if "pip install" not in rest:
            continue
        for spec in re.findall(r'"?([A-Za-z0-9_.\-]+(?:\[[^\]]*\])?==\$\{\w+\})"?', rest):
            req = Requirement(re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], spec))
            pins[canonicalize_name(req.name)] = str(req.specifier).removeprefix("==")
    return pins


def constraints() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version
    return pins


def lock() -> dict[str, tuple[Requirement, list[str]]]:
    """docker/requirements.lock: name -> (its requirement, its --hash values)."""
    entries: dict[str, tuple[Requirement, list[str]]] = {}
    text = re.sub(r"\\\n", " ", LOCK.read_text())
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        spec, *options = line.split()
        hashes = [o.removeprefix("--hash=") for o in options if o.startswith("--hash=")]
        assert len(hashes) == len(options), f"{spec}: options other than --hash: {options}"
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        assert name not in entries, f"{name} twice in the lock"
        entries[name] = (req, hashes)
    return entries


def pip_installs() -> list[list[str]]:
    """The arguments of each ``pip install`` in the Dockerfile's RUN instructions."""
    found = []
    for rest in instructions("RUN"):
        for args in re.findall(r"\bpip3? install\b(.*?)(?=&&|\|\||;|\||$)", rest):
            found.append(shlex.split(args))
    return found


def copied_to() -> dict[str, str]:
    """COPY destination in the image (ENV resolved) -> its source in the build context."""
    env = image_env()
    dests = {}
    for rest in instructions("COPY"):
        *sources, dest = [w for w in rest.split() if not w.startswith("--")]
        dest = re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], dest)
        for source in sources:
            target = dest + Path(source).name if dest.endswith("/") else dest
            dests[target] = source
    return dests


def pyproject(folder: Path = ROOT) -> dict:
    return tomllib.loads((folder / "pyproject.toml").read_text())


def load_yaml_docs(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@cache
def k8s_objects() -> tuple[dict, ...]:
    """The kustomize build of docker/k8s (kubectl's kustomize when present, else its resources)."""
    kubectl = shutil.which("kubectl")
    if kubectl:
        out = subprocess.run(
            [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stderr
        return tuple(doc for doc in yaml.safe_load_all(out.stdout) if doc)
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return tuple(doc for name in kustomization["resources"] for doc in load_yaml_docs(K8S / name))


def k8s(kind: str) -> dict:
    (obj,) = [o for o in k8s_objects() if o["kind"] == kind]
    return obj


def aligner_container() -> dict:
    (container,) = k8s("Deployment")["spec"]["template"]["spec"]["containers"]
    return container


@cache
def compose_config() -> dict:
    """compose.yaml as the Compose binary resolves it, every profile on, no caller variables."""
    settings = (
        "MODEL_PATH",
        "MODEL_REVISION",
        "ASR_MODEL",
        "ASR_MODEL_REVISION",
        "DEVICE",
        "MAX_CONCURRENT",
        "OPENAI_PORT",
        "ALIGNER_PUBLISH_ADDRESS",
    )
    env = {k: v for k, v in os.environ.items() if k not in settings}
    compose = [tool("docker-compose"), "-f", str(COMPOSE), "--profile", "monitoring"]
    out = subprocess.run(
        [*compose, "config", "--format", "json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def uncomment(text: str, first_line: str) -> str:
    """``text`` with the commented-out YAML item that starts with ``first_line`` turned on, at each
    place it occurs: that line and the more deeply indented commented lines after it."""
    out, depth = [], None
    found = 0
    for line in text.splitlines():
        m = re.match(r"^(\s*)# (.*)$", line)
        if m and m.group(2) == first_line:
            depth, found = len(m.group(1)), found + 1
            out.append(m.group(1) + m.group(2))
            continue
        if depth is not None and m and len(m.group(1)) == depth and m.group(2).startswith("  "):
            out.append(m.group(1) + m.group(2))
            continue
        depth = None
        out.append(line)
    assert found, f"no commented-out {first_line!r}"
    return "\n".join(out) + "\n"


def adapter_rule() -> dict:
    (rule,) = yaml.safe_load(ADAPTER_RULES.read_text())["rules"]["custom"]
    return rule


def render_adapter_query(template: str) -> str:
    """A Prometheus Adapter metricsQuery with its Go template filled in as the adapter does."""
    return template.replace("<<.GroupBy>>", "namespace,pod").replace(
        "<<.LabelMatchers>>", 'namespace="default",pod=~"qwen3-aligner-.*"'
    )


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_queries() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]


def promql(expr: str):
    import promql_parser

    grafana_vars = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}
    for var, value in grafana_vars.items():
        expr = expr.replace(var, value)
    return promql_parser.parse(expr)


def metric_names(expr: str) -> set[str]:
    """Names of the series selected by a PromQL expression."""
    import promql_parser

    names: set[str] = set()

    def visit(node):
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)
        return True

    promql_parser.walk(promql(expr), pre_visit=visit)
    return names


def rate_selectors(expr) -> set[str]:
    """Metric names that appear inside rate() in an expression tree."""
    import promql_parser

    found: set[str] = set()

    def visit(node):
        if isinstance(node, promql_parser.Call) and node.func.name == "rate":
            found.update(metric_names(str(node)))
        return True

    promql_parser.walk(expr, pre_visit=visit)
    return found


def probe_urls() -> dict[str, tuple[int, str]]:
    """Every health check the deployment files define: where -> (port, path)."""
    container = aligner_container()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    urls: dict[str, tuple[int, str]] = {}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        port = get["port"] if isinstance(get["port"], int) else ports[get["port"]]
        urls[f"k8s {probe}"] = (port, get["path"])
    compose_test = " ".join(compose_config()["services"]["aligner"]["healthcheck"]["test"])
    (healthcheck,) = instructions("HEALTHCHECK")
    for where, text in (("compose healthcheck", compose_test), ("HEALTHCHECK", healthcheck)):
        (url,) = re.findall(r"http://[^'\"\s]+", text)
        parts = urlsplit(url)
        urls[where] = (parts.port or 80, parts.path)
    return urls


@cache
def tritonserver_options() -> dict[str, str | None]:
    """Flags that tritonserver --help lists: name -> argument type (None: takes no argument)."""
    out = subprocess.run(
        [str(locate().binary), "--help"], capture_output=True, text=True, timeout=60
    )
    options: dict[str, str | None] = {}
    for line in (out.stdout + out.stderr).splitlines():
        m = re.match(r"^\s{2}(--[a-z0-9-]+)(?:\s+<(.+)>)?\s*$", line)
        if m:
            options[m.group(1)] = m.group(2)
    assert len(options) > 50, out.stdout + out.stderr
    return options


def check_server_flags(args: list[str], where: str) -> None:
    options = tritonserver_options()
    for arg in args:
        flag, eq, value = arg.partition("=")
        assert flag in options, f"{where}: tritonserver has no flag {flag}"
        kind = options[flag]
        if kind is None:
            assert not eq, f"{where}: {flag} takes no value"
            continue
        assert eq, f"{where}: give {flag} its value as {flag}=VALUE"
        if kind == "boolean":
            assert value in ("true", "false"), f"{where}: {arg}: expected true or false"
        elif kind == "integer":
            int(value)
        elif kind == "float":
            float(value)


def scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Prometheus text exposition -> sample name -> [(labels, value)]."""
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
        assert m, f"unparsable metrics line: {line!r}"
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        samples.setdefault(m.group(1), []).append((labels, float(m.group(3))))
    return samples


def model_total(samples, name: str) -> float:
    return sum(v for labels, v in samples.get(name, []) if labels.get("model") == MODEL)


# ---------------------------------------------------------------------------------------------
# Dockerfile


def test_hadolint_finds_nothing_in_the_dockerfile():
    out = subprocess.run(
        [tool("hadolint"), "--no-color", "--format", "json", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    findings = json.loads(out.stdout or "[]")
    assert findings == [], json.dumps(findings, indent=1)
    assert out.returncode == 0, out.stderr


def test_hadolint_does_flag_unpinned_images_and_packages(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM nvcr.io/nvidia/tritonserver:latest\nRUN pip install torch\n")
    out = subprocess.run(
        [tool("hadolint"), "--no-color", "--format", "json", str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    codes = {f["code"] for f in json.loads(out.stdout)}
    assert {"DL3007", "DL3013"} <= codes


def triton_release_of(server_version: str) -> str:
    """Triton 2.N -> NGC container yy.mm. Monthly since 23.01 = 2.30 (24.10 = 2.51); from 2.59 on
    a month later (25.07 = 2.59, 26.07 = 2.71, 26.11 = 2.75)."""
    minor = int(server_version.split(".")[1])
    months = minor - 30 + (1 if minor >= 59 else 0)
    return f"{23 + months // 12}.{months % 12 + 1:02d}"


# The first NGC release with the fixes of NVIDIA's August 2025 Triton bulletin (CVE-2025-23319,
# -23320, -23334); its images are Ubuntu 24.04 with Python 3.12.
FIRST_FIXED_RELEASE = "25.07"


def test_base_image_carries_the_2025_security_fixes():
    (base,) = instructions("FROM")
    assert base == "${TRITON_IMAGE}"
    args = build_args()
    assert args["TRITON_IMAGE"] == "nvcr.io/nvidia/tritonserver:${TRITON_VERSION}-py3"
    assert re.fullmatch(r"\d\d\.\d\d", args["TRITON_VERSION"])
    assert args["TRITON_VERSION"] >= FIRST_FIXED_RELEASE
    assert args["PYTHON_VERSION"] == "3.12", "NGC images since 24.12 are Ubuntu 24.04 + Python 3.12"
    assert triton_release_of("2.51.0") == "24.10" and triton_release_of("2.59.0") == "25.07"
    assert triton_release_of("2.75.0") == "26.11"
    # The client library of the same release (its protobuf 5 and geventhttpclient 2 have
    # Python 3.12 wheels; 2.51's do not).
    assert triton_release_of(args["TRITONCLIENT_VERSION"]) == args["TRITON_VERSION"]
    # Local runs use the older server of nvidia-pytriton 0.7.0 (2.51 = 24.10): kept safe by the
    # closed API groups (tests/operations/test_surface.py), not by its release.
    assert "nvidia-pytriton==0.7.0" in pyproject()["project"]["optional-dependencies"]["server"]
    # Ubuntu 24.04 marks its Python as externally managed; the image installs into it anyway.
    assert image_env()["PIP_BREAK_SYSTEM_PACKAGES"] == "1"


def test_every_build_arg_has_a_pinned_default():
    args = build_args()
    declared = {rest.split("=", 1)[0] for rest in instructions("ARG")}
    optional = {"CHECKPOINT", "CHECKPOINT_REVISION"}  # empty: no checkpoint baked in
    assert declared - optional <= set(args), f"ARGs without a default: {declared - set(args)}"
    # The base image: a tag by default, tag and digest in production (checked below).
    assert args["TRITON_IMAGE"].endswith(":${TRITON_VERSION}-py3")
    for name, value in args.items():
        if name not in optional | {"TRITON_IMAGE"}:
            assert re.fullmatch(r"[0-9][0-9a-z.]*", value), f"{name}={value!r} is not a version"


def test_dockerfile_pins_agree_with_constraints_pyproject_and_setup_venv():
    pins, locked = pip_pins(), constraints()
    expected = {
        "torch",
        "numpy",
        "transformers",
        "accelerate",
        "nagisa",
        "soynlp",
        "librosa",
        "soundfile",
        "tritonclient",
        "protobuf",
        "qwen-asr",
    }
    assert set(pins) == expected
    for name, version in pins.items():
        if name != "qwen-asr":  # installed with --no-deps, outside the constraints
            assert locked.get(name) == version, f"{name}: Dockerfile {version}, lock {locked[name]}"
    # The local r24.10 stub (pybind11 2.10) needs numpy 1.x; the image's r25.07 stub (pybind11
    # 2.12) takes both, and runs the numpy the tests run.
    assert SpecifierSet("<2").contains(pins["numpy"]), "tests run numpy 1.x"
    setup_venv = (ROOT / "scripts" / "setup-venv").read_text()
    assert f'QWEN_ASR_REQUIREMENT="qwen-asr=={pins["qwen-asr"]}"' in setup_venv
    assert "nvidia-pytriton" not in locked, "the image uses the container's tritonserver"


def test_update_constraints_script_reads_the_same_pins():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "update_constraints", DOCKER / "update_constraints.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    text = DOCKERFILE.read_text()
    args = script.dockerfile_args(text)
    assert {k: v for k, v in args.items() if v} == {k: v for k, v in build_args().items() if v}
    pins = {Requirement(p) for p in script.dockerfile_pins(text, args)}
    assert {canonicalize_name(r.name): str(r.specifier)[2:] for r in pins} == {
        name: version for name, version in pip_pins().items() if name != "qwen-asr"
    }
    assert script.outside_pins(text, args) == [("qwen-asr", pip_pins()["qwen-asr"])]
    assert script.LOCK == LOCK and script.CONSTRAINTS == CONSTRAINTS


def test_update_constraints_script_resolves_the_client_with_the_project(monkeypatch):
    """The lock must hold the client's dependencies too (the image installs it with --no-deps):
    the script hands pip both source folders and keeps neither in the lock."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "update_constraints", DOCKER / "update_constraints.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    commands = []

    def fake_run(cmd, check):
        commands.append(cmd)
        report = Path(cmd[cmd.index("--report") + 1])
        installed = [
            {"metadata": {"name": name, "version": "1.0"}}
            for name in ("qwen3-aligner-triton", "qwen3_aligner_client", "starlette")
        ]
        report.write_text(json.dumps({"install": installed}))

    monkeypatch.setattr(script.subprocess, "run", fake_run)
    assert script.resolve(["torch==2.7.1"], "3.12") == [("starlette", "1.0")]
    ((*_, last_pin, project, client),) = commands
    assert (last_pin, Path(project), Path(client)) == ("torch==2.7.1", ROOT, CLIENT)
    requires = script.build_requires()
    for folder in (ROOT, CLIENT):
        assert set(pyproject(folder)["build-system"]["requires"]) <= set(requires)


@pytest.mark.parametrize("folder", [ROOT, CLIENT], ids=["project", "client"])
def test_constraints_satisfy_every_dependency_of_the_project(folder):
    """The image installs this project and the client (for the OpenAI-style front) with
    --no-deps: every dependency of both must be in the constraints, at a version they accept."""
    locked = constraints()
    env = default_environment()
    env.update(python_version=build_args()["PYTHON_VERSION"], sys_platform="linux")
    for spec in pyproject(folder)["project"]["dependencies"]:
        req = Requirement(spec)
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        name = canonicalize_name(req.name)
        assert name in locked, f"{spec}: not pinned in docker/constraints.txt"
        assert req.specifier.contains(locked[name], prereleases=True), f"{spec} vs {locked[name]}"
    if folder == ROOT:
        front = {"starlette", "uvicorn", "python-multipart", "prometheus-client"}
        listed = {
            canonicalize_name(Requirement(s).name) for s in pyproject()["project"]["dependencies"]
        }
        assert front <= listed, "the OpenAI-style front's packages are runtime dependencies"


def test_image_installs_the_client_for_the_openai_front():
    """The front renders its answers with the client's writers: the client distribution goes into
    the image from the build context (no index has it), the way the project does, and the image
    build fails unless the front starts up to its command line."""
    copies = copied_to()
    client_dest = {dest: source for dest, source in copies.items() if source.startswith("client/")}
    assert set(client_dest.values()) == {
        "client/pyproject.toml",
        "client/README.md",
        "client/qwen3_aligner_client",
    }
    (folder,) = {str(Path(dest).parent) for dest in client_dest if dest.endswith("pyproject.toml")}
    installs = [argv for argv in pip_installs() if folder in argv]
    assert len(installs) == 1, installs
    (argv,) = installs
    assert {"--no-deps", "--no-build-isolation"} <= set(argv) and "[" not in " ".join(argv)
    assert any(dest == f"{folder}/qwen3_aligner_client" for dest in client_dest)
    runs = " ".join(instructions("RUN"))
    assert "python3 -m qwen3_aligner_triton.openai_front --help" in runs
    assert "not in the image" not in DOCKERFILE.read_text(), "a stale comment about the client"
    # The client's own build backend is the locked one too.
    entries = lock()
    for spec in pyproject(CLIENT)["build-system"]["requires"]:
        req = Requirement(spec)
        version = str(entries[canonicalize_name(req.name)][0].specifier)[2:]
        assert req.specifier.contains(version), f"client build backend {spec} vs {version}"
    # Locally, ./scripts/setup-venv installs it beside the project (it cannot be a dependency).
    setup_venv = (ROOT / "scripts" / "setup-venv").read_text()
    assert '-e "$ROOT/client' in setup_venv


def test_image_installs_the_project_without_the_server_extra():
    runs = " ".join(instructions("RUN"))
    project = "pip install --no-cache-dir --no-deps --no-build-isolation /tmp/qwen3-aligner-src "
    assert project in runs + " "
    assert "[server" not in runs and "-e " not in runs and "--editable" not in runs
    copies = instructions("COPY")
    for where in pyproject()["tool"]["setuptools"]["packages"]["find"]["where"]:
        assert any(c.split()[0] == where for c in copies), f"package folder {where}/ not copied"
    assert any(c.split()[0] == "model_repository" for c in copies)


def test_lock_pins_every_package_with_its_sha256_hashes():
    entries, locked = lock(), constraints()
    assert entries, "docker/requirements.lock is empty"
    for req, hashes in entries.values():
        (spec,) = req.specifier
        assert spec.operator == "==" and "*" not in spec.version, f"{req}: not pinned with =="
        assert not req.extras and req.marker is None and req.url is None, str(req)
        assert hashes, f"{req}: no hash"
        for value in hashes:
            assert re.fullmatch(r"sha256:[0-9a-f]{64}", value), f"{req}: hash {value!r}"
        assert len(set(hashes)) == len(hashes), f"{req}: a hash twice"
    versions = {name: str(req.specifier)[2:] for name, (req, _) in entries.items()}
    # Every package of the constraints at its version, and qwen-asr (installed without its
    # dependencies, so not in the constraints); nothing else.
    assert set(versions) == set(locked) | {"qwen-asr"}
    for name, version in locked.items():
        assert versions[name] == version, f"{name}: constraints {version}, lock {versions[name]}"
    assert versions["qwen-asr"] == pip_pins()["qwen-asr"]
    # torch from PyPI brings its CUDA libraries as nvidia-* wheels and its triton: locked too.
    assert "triton" in versions and sum(n.startswith("nvidia-") for n in versions) >= 10


def test_every_pip_install_checks_hashes_or_installs_only_local_sources():
    """pip installs from the registry only what the lock lists, with --require-hashes; a local
    source (this project: no registry hash) only on its own with --no-deps (pip refuses a local
    folder under --require-hashes)."""
    copies = copied_to()
    (lock_in_image,) = [
        dest for dest, source in copies.items() if source == "docker/requirements.lock"
    ]
    env = image_env()
    installs = pip_installs()
    assert len(installs) >= 2, installs
    hashed = 0
    for argv in installs:
        files, positional, flags = [], [], set()
        words = iter(argv)
        for word in words:
            if word in ("-r", "--requirement"):
                files.append(next(words))
            elif word in ("-c", "--constraint"):
                next(words)
            elif word.startswith("-"):
                flags.add(word)
            else:
                positional.append(word)
        files = [re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], f) for f in files]
        assert not flags & {"-e", "--editable", "-i", "--index-url", "--extra-index-url"}, argv
        assert not any(f.startswith(("--find-links", "--index-url", "--extra-")) for f in flags)
        if "--require-hashes" in flags:
            hashed += 1
            assert files == [lock_in_image] and not positional, argv
            # Wheels only: an sdist's build dependencies would be fetched without hashes.
            assert "--only-binary=:all:" in flags, argv
            assert "--no-deps" in flags, "the lock is complete; nothing else comes in"
        else:
            assert "--no-deps" in flags and not files and positional, argv
            for path in positional:
                assert path.startswith("/") and any(d.startswith(path + "/") for d in copies), (
                    f"pip install {path}: not a local source copied into the image"
                )
            assert "--no-build-isolation" in flags, "an isolated build fetches setuptools unchecked"
    assert hashed == 1, installs
    assert "PIP_CONSTRAINT" not in " ".join(instructions("RUN")) + str(image_env())
    assert "no registry hash" in DOCKERFILE.read_text(), "say why the project goes in unhashed"


def test_lock_holds_the_build_backend_of_the_project():
    """The project is built without build isolation, by the setuptools of the lock."""
    entries = lock()
    for spec in pyproject()["build-system"]["requires"]:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        assert name in entries, f"{spec}: the build backend is not in the lock"
        version = str(entries[name][0].specifier)[2:]
        assert req.specifier.contains(version, prereleases=True), f"{spec} vs {version}"


def test_build_args_go_in_as_constraints_the_lock_satisfies(tmp_path):
    """The install step writes the Dockerfile's pins as a constraints file (extras stripped, as
    pip requires): run that part for real and check it against the lock."""
    (run,) = [r for r in instructions("RUN") if "--require-hashes" in r]
    writer, _, _ = run.partition("&&")
    out = tmp_path / "pins.txt"
    script, n = re.subn(r">\s*/tmp/\S+", f"> {out}", writer)
    assert n == 1, writer
    env = {**os.environ, **{k: v for k, v in build_args().items() if "$" not in v}}
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", script], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    written = [Requirement(line) for line in out.read_text().splitlines()]
    assert all(not r.extras for r in written), "pip takes no extras in a constraints file"
    entries = lock()
    assert {canonicalize_name(r.name): str(r.specifier)[2:] for r in written} == pip_pins()
    for req in written:
        locked_req = entries[canonicalize_name(req.name)][0]
        assert str(locked_req.specifier) == str(req.specifier), f"{req} vs lock {locked_req}"
    assert "-c /tmp/" in run and run.rstrip().endswith("rm /tmp/image-pins.txt")


def test_update_constraints_script_writes_the_lock_the_tests_read():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "update_constraints", DOCKER / "update_constraints.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    supported = script.image_tags(build_args()["PYTHON_VERSION"])
    a, b, c = ("a" * 64, "b" * 64, "c" * 64)
    files = [
        {"filename": "demo-1.0-cp312-cp312-manylinux_2_17_x86_64.whl", "digests": {"sha256": b}},
        {"filename": "demo-1.0-cp312-cp312-win_amd64.whl", "digests": {"sha256": a}},
        {"filename": "demo-1.0.tar.gz", "digests": {"sha256": c}},
    ]
    entry = script.lock_entry("demo", "1.0", files, supported)
    joined = re.sub(r"\\\n", " ", entry).split()
    assert joined == ["demo==1.0", f"--hash=sha256:{a}", f"--hash=sha256:{b}", f"--hash=sha256:{c}"]
    # The image installs wheels only: a release without one for it (CPython 3.12, manylinux
    # x86_64) is refused, as is a file without a sha256.
    for unusable in (
        files[1:],
        [{"filename": "demo-1.0-cp311-cp311-manylinux_2_17_x86_64.whl", "digests": {"sha256": a}}],
        [{"filename": "demo-1.0-cp312-cp312-manylinux_2_40_x86_64.whl", "digests": {"sha256": a}}],
    ):
        with pytest.raises(LookupError, match="no wheel for the image"):
            script.lock_entry("demo", "1.0", unusable, supported)
    with pytest.raises(LookupError, match="no sha256"):
        script.lock_entry("demo", "1.0", [{**files[0], "digests": {"md5": "0" * 32}}], supported)
    assert script.lock_entry(
        "pure", "2", [{"filename": "pure-2-py3-none-any.whl", "digests": {"sha256": a}}], supported
    )
    assert LOCK.read_text().startswith("# ") and "update_constraints.py" in LOCK.read_text()


def test_base_image_can_be_pinned_by_digest():
    """FROM ${TRITON_IMAGE}: production builds pass the tag with its digest; the build refuses a
    reference without the TRITON_VERSION tag, and warns on one without a digest."""
    lines = DOCKERFILE.read_text().splitlines()
    first_from = next(i for i, line in enumerate(lines) if line.startswith("FROM "))
    assert any(line.startswith("ARG TRITON_IMAGE=") for line in lines[:first_from])
    assert "ARG TRITON_IMAGE" in lines[first_from:] and "ARG TRITON_VERSION" in lines[first_from:]
    (check,) = [r for r in instructions("RUN") if "TRITON_IMAGE" in r]
    python = "{}.{}".format(*sys.version_info[:2])  # python3 of BIN, first on PATH below
    digest = "@sha256:" + "0" * 64  # a made-up digest: only the shell check runs
    cases = {
        "nvcr.io/nvidia/tritonserver:25.07-py3": (0, True),
        "nvcr.io/nvidia/tritonserver:25.07-py3" + digest: (0, False),
        "registry.example:5000/mirror/tritonserver:25.07-py3" + digest: (0, False),
        "nvcr.io/nvidia/tritonserver:24.10-py3" + digest: (1, False),
        "nvcr.io/nvidia/tritonserver:25.07-py3-sdk" + digest: (1, False),
        "nvcr.io/nvidia/tritonserver" + digest: (1, False),
    }
    for image, (code, warns) in cases.items():
        env = {
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            "TRITON_IMAGE": image,
            "TRITON_VERSION": "25.07",
            "PYTHON_VERSION": python,
        }
        done = subprocess.run(
            ["bash", "-o", "pipefail", "-c", check], env=env, capture_output=True, text=True
        )
        assert done.returncode == code, (image, done.stderr)
        assert ("not pinned by digest" in done.stderr) == warns, (image, done.stderr)
    docs = (ROOT / "docs" / "deployment.md").read_text()
    assert "--build-arg TRITON_IMAGE=" in docs and "imagetools inspect" in docs
    assert "crane digest" in docs


def test_dockerignore_sends_what_the_image_copies_and_nothing_heavy():
    from docker.utils.build import exclude_paths

    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    sent = exclude_paths(str(ROOT), patterns, dockerfile="docker/Dockerfile")
    for rest in instructions("COPY"):
        for source in rest.split()[:-1]:
            if source.startswith("--"):
                continue
            assert source in sent, f"COPY {source}: excluded by .dockerignore"
    for heavy in (".venv", ".git", "tests", "scripts", "tools"):
        assert not any(p == heavy or p.startswith(heavy + "/") for p in sent), heavy
    assert not any("__pycache__" in p or p.endswith(".pyc") for p in sent)


# What the development tools (tools/, qwen3_aligner_tools) hold; none of it may ship in the image.
TOOLING_NAMES = {
    "bench",
    "soak.py",
    "checkpoint_builder.py",
    "checkpoint_training.py",
    "asr_checkpoint_builder.py",
    "simulated_device.py",
    "tiny-trained.json",
}


def test_the_images_copied_paths_hold_no_tooling():
    """Every file a COPY takes from the build context is product: nothing of tools/, nothing
    named like the tools' modules, no product module importing them or the bench's psutil."""
    copied = []
    for rest in instructions("COPY"):
        for source in [w for w in rest.split() if not w.startswith("--")][:-1]:
            path = ROOT / source
            assert path.exists(), f"COPY {source}: not in the repository"
            files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
            copied += [
                f for f in files if "__pycache__" not in f.parts and ".egg-info" not in str(f)
            ]
    shipped = {f.relative_to(ROOT) for f in copied}
    assert Path("src/qwen3_aligner_triton/core.py") in shipped  # the walk sees the product
    for rel in shipped:
        assert rel.parts[0] != "tools", f"{rel}: tooling copied into the image"
        assert not TOOLING_NAMES & set(rel.parts), f"{rel}: tooling copied into the image"
        if rel.suffix == ".py":
            text = (ROOT / rel).read_text()
            assert not re.search(r"^\s*(from|import) qwen3_aligner_tools\b", text, re.M), rel
            assert not re.search(r"^\s*import psutil\b", text, re.M), rel
    assert "psutil" not in " ".join(pyproject()["project"]["dependencies"])


def test_image_runs_as_a_numeric_non_root_user():
    users = instructions("USER")
    assert users, "no USER: the server would run as root"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) > 0 and gid.isdigit() and int(gid) > 0
    pod = k8s("Deployment")["spec"]["template"]["spec"]["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] == int(uid) and pod["runAsGroup"] == int(gid)


def test_entrypoint_and_default_arguments():
    assert exec_form("ENTRYPOINT") == [
        "/opt/nvidia/nvidia_entrypoint.sh",
        "python3",
        "-m",
        "qwen3_aligner_triton.entrypoint",
    ]
    cmd = exec_form("CMD")
    assert {
        "--strict-readiness=true",
        "--exit-on-error=true",
        "--disable-auto-complete-config",
    } <= set(cmd)
    assert int(flag_value(cmd, "--exit-timeout-secs")) > 0
    ports = (
        int(flag_value(cmd, "--http-port")),
        int(flag_value(cmd, "--grpc-port")),
        int(flag_value(cmd, "--metrics-port")),
    )
    assert ports == (HTTP_PORT, GRPC_PORT, METRICS_PORT)
    (expose,) = instructions("EXPOSE")
    assert [int(p) for p in expose.split()] == [*ports, OPENAI_PORT]
    env = image_env()
    assert env["ALIGNER_REPOSITORY_TEMPLATE"] == "/opt/qwen3-aligner/model_repository"
    assert any(
        c.split() == ["model_repository", "${APP_HOME}/model_repository"]
        for c in instructions("COPY")
    )
    assert env["HF_HOME"] and env["ALIGNER_BAKED_CHECKPOINT"].startswith("/opt/qwen3-aligner/")


def container_command(environ: dict[str, str], gpu_count: int) -> list[str]:
    """The tritonserver command line the entrypoint runs in the image, for its default CMD."""
    plan = entrypoint.plan_container(environ, gpu_count)
    opts = entrypoint.server_options(plan, exec_form("CMD"))
    return build_command(TritonInstallation(Path("tritonserver"), None, "PATH"), opts)


def test_every_server_flag_is_one_tritonserver_accepts():
    check_server_flags(exec_form("CMD"), "Dockerfile CMD")
    check_server_flags(aligner_container()["args"], "Deployment args")
    for gpus in (0, 1):
        cmd = container_command({}, gpus)
        check_server_flags(cmd[1:], f"entrypoint's command ({gpus} GPU)")
    with pytest.raises(AssertionError, match="no flag --no-such-flag"):
        check_server_flags(["--no-such-flag=1"], "self-check")
    with pytest.raises(AssertionError, match="expected true or false"):
        check_server_flags(["--strict-readiness=yes"], "self-check")


# ---------------------------------------------------------------------------------------------
# Compose


def test_compose_file_is_valid_for_the_compose_binary(tmp_path):
    services = compose_config()["services"]
    assert set(services) == {"aligner", "prometheus", "grafana"}
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE.read_text().replace("shm_size:", "shm_sise:"))
    out = subprocess.run(
        [tool("docker-compose"), "-f", str(broken), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0 and "shm_sise" in out.stderr


def test_compose_aligner_service():
    config = compose_config()
    svc = config["services"]["aligner"]
    assert Path(svc["build"]["context"]) == ROOT
    assert (ROOT / svc["build"]["dockerfile"]).resolve() == DOCKERFILE
    assert int(svc["shm_size"]) >= 512 * 2**20, "the Python backend needs a large /dev/shm"
    (gpu,) = svc["deploy"]["resources"]["reservations"]["devices"]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]
    published = {(p["target"], int(p["published"])) for p in svc["ports"]}
    assert published == {(p, p) for p in (HTTP_PORT, GRPC_PORT, METRICS_PORT, OPENAI_PORT)}
    assert svc["environment"]["OPENAI_PORT"] == str(OPENAI_PORT)
    # Unauthenticated ports: on loopback unless the operator says otherwise.
    assert {p.get("host_ip") for p in svc["ports"]} == {"127.0.0.1"}
    assert set(svc["environment"]) >= {"MODEL_PATH", "DEVICE", "MAX_CONCURRENT"}
    assert svc["environment"]["MODEL_PATH"] == "", "empty: the baked checkpoint or the default"
    (cache_volume,) = [v for v in svc["volumes"] if v["type"] == "volume"]
    assert cache_volume["target"] == image_env()["HF_HOME"]
    assert cache_volume["source"] in config["volumes"]
    health = svc["healthcheck"]
    assert health["test"][0] == "CMD"
    assert probe_urls()["compose healthcheck"] == (HTTP_PORT, "/v2/health/ready")
    assert go_seconds(health["start_period"]) >= MIN_STARTUP_BUDGET
    drain = int(flag_value(exec_form("CMD"), "--exit-timeout-secs"))
    assert go_seconds(svc["stop_grace_period"]) > drain
    assert svc.get("init") is True


def test_compose_publishes_on_loopback_and_grafana_asks_for_a_sign_in():
    services = compose_config()["services"]
    for name, service in services.items():
        for port in service.get("ports", []):
            assert port.get("host_ip") == "127.0.0.1", (name, port)
    grafana = services["grafana"]["environment"]
    assert grafana["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert "GF_AUTH_ANONYMOUS_ORG_ROLE" not in grafana
    env = {**os.environ, "ALIGNER_PUBLISH_ADDRESS": "0.0.0.0"}
    out = subprocess.run(
        [tool("docker-compose"), "-f", str(COMPOSE), "config", "--format", "json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    ports = json.loads(out.stdout)["services"]["aligner"]["ports"]
    opened = {p["target"] for p in ports if p.get("host_ip") == "0.0.0.0"}
    assert opened == {HTTP_PORT, GRPC_PORT, OPENAI_PORT}, "metrics stay on loopback"


def test_compose_passes_the_operators_settings_through():
    env = {**os.environ, "MODEL_PATH": "/models/aligner", "DEVICE": "cuda:0", "MAX_CONCURRENT": "3"}
    out = subprocess.run(
        [tool("docker-compose"), "-f", str(COMPOSE), "config", "--format", "json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    environment = json.loads(out.stdout)["services"]["aligner"]["environment"]
    assert environment["MODEL_PATH"] == "/models/aligner"
    assert environment["DEVICE"] == "cuda:0"
    assert environment["MAX_CONCURRENT"] == "3"


def compose_json(path: Path, **variables: str) -> dict:
    """``docker-compose config`` of ``path`` (relative paths from docker/, as for compose.yaml)
    with ``variables`` set."""
    compose = [tool("docker-compose"), "-f", str(path), "--project-directory", str(DOCKER)]
    out = subprocess.run(
        [*compose, "config", "--format", "json"],
        capture_output=True,
        text=True,
        env={**os.environ, **variables},
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_compose_runs_the_openai_front_and_its_port_reaches_the_entrypoint():
    svc = compose_config()["services"]["aligner"]
    plan = entrypoint.plan_container(svc["environment"], 1)
    assert plan.openai_port == OPENAI_PORT and plan.openai_key_file is None
    assert OPENAI_PORT in {p["target"] for p in svc["ports"]}
    (expose,) = instructions("EXPOSE")
    assert str(plan.openai_port) in expose.split()
    # Triton's readiness stays the container's health; the front's follows it.
    assert probe_urls()["compose healthcheck"] == (HTTP_PORT, "/v2/health/ready")
    # An empty OPENAI_PORT turns the front off; another value reaches the entrypoint as given.
    off = compose_json(COMPOSE, OPENAI_PORT="")["services"]["aligner"]["environment"]
    assert entrypoint.plan_container(off, 1).openai_port is None
    other = compose_json(COMPOSE, OPENAI_PORT="9100")["services"]["aligner"]["environment"]
    assert entrypoint.plan_container(other, 1).openai_port == 9100


def test_compose_key_file_variant_mounts_the_secret_where_the_entrypoint_reads_it(tmp_path):
    """The commented-out key lines of compose.yaml, turned on, are valid Compose and point
    OPENAI_API_KEY_FILE at the mounted secret."""
    text = COMPOSE.read_text()
    for item in ("OPENAI_API_KEY_FILE: /run/secrets/openai-api-key", "secrets: [openai-api-key]"):
        text = uncomment(text, item)
    text = uncomment(text, "secrets:")
    variant = tmp_path / "compose.yaml"
    variant.write_text(text)
    config = compose_json(variant)
    svc = config["services"]["aligner"]
    (secret,) = svc["secrets"]
    key_file = svc["environment"]["OPENAI_API_KEY_FILE"]
    assert key_file == secret.get("target", f"/run/secrets/{secret['source']}")
    assert Path(config["secrets"][secret["source"]]["file"]).parent == DOCKER
    assert svc["environment"]["OPENAI_PORT"] == str(OPENAI_PORT), "a key needs the front's port"


def test_compose_monitoring_profile_scrapes_the_metrics_port():
    services = compose_config()["services"]
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["monitoring"]
        assert not services[name]["image"].endswith(":latest") and ":" in services[name]["image"]
        for volume in services[name]["volumes"]:
            if volume["type"] == "bind":
                assert Path(volume["source"]).is_file(), volume["source"]
    prometheus = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    (job,) = prometheus["scrape_configs"]
    (static,) = job["static_configs"]
    assert static["targets"] == [f"aligner:{METRICS_PORT}"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    provider = yaml.safe_load((DOCKER / "grafana" / "dashboards.yaml").read_text())
    (dashboards_dir,) = [p["options"]["path"] for p in provider["providers"]]
    mounted = [v["target"] for v in services["grafana"]["volumes"]]
    assert f"{dashboards_dir}/qwen3-aligner.json" in mounted


# ---------------------------------------------------------------------------------------------
# Kubernetes


@pytest.mark.parametrize("version", K8S_VERSIONS, ids=lambda v: v or "latest")
def test_manifests_pass_the_kubernetes_schemas(version):
    import kubernetes_validate
    from kubernetes_validate.utils import latest_version

    objects = k8s_objects()
    assert {o["kind"] for o in objects} == {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
    }
    for obj in objects:
        kubernetes_validate.validate(obj, version or latest_version(), strict=True)


def test_schema_validation_rejects_a_misspelt_field():
    import kubernetes_validate
    from kubernetes_validate.utils import latest_version

    deployment = json.loads(json.dumps(k8s("Deployment")))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, latest_version(), strict=True)


def test_deployment_and_compose_use_the_pinned_image():
    image = aligner_container()["image"]
    name, _, tag = image.rpartition(":")
    assert name.endswith("qwen3-aligner-triton") and tag == pyproject()["project"]["version"]
    assert image == compose_config()["services"]["aligner"]["image"]


def test_deployment_probes_ports_and_arguments_match_the_server():
    container = aligner_container()
    args = container["args"]
    assert args == exec_form("CMD"), "Deployment args and the image's CMD differ"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {
        "http": HTTP_PORT,
        "grpc": GRPC_PORT,
        "metrics": METRICS_PORT,
        "openai": OPENAI_PORT,
    }
    assert int(flag_value(args, "--http-port")) == ports["http"]
    assert int(flag_value(args, "--grpc-port")) == ports["grpc"]
    assert int(flag_value(args, "--metrics-port")) == ports["metrics"]
    urls = probe_urls()
    assert urls["k8s startupProbe"] == (HTTP_PORT, "/v2/health/ready")
    assert urls["k8s readinessProbe"] == (HTTP_PORT, "/v2/health/ready")
    assert urls["k8s livenessProbe"] == (HTTP_PORT, "/v2/health/live")
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= MIN_STARTUP_BUDGET


def test_deployment_runs_the_openai_front_and_its_port_reaches_the_entrypoint():
    container = aligner_container()
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    plan = entrypoint.plan_container(env, 1)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert plan.openai_port == ports["openai"] == OPENAI_PORT
    service_ports = {p["name"]: p["targetPort"] for p in k8s("Service")["spec"]["ports"]}
    assert service_ports["openai"] == "openai"
    # Readiness stays Triton's (the front's /health/ready is ready exactly when it is); the
    # variant that probes the front names its port.
    assert probe_urls()["k8s readinessProbe"] == (HTTP_PORT, "/v2/health/ready")
    assert "httpGet: {path: /health/ready, port: openai}" in (K8S / "deployment.yaml").read_text()


@pytest.mark.parametrize("version", K8S_VERSIONS, ids=lambda v: v or "latest")
def test_deployment_key_file_variant_mounts_the_secret_where_the_entrypoint_reads_it(version):
    """The commented-out key lines of deployment.yaml, turned on, pass the schemas and point
    OPENAI_API_KEY_FILE into the mounted Secret."""
    import kubernetes_validate
    from kubernetes_validate.utils import latest_version

    text = (K8S / "deployment.yaml").read_text()
    for item in ("- name: OPENAI_API_KEY_FILE", "- name: openai-api-key"):
        text = uncomment(text, item)
    (deployment,) = [d for d in yaml.safe_load_all(text) if d]
    kubernetes_validate.validate(deployment, version or latest_version(), strict=True)
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    key_file = Path(env["OPENAI_API_KEY_FILE"])
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "openai-api-key"]
    assert key_file.parent == Path(mount["mountPath"]) and mount["readOnly"] is True
    (volume,) = [v for v in pod["volumes"] if v["name"] == "openai-api-key"]
    assert volume["secret"]["defaultMode"] & 0o040, "readable by the pod's group (fsGroup)"
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"]
    assert f"--from-file={key_file.name}=" in text
    assert volume["secret"]["secretName"] in text.split("kubectl create secret generic ")[1]


def test_liveness_checks_outlast_one_watchdog_restart():
    """A dead backend stub costs a stop (RESTART_KILL_SECONDS), a backoff of at most
    RESTART_BACKOFF_MAX_SECONDS and a model load (the tiny model loads in seconds; the real one on
    a GPU within a minute): kubelet and Docker must not kill the container meanwhile."""
    from qwen3_aligner_triton.tritonserver import RESTART_BACKOFF_MAX_SECONDS, RESTART_KILL_SECONDS

    one_restart = 10 + RESTART_KILL_SECONDS + RESTART_BACKOFF_MAX_SECONDS + 120  # notice, load
    liveness = aligner_container()["livenessProbe"]
    assert liveness["periodSeconds"] * liveness["failureThreshold"] >= one_restart
    compose = compose_config()["services"]["aligner"]["healthcheck"]
    seconds = int(str(compose["interval"]).rstrip("s"))
    assert seconds * int(compose["retries"]) >= one_restart
    (healthcheck,) = instructions("HEALTHCHECK")
    interval = int(re.search(r"--interval=(\d+)s", healthcheck).group(1))
    retries = int(re.search(r"--retries=(\d+)", healthcheck).group(1))
    assert interval * retries >= one_restart


def test_deployment_drains_gpus_shm_and_cache():
    pod = k8s("Deployment")["spec"]["template"]["spec"]
    container = aligner_container()
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    drain = int(flag_value(container["args"], "--exit-timeout-secs"))
    assert pod["terminationGracePeriodSeconds"] >= int(pre_stop[1]) + drain + 5
    resources = container["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"] >= 1
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    shm = volumes[mounts["/dev/shm"]]["emptyDir"]
    assert shm["medium"] == "Memory"
    hf_home = image_env()["HF_HOME"]
    assert {"name": "HF_HOME", "value": hf_home} in container["env"]
    assert hf_home in mounts
    cache = volumes[mounts[hf_home]]
    assert "emptyDir" in cache or "persistentVolumeClaim" in cache
    assert "/tmp" in mounts, "the entrypoint renders the repository under /tmp"
    assert image_env()["ALIGNER_REPOSITORY_DIR"].startswith("/tmp/")
    names = {e["name"] for e in container["env"]}
    assert {"MODEL_PATH", "DEVICE", "MAX_CONCURRENT"} <= names
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_pod_is_hardened():
    pod = k8s("Deployment")["spec"]["template"]["spec"]
    container = aligner_container()
    assert pod["automountServiceAccountToken"] is False
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    limits, requests = container["resources"]["limits"], container["resources"]["requests"]
    assert "cpu" in limits and "memory" in limits

    def cores(value: str) -> float:
        return float(value[:-1]) / 1000 if value.endswith("m") else float(value)

    assert cores(limits["cpu"]) >= cores(requests["cpu"])
    # A read-only root: every place the server writes is a volume.
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    env = image_env()
    for path in ("/tmp", "/dev/shm", env["HF_HOME"], env["HOME"]):
        assert path in mounts, f"{path} is not writable with readOnlyRootFilesystem"
    assert env["NUMBA_CACHE_DIR"].startswith("/tmp/")


def test_network_policy_admits_clients_and_metrics_only_on_their_ports():
    policy = k8s("NetworkPolicy")
    pod_labels = k8s("Deployment")["spec"]["template"]["metadata"]["labels"]
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
    ports = {p["name"]: p["containerPort"] for p in aligner_container()["ports"]}
    admitted = [{p["port"] for p in rule["ports"]} for rule in spec["ingress"]]
    assert all(rule <= set(ports) for rule in admitted), "ports named as in the pod"
    assert set().union(*admitted) == set(ports)
    assert {"metrics"} in admitted, "metrics get a rule (and a source) of their own"
    egress = {(p["port"], p["protocol"]) for rule in spec["egress"] for p in rule["ports"]}
    assert egress == {(53, "UDP"), (53, "TCP"), (443, "TCP")}


def test_service_hpa_pdb_and_servicemonitor_select_the_deployment():
    deployment = k8s("Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = k8s("Service")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert {(p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == {
        ("http", HTTP_PORT, "http"),
        ("grpc", GRPC_PORT, "grpc"),
        ("metrics", METRICS_PORT, "metrics"),
        ("openai", OPENAI_PORT, "openai"),
    }
    pdb = k8s("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    hpa = k8s("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    (monitor,) = load_yaml_docs(K8S / "servicemonitor.yaml")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selected = monitor["spec"]["selector"]["matchLabels"]
    assert selected.items() <= service["metadata"]["labels"].items()
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]


def test_hpa_scales_on_the_adapters_queue_time_per_request():
    (metric,) = k8s("HorizontalPodAutoscaler")["spec"]["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["target"]["type"] == "AverageValue"
    assert float(metric["pods"]["target"]["averageValue"]) > 0
    rule = adapter_rule()
    assert metric["pods"]["metric"]["name"] == rule["name"]["as"]
    assert rule["resources"]["overrides"] == {
        "namespace": {"resource": "namespace"},
        "pod": {"resource": "pod"},
    }
    assert metric_names(rule["seriesQuery"]) == {"nv_inference_queue_duration_us"}
    assert re.fullmatch(rule["name"]["matches"], "nv_inference_queue_duration_us")

    import promql_parser

    query = promql(render_adapter_query(rule["metricsQuery"]))
    assert isinstance(query, promql_parser.BinaryExpr) and str(query.op) == "/"
    assert rate_selectors(query.lhs) == {"nv_inference_queue_duration_us"}
    assert rate_selectors(query.rhs) == {"nv_inference_request_success"}
    for side in (query.lhs, query.rhs):
        assert "by (namespace, pod)" in side.prettify().replace("\n", " ")


# ---------------------------------------------------------------------------------------------
# Grafana


def test_dashboard_is_well_formed():
    dash = dashboard()
    assert dash["uid"] and dash["title"] and isinstance(dash["schemaVersion"], int)
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dash["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert ref_ids and len(ref_ids) == len(set(ref_ids))
        for target in panel["targets"]:
            promql(target["expr"])  # raises on a syntax error


def test_dashboard_shows_the_triton_and_model_metrics():
    used = set().union(*(metric_names(q) for q in dashboard_queries()))
    for name in TRITON_METRICS + CUSTOM_COUNTERS:
        assert name in used, f"the dashboard does not show {name}"
    for name in CUSTOM_HISTOGRAMS:
        assert f"{name}_bucket" in used, f"the dashboard does not show {name}"
    stage_queries = [q for q in dashboard_queries() if "qwen3_aligner_stage_seconds" in q]
    assert any("stage" in q.split("by", 1)[-1] for q in stage_queries)


def test_promql_checks_reject_broken_queries():
    with pytest.raises(ValueError):
        promql("sum(rate(nv_inference_queue_duration_us[1m])")
    assert metric_names("a / on() b{x='1'}") == {"a", "b"}


# ---------------------------------------------------------------------------------------------
# The entrypoint (no server)


def make_checkpoint_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    return path


def test_plan_container_resolves_the_services_variables(tmp_path):
    plan = entrypoint.plan_container(
        {"MODEL_PATH": "/models/x", "DEVICE": "cpu", "MAX_CONCURRENT": "3"}, gpu_count=2
    )
    assert plan.checkpoint == "/models/x"
    assert (plan.placement.kind, plan.placement.count) == ("KIND_CPU", 3)
    assert plan.template == SOURCE_REPOSITORY
    assert plan.repository == entrypoint.DEFAULT_RENDERED
    plan = entrypoint.plan_container({"DEVICE": "cuda:1"}, gpu_count=2)
    assert plan.placement.gpus == (1,) and plan.checkpoint == DEFAULT_CHECKPOINT
    assert entrypoint.plan_container({}, gpu_count=1).placement.kind == "KIND_GPU"
    assert entrypoint.plan_container({}, gpu_count=0).placement.kind == "KIND_CPU"
    rendered = entrypoint.plan_container({entrypoint.RENDERED_ENV: str(tmp_path)}, gpu_count=0)
    assert rendered.repository == tmp_path


def test_plan_container_prefers_model_path_then_the_baked_checkpoint(tmp_path):
    baked = make_checkpoint_dir(tmp_path / "baked")
    env = {entrypoint.BAKED_CHECKPOINT_ENV: str(baked)}
    assert entrypoint.plan_container(env, 0).checkpoint == str(baked)
    assert entrypoint.plan_container({**env, CHECKPOINT_ENV: " "}, 0).checkpoint == str(baked)
    assert entrypoint.plan_container({**env, CHECKPOINT_ENV: "org/m"}, 0).checkpoint == "org/m"
    empty = tmp_path / "not-baked"
    empty.mkdir()
    env = {entrypoint.BAKED_CHECKPOINT_ENV: str(empty)}
    assert entrypoint.plan_container(env, 0).checkpoint == DEFAULT_CHECKPOINT


@pytest.mark.parametrize(
    ("env", "gpus", "message"),
    [
        ({"MAX_CONCURRENT": "two"}, 1, "MAX_CONCURRENT must be an integer"),
        ({"MAX_CONCURRENT": "0"}, 1, ">= 1"),
        ({"DEVICE": "cuda"}, 0, "no CUDA GPU"),
        ({"DEVICE": "cuda:2"}, 2, "only 2 GPU"),
        ({"DEVICE": "tpu"}, 1, "unknown device"),
        ({entrypoint.TEMPLATE_ENV: "/nonexistent"}, 1, "holds no qwen3_aligner_core/config.pbtxt"),
    ],
)
def test_plan_container_rejects_bad_settings(env, gpus, message):
    with pytest.raises(ValueError, match=message):
        entrypoint.plan_container(env, gpus)


def test_plan_container_reads_the_openai_fronts_port_and_key_file(tmp_path):
    key = tmp_path / "api-key"
    key.write_text("sk-test\n")
    plan = entrypoint.plan_container(
        {"OPENAI_PORT": " 9000 ", "OPENAI_API_KEY_FILE": f" {key} "}, gpu_count=0
    )
    assert (plan.openai_port, plan.openai_key_file) == (9000, key)
    assert entrypoint.plan_container({"OPENAI_PORT": "65535"}, 0).openai_port == 65535
    for unset in ({}, {"OPENAI_PORT": ""}, {"OPENAI_PORT": "  "}):
        plan = entrypoint.plan_container(unset, gpu_count=0)
        assert (plan.openai_port, plan.openai_key_file) == (None, None)


@pytest.mark.parametrize("port", ["0", "65536", "-1", "9000.0", "0x2328", "nine", "\uff19\uff10"])
def test_plan_container_rejects_a_bad_openai_port(port):
    with pytest.raises(ValueError, match=f"OPENAI_PORT={re.escape(repr(port))}: give a port"):
        entrypoint.plan_container({"OPENAI_PORT": port}, 0)


def test_plan_container_rejects_a_key_file_without_a_port_or_a_file(tmp_path):
    key = tmp_path / "api-key"
    key.write_text("sk-test")
    with pytest.raises(ValueError, match="OPENAI_API_KEY_FILE is set but OPENAI_PORT is not"):
        entrypoint.plan_container({"OPENAI_API_KEY_FILE": str(key)}, 0)
    with pytest.raises(ValueError, match="OPENAI_API_KEY_FILE is set but OPENAI_PORT is not"):
        entrypoint.plan_container({"OPENAI_API_KEY_FILE": str(key), "OPENAI_PORT": " "}, 0)
    missing = tmp_path / "missing"
    with pytest.raises(ValueError, match=f"OPENAI_API_KEY_FILE={missing}: no such file"):
        entrypoint.plan_container({"OPENAI_PORT": "9000", "OPENAI_API_KEY_FILE": str(missing)}, 0)
    with pytest.raises(ValueError, match="no such file"):  # a folder is not a key file
        entrypoint.plan_container({"OPENAI_PORT": "9000", "OPENAI_API_KEY_FILE": str(tmp_path)}, 0)


def test_server_options_take_the_ports_from_the_arguments_and_pass_them_all_on(tmp_path):
    plan = entrypoint.plan_container(
        {"DEVICE": "cpu", entrypoint.RENDERED_ENV: str(tmp_path)}, gpu_count=0
    )
    args = ["--http-port=9000", "--grpc-port=9001", "--metrics-port=9002", "--log-verbose=1"]
    opts = entrypoint.server_options(plan, args)
    assert (opts.http_port, opts.grpc_port, opts.metrics_port) == (9000, 9001, 9002)
    assert opts.model_repository == tmp_path and opts.gpu is False and opts.watchdog is True
    assert opts.extra_args == tuple(args)
    defaults = entrypoint.server_options(plan, [])
    assert (defaults.http_port, defaults.grpc_port, defaults.metrics_port) == (8000, 8001, 8002)
    gpu_plan = entrypoint.plan_container({entrypoint.RENDERED_ENV: str(tmp_path)}, gpu_count=1)
    assert entrypoint.server_options(gpu_plan, []).gpu is True


def test_server_options_refuse_what_the_entrypoint_sets_itself(tmp_path):
    plan = entrypoint.plan_container({"DEVICE": "cpu"}, gpu_count=0)
    owned = ("--model-repository=/x", "--model-store=/x", "--model-control-mode=none")
    for arg in (*owned, "--load-model=other"):
        with pytest.raises(ValueError, match="the entrypoint sets"):
            entrypoint.server_options(plan, [arg])
    for arg in ("--http-port", "--grpc-port=80a"):
        with pytest.raises(ValueError, match="give the port as"):
            entrypoint.server_options(plan, [arg])


def test_the_containers_command_keeps_the_images_arguments_last():
    cmd = container_command({"DEVICE": "cpu"}, 0)
    cmd_args = exec_form("CMD")
    assert cmd[-len(cmd_args) :] == cmd_args, "the image's CMD must override the launcher"
    assert cmd[1] == f"--model-repository={entrypoint.DEFAULT_RENDERED}"
    # Every model of the repository loads at start (model control "none"); the admin groups are
    # closed on both protocols by a header no request can carry.
    assert not any(a.startswith(("--model-control-mode", "--load-model")) for a in cmd)
    for flag in ("--http-restricted-api", "--grpc-restricted-protocol"):
        (value,) = [a for a in cmd if a.startswith(flag + "=")]
        assert value == f"{flag}={','.join(CLOSED_APIS)}:{CLOSED_HEADER}=none"
    assert not any(a.startswith("--backend-directory") for a in cmd), "the image's default"


class FakeServer:
    """Stands in for a started tritonserver that exits with ``code``."""

    def __init__(self, code: int) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", f"raise SystemExit({code})"])

    def wait(self, timeout: float | None = None) -> int | None:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> int:
        return self.process.wait()


def test_main_renders_the_repository_and_runs_the_server(tmp_path, monkeypatch, capsys):
    started = []

    def fake_start(opts, install, env=None, echo=None):
        started.append((opts, install, env))
        return FakeServer(0)

    monkeypatch.setattr(entrypoint, "start", fake_start)
    monkeypatch.setattr(entrypoint, "cuda_device_count", lambda: 0)
    repo = tmp_path / "rendered"
    environ = {
        "MODEL_PATH": "/models/ckpt",
        "DEVICE": "auto",
        "MAX_CONCURRENT": "2",
        entrypoint.RENDERED_ENV: str(repo),
        "PATH": "/usr/bin",
    }
    assert entrypoint.main(["--http-port=8100"], environ) == 0
    ((opts, install, env),) = started
    assert install == locate()
    assert opts.model_repository == repo and opts.http_port == 8100 and not opts.gpu
    assert env == environ
    core = load_config(repo / CORE_MODEL_NAME / "config.pbtxt")
    (group,) = core.instance_group
    assert (group.count, group.kind) == (2, 2)  # MAX_CONCURRENT forwards; 2 = KIND_CPU
    front = load_config(repo / MODEL / "config.pbtxt")
    (group,) = front.instance_group
    assert (group.count, group.kind) == (default_front_instances(), 2)
    for config in (core, front):
        assert config.parameters["checkpoint"].string_value == "/models/ckpt"
    assert (repo / MODEL / "1" / "model.py").is_file()
    assert (repo / CORE_MODEL_NAME / "1" / "model.py").is_file()
    out = capsys.readouterr().out
    assert "serving /models/ckpt: forward on CPU x2" in out and "exited with status 0" in out


@pytest.mark.parametrize(("code", "status"), [(0, 0), (1, 1), (-9, 1)])
def test_main_exits_with_the_servers_status(monkeypatch, tmp_path, code, status):
    monkeypatch.setattr(entrypoint, "start", lambda *a, **k: FakeServer(code))
    monkeypatch.setattr(entrypoint, "fetch_for_launch", lambda who, checkpoint, rev: checkpoint)
    monkeypatch.setattr(entrypoint, "cuda_device_count", lambda: 0)
    if code < 0:
        server = FakeServer(0)
        server.process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        server.process.kill()
        monkeypatch.setattr(entrypoint, "start", lambda *a, **k: server)
    environ = {"DEVICE": "cpu", entrypoint.RENDERED_ENV: str(tmp_path)}
    assert entrypoint.main([], environ) == status


def test_main_reports_a_bad_setting_without_starting_anything(monkeypatch, capsys):
    monkeypatch.setattr(entrypoint, "cuda_device_count", lambda: 0)
    monkeypatch.setattr(entrypoint, "start", lambda *a, **k: pytest.fail("started anyway"))
    assert entrypoint.main([], {"MAX_CONCURRENT": "many"}) == 2
    assert "entrypoint: error: MAX_CONCURRENT must be an integer" in capsys.readouterr().err
    assert entrypoint.main(["--model-store=/m"], {"DEVICE": "cpu"}) == 2
    assert "the entrypoint sets --model-store itself" in capsys.readouterr().err


class FakeFront:
    """Stands in for FrontProcess: exits by itself (status ``code``) at its ``exits_at``-th poll,
    never if None."""

    def __init__(self, opts, exits_at=None, code=0):
        self.opts = opts
        self.exits_at = exits_at
        self.code = code
        self.polls = 0
        self.stops = 0
        self.exited_early = False

    def exited(self):
        self.polls += 1
        return self.code if self.exits_at is not None and self.polls >= self.exits_at else None

    def stop(self):
        self.stops += 1
        return self.code

    def describe(self, host):
        return f"OpenAI-style front: http://{host}:{self.opts.port}/v1"


class StoppableServer(FakeServer):
    """A started tritonserver that runs until asked to stop, then exits 0."""

    def __init__(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        self.stop_requests = 0

    def request_stop(self) -> None:
        self.stop_requests += 1
        self.process.terminate()

    def stop(self) -> int:
        self.process.kill()
        self.process.wait()
        return 0


@pytest.fixture
def front_starts(monkeypatch):
    """FrontProcess.start in the entrypoint replaced: records (options, env) and returns a
    FakeFront (``front_starts.exits_at`` / ``.code`` set how it behaves)."""

    class Starts(list):
        def __init__(self) -> None:
            super().__init__()
            self.exits_at: int | None = None
            self.code = 0
            self.fronts: list[FakeFront] = []

    starts = Starts()

    def fake_start(opts, env=None, extra=()):
        starts.append((opts, env))
        front = FakeFront(opts, starts.exits_at, starts.code)
        starts.fronts.append(front)
        return front

    monkeypatch.setattr(entrypoint.FrontProcess, "start", staticmethod(fake_start))
    monkeypatch.setattr(entrypoint, "fetch_for_launch", lambda who, checkpoint, rev: checkpoint)
    monkeypatch.setattr(entrypoint, "cuda_device_count", lambda: 0)
    return starts


def test_main_starts_the_openai_front_beside_the_server(tmp_path, monkeypatch, front_starts):
    from qwen3_aligner_triton.openai_front.launch import FrontOptions

    monkeypatch.setattr(entrypoint, "start", lambda *a, **k: FakeServer(0))
    key = tmp_path / "api-key"
    key.write_text("sk-test")
    environ = {
        "DEVICE": "cpu",
        "MODEL_PATH": "/models/ckpt",
        entrypoint.RENDERED_ENV: str(tmp_path / "rendered"),
        "OPENAI_PORT": "9000",
        "OPENAI_API_KEY_FILE": str(key),
        "ALIGNER_OPENAI_API_KEY": "from-the-environment",
    }
    assert entrypoint.main(["--grpc-port=8101"], environ) == 0
    ((opts, env),) = front_starts
    # The front talks to this container's tritonserver over gRPC, on the port CMD gives it.
    assert opts == FrontOptions(
        port=9000, triton_url="127.0.0.1:8101", host="0.0.0.0", api_key_file=key, model_names=()
    )
    assert env == environ, "the front gets the container's environment (its key variable too)"
    (front,) = front_starts.fronts
    assert front.stops == 1 and not front.exited_early
    # A hub id checkpoint is a model id /v1/models lists too.
    environ = {**environ, "MODEL_PATH": "Qwen/Qwen3-ForcedAligner-0.6B"}
    del environ["OPENAI_API_KEY_FILE"]
    assert entrypoint.main([], environ) == 0
    opts, _ = front_starts[1]
    assert opts.model_names == ("Qwen/Qwen3-ForcedAligner-0.6B",)
    assert (opts.triton_url, opts.api_key_file) == ("127.0.0.1:8001", None)


def test_main_without_openai_port_starts_no_front(tmp_path, monkeypatch, front_starts):
    monkeypatch.setattr(entrypoint, "start", lambda *a, **k: FakeServer(0))
    environ = {"DEVICE": "cpu", entrypoint.RENDERED_ENV: str(tmp_path), "OPENAI_PORT": ""}
    assert entrypoint.main([], environ) == 0
    assert front_starts == []


@pytest.mark.parametrize(("front_code", "status"), [(3, 3), (0, 1)])
def test_main_stops_the_server_when_the_front_exits(
    tmp_path, monkeypatch, capsys, front_starts, front_code, status
):
    """A front that exits by itself takes the container down (its supervisor restarts both),
    with the front's status, non-zero even when the front's was 0."""
    server = StoppableServer()
    monkeypatch.setattr(entrypoint, "start", lambda *a, **k: server)
    front_starts.exits_at, front_starts.code = 2, front_code
    environ = {"DEVICE": "cpu", entrypoint.RENDERED_ENV: str(tmp_path), "OPENAI_PORT": "9000"}
    assert entrypoint.main([], environ) == status
    assert server.stop_requests == 1 and server.process.poll() is not None
    (front,) = front_starts.fronts
    assert front.exited_early and front.stops == 1
    out = capsys.readouterr()
    assert f"the OpenAI-style front exited with status {front_code}" in out.err
    assert f"entrypoint: the OpenAI-style front exited with status {status}" in out.out
    assert "tritonserver exited" not in out.out


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"OPENAI_PORT": "http"}, "OPENAI_PORT='http': give a port number"),
        ({"OPENAI_API_KEY_FILE": "/run/secrets/key"}, "OPENAI_API_KEY_FILE is set but OPENAI_PORT"),
        (
            {"OPENAI_PORT": "9000", "OPENAI_API_KEY_FILE": "/nonexistent/key"},
            "OPENAI_API_KEY_FILE=/nonexistent/key: no such file",
        ),
    ],
)
def test_main_refuses_a_bad_front_setting_before_starting_anything(
    monkeypatch, capsys, front_starts, environ, message
):
    monkeypatch.setattr(entrypoint, "start", lambda *a, **k: pytest.fail("started anyway"))
    assert entrypoint.main([], {"DEVICE": "cpu", **environ}) == 2
    assert f"entrypoint: error: {message}" in capsys.readouterr().err
    assert front_starts == []


# ---------------------------------------------------------------------------------------------
# Against a real tritonserver


def http_get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.mark.integration
def test_every_probe_path_answers_200_on_the_servers_http_port(server):
    urls = probe_urls()
    assert len(urls) == 5
    for where, (port, path) in urls.items():
        assert port == HTTP_PORT, f"{where} probes port {port}, the server's HTTP port is 8000"
        assert http_get(f"http://{server.http_url}{path}") == 200, f"{where}: GET {path}"
    assert http_get(f"http://{server.http_url}/v2/health/nonexistent") != 200


@pytest.mark.integration
def test_local_server_is_older_than_the_image_and_closes_what_the_fixes_cover(server):
    with urllib.request.urlopen(f"http://{server.http_url}/v2", timeout=10) as resp:
        version = json.loads(resp.read())["version"]
    assert triton_release_of(version) == "24.10"
    assert triton_release_of(version) < FIRST_FIXED_RELEASE <= build_args()["TRITON_VERSION"]
    assert http_get(f"http://{server.http_url}/v2/systemsharedmemory/status") == 403


def send_requests(url: str, count: int) -> None:
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    rate = 16000
    t = np.arange(rate, dtype=np.float32) / rate
    audio = (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    with httpclient.InferenceServerClient(url) as client:
        with pytest.raises(InferenceServerException, match="LANGUAGE"):
            client.infer(MODEL, build_inputs(httpclient, audio, rate, "hello", "klingon"))
        for _ in range(count):
            client.infer(MODEL, build_inputs(httpclient, audio, rate, "hello world", "en"))


# Triton counters that must rise with traffic (others, such as failures, may stay at zero).
RISING_WITH_TRAFFIC = {
    "nv_inference_compute_infer_duration_us",
    "nv_inference_count",
    "nv_inference_exec_count",
    "nv_inference_queue_duration_us",
    "nv_inference_request_success",
}


@pytest.mark.integration
def test_metrics_used_by_the_hpa_adapter_and_dashboard_are_exported(server):
    before = scrape(server.metrics_url)
    send_requests(server.http_url, 2)  # one rejection too: reason-labelled counters appear then
    time.sleep(0.5)  # Triton records a request's statistics just after its response
    samples = scrape(server.metrics_url)
    used = set().union(*(metric_names(q) for q in dashboard_queries()))
    used |= metric_names(render_adapter_query(adapter_rule()["metricsQuery"]))
    used |= metric_names(adapter_rule()["seriesQuery"])
    triton = {n for n in used if n.startswith("nv_")} - GPU_ONLY_METRICS
    missing = sorted(n for n in triton if n not in samples)
    assert not missing, f"not on Triton's metrics endpoint: {missing}"
    for name in triton:
        if name.startswith("nv_inference_"):
            assert any(
                labels.get("model") == MODEL and "version" in labels for labels, _ in samples[name]
            ), name
    rising = {n for n in triton if n in RISING_WITH_TRAFFIC}
    assert rising == RISING_WITH_TRAFFIC & used, "the list above names counters the rule uses"
    for name in rising:
        assert model_total(samples, name) > model_total(before, name), name
    assert (
        model_total(samples, "nv_inference_request_success")
        - model_total(before, "nv_inference_request_success")
        == 3
    )
    custom = {n for n in used if n.startswith("qwen3_aligner_")}
    families = set(CUSTOM_COUNTERS) | {
        f"{h}_{part}" for h in CUSTOM_HISTOGRAMS for part in ("bucket", "sum", "count")
    }
    assert custom <= families, f"unknown model metrics in use: {sorted(custom - families)}"
    assert used <= set(TRITON_METRICS) | families | set(samples) | GPU_ONLY_METRICS
    missing = sorted(n for n in custom if n not in samples)
    assert not missing, f"the model does not export {missing}"
    for name in custom:
        models = {labels.get("model") for labels, _ in samples[name]}
        assert models <= {MODEL, CORE_MODEL_NAME}, (name, models)
    reasons = [labels.get("reason") for labels, _ in samples[CUSTOM_COUNTERS[2]]]
    assert reasons and all(reasons), "rejected requests carry a reason label"
    stages = {labels.get("stage") for labels, _ in samples["qwen3_aligner_stage_seconds_count"]}
    assert stages == {"preprocess", "device_queue", "forward", "postprocess", "transcribe"}
    for name in ("qwen3_aligner_units_total", "qwen3_aligner_audio_seconds_total"):
        assert model_total(samples, name) > model_total(before, name), name


@pytest.mark.integration
def test_the_hpa_metric_is_computable_from_the_servers_counters(server):
    before = scrape(server.metrics_url)
    send_requests(server.http_url, 3)

    def delta(name: str) -> float:
        return model_total(after, name) - model_total(before, name)

    # Per-request errors count as successes in Triton: 3 alignments + 1 rejection. Triton
    # records a request's statistics as it releases the request, just after the response.
    started = time.monotonic()
    while True:
        after = scrape(server.metrics_url)
        if delta("nv_inference_request_success") >= 4 or time.monotonic() - started > 10:
            break
        time.sleep(0.1)
    assert delta("nv_inference_request_success") == 4
    queue_us = delta("nv_inference_queue_duration_us")
    per_request = queue_us / max(delta("nv_inference_request_success"), 0.001)
    assert math.isfinite(per_request) and 0 <= per_request < 60e6


def child_tritonserver(parent: int) -> int:
    """PID of the tritonserver process started by ``parent``."""
    found = children_named(parent, b"tritonserver")
    if not found:
        raise AssertionError(f"no tritonserver child of {parent}")
    return found[0]


def loopback_arguments(http: int, grpc: int, metrics: int) -> list[str]:
    """tritonserver's ports and addresses for an entrypoint run on loopback."""
    return [
        f"--http-port={http}",
        f"--grpc-port={grpc}",
        f"--metrics-port={metrics}",
        "--http-address=127.0.0.1",
        "--grpc-address=127.0.0.1",
        "--metrics-address=127.0.0.1",
    ]


def entrypoint_env(rendered: Path, checkpoint: Path | str, **settings: str) -> dict[str, str]:
    """The container's environment for its entrypoint run outside a container: this process's
    without ``ALIGNER_`` settings, ``MODEL_PATH``, ``DEVICE=cpu``, the rendered repository's
    folder and ``settings``."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("ALIGNER_")},
        "MODEL_PATH": str(checkpoint),
        "DEVICE": "cpu",
        entrypoint.RENDERED_ENV: str(rendered),
        **settings,
    }


def start_entrypoint(args: list[str], env: dict[str, str], out) -> subprocess.Popen:
    """``python -m qwen3_aligner_triton.entrypoint ARGS`` in a session of its own, its output
    (standard error too) to ``out`` (a file, or ``subprocess.PIPE`` for text)."""
    return subprocess.Popen(
        [sys.executable, "-m", "qwen3_aligner_triton.entrypoint", *args],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        text=out is subprocess.PIPE,
        start_new_session=True,
    )


def wait_for_line(log: Path, text: str, process: subprocess.Popen, timeout: float) -> None:
    started = time.monotonic()
    while text not in log.read_text():
        assert process.poll() is None, f"exited with {process.returncode}:\n{log.read_text()}"
        assert time.monotonic() - started < timeout, f"no {text!r} in:\n{log.read_text()}"
        time.sleep(0.25)


@pytest.mark.integration
def test_entrypoint_runs_a_real_server_with_the_images_arguments(tmp_path, tiny_checkpoint):
    """The container's start-up path outside a container: the image's arguments, the admin API
    closed, the watchdog restarting the server after a stub dies, and a graceful stop on SIGTERM."""
    http, grpc, metrics = free_ports(3)
    ports = {"--http-port": http, "--grpc-port": grpc, "--metrics-port": metrics}
    args = [
        f"{a.split('=')[0]}={ports[a.split('=')[0]]}" if a.split("=")[0] in ports else a
        for a in exec_form("CMD")
    ]
    args += ["--http-address=127.0.0.1", "--grpc-address=127.0.0.1", "--metrics-address=127.0.0.1"]
    env = entrypoint_env(tmp_path / "rendered", tiny_checkpoint, MAX_CONCURRENT="2")
    before = shm_regions()
    log = tmp_path / "server.log"
    with log.open("w") as out:
        process = start_entrypoint(args, env, out)
    try:
        started = time.monotonic()
        while not http_ready("127.0.0.1", http):
            if process.poll() is not None:
                raise ServerError(f"exited with {process.returncode}:\n{log.read_text()}")
            assert time.monotonic() - started < SERVER_READY_TIMEOUT, log.read_text()
            time.sleep(0.5)
        base = f"http://127.0.0.1:{http}"
        for path in ("/v2/health/ready", "/v2/health/live", f"/v2/models/{MODEL}/ready"):
            assert http_get(base + path) == 200, path
        # The admin groups are closed in the container too; the rendered files tell the config.
        assert http_get(f"{base}/v2/models/{MODEL}/config") == 403
        assert http_get(f"{base}/v2/systemsharedmemory/status") == 403
        config = load_config(tmp_path / "rendered" / CORE_MODEL_NAME / "config.pbtxt")
        assert config.instance_group[0].count == 2  # MAX_CONCURRENT: forward instances
        assert config.parameters["checkpoint"].string_value == str(tiny_checkpoint)
        assert http_get(f"http://127.0.0.1:{metrics}/metrics") == 200
        send_requests(f"127.0.0.1:{http}", 1)
        # A backend stub dies (the kernel's OOM killer picks the biggest process): the watchdog
        # restarts tritonserver and the container goes on serving.
        time.sleep(3 * WATCHDOG_INTERVAL_SECONDS)  # the watchdog notes the stubs once ready
        first = child_tritonserver(process.pid)
        stubs = backend_stub_pids(first)
        assert len(stubs) == 2 + default_front_instances(), stubs
        os.kill(min(stubs), signal.SIGKILL)
        wait_for_line(log, "watchdog: tritonserver restarted", process, SERVER_READY_TIMEOUT)
        started = time.monotonic()
        while not http_ready("127.0.0.1", http):
            assert process.poll() is None, log.read_text()
            assert time.monotonic() - started < SERVER_READY_TIMEOUT, log.read_text()
            time.sleep(0.5)
        assert child_tritonserver(process.pid) != first
        send_requests(f"127.0.0.1:{http}", 1)
        # SIGTERM (docker stop, pod deletion) reaches tritonserver, which drains and exits.
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=int(flag_value(args, "--exit-timeout-secs")) + 30)
        output = log.read_text()
        assert process.returncode == 0, output
        assert "Waiting for in-flight requests" in output
        assert "entrypoint: tritonserver exited with status 0" in output
        for name in (MODEL, CORE_MODEL_NAME):
            rendered = load_config(tmp_path / "rendered" / name / "config.pbtxt")
            assert text_format.MessageToString(rendered).count("KIND_CPU") == 1
    finally:
        if process.poll() is None:
            try:  # the server runs in a session of its own: a failed test must stop it too
                server_pid: int | None = child_tritonserver(process.pid)
            except AssertionError:
                server_pid = None
            process.kill()
            process.wait()
            if server_pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(server_pid, signal.SIGKILL)
        for region in shm_regions() - before:
            Path(region).unlink(missing_ok=True)


PROMETHEUS_SCRAPE = "1s"
PROMETHEUS_WINDOW = "10s"  # what $__rate_interval becomes: several scrapes


def prometheus_query(port: int, expr: str) -> list[dict]:
    query = urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/query?{query}", timeout=10) as r:
        body = json.loads(r.read())
    assert body["status"] == "success", body
    return body["data"]["result"]


@pytest.mark.integration
def test_prometheus_evaluates_the_adapter_rule_and_every_dashboard_query(server, tmp_path):
    """A real Prometheus scrapes the server; the HPA's metric and each panel come out as numbers.

    Needs the `prometheus` binary (Debian package `prometheus`; no PyPI package ships it):
    scripts/setup-prometheus installs it when missing, and the test fails if it cannot.
    """
    if shutil.which("prometheus") is None or shutil.which("promtool") is None:
        done = subprocess.run(
            [str(ROOT / "scripts" / "setup-prometheus")],
            capture_output=True,
            text=True,
            timeout=900,
        )
        if done.returncode != 0:
            pytest.fail(f"scripts/setup-prometheus failed:\n{done.stdout}\n{done.stderr}")
    binary, promtool = shutil.which("prometheus"), shutil.which("promtool")
    assert binary and promtool, "scripts/setup-prometheus left no prometheus/promtool on PATH"
    checked = subprocess.run(
        [promtool, "check", "config", str(DOCKER / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    (port,) = free_ports(1)
    metrics = urlsplit(server.metrics_url)
    config = {
        "global": {"scrape_interval": PROMETHEUS_SCRAPE, "evaluation_interval": PROMETHEUS_SCRAPE},
        "scrape_configs": [
            {
                "job_name": "qwen3-aligner",
                "static_configs": [
                    {
                        "targets": [metrics.netloc],
                        # What Kubernetes service discovery adds to each pod's series.
                        "labels": {"namespace": "default", "pod": "qwen3-aligner-0"},
                    }
                ],
            }
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        started = time.monotonic()
        while not http_ready("127.0.0.1", port, "/-/ready"):
            assert process.poll() is None, "prometheus exited"
            assert time.monotonic() - started < 60, "prometheus was not ready in time"
            time.sleep(0.25)
        while not prometheus_query(port, 'up{job="qwen3-aligner"} == 1'):
            assert time.monotonic() - started < 60, "prometheus did not scrape the server"
            time.sleep(0.25)
        # Traffic over several scrapes, until Prometheus has seen it in the rate window.
        # (The model creates a reason's counter at its first rejection: it must rise after that.)
        counters = (
            "nv_inference_request_success",
            "qwen3_aligner_stage_seconds_count",
            "qwen3_aligner_rejected_requests_total",
        )
        for _ in range(30):
            send_requests(server.http_url, 2)
            time.sleep(1)
            if all(
                prometheus_query(port, f"sum(increase({name}[{PROMETHEUS_WINDOW}])) > 0")
                for name in counters
            ):
                break
        else:
            pytest.fail("prometheus never saw the traffic")

        rule = adapter_rule()
        (series,) = prometheus_query(port, rule["seriesQuery"])
        assert series["metric"]["__name__"] == "nv_inference_queue_duration_us"
        (hpa_metric,) = prometheus_query(port, render_adapter_query(rule["metricsQuery"]))
        assert hpa_metric["metric"] == {"namespace": "default", "pod": "qwen3-aligner-0"}
        value = float(hpa_metric["value"][1])
        assert math.isfinite(value) and value >= 0, hpa_metric

        for expr in dashboard_queries():
            if metric_names(expr) <= GPU_ONLY_METRICS:
                continue
            result = prometheus_query(port, expr.replace("$__rate_interval", PROMETHEUS_WINDOW))
            values = [float(r["value"][1]) for r in result]
            assert any(math.isfinite(v) for v in values), f"no data for panel query {expr}"
    finally:
        process.terminate()
        process.wait(timeout=30)
