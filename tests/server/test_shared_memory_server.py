"""A real server in a small /dev/shm: one maximal request, or a burst of them, leaves the next
requests served (tests/shm_scenario.py runs the server in a mount namespace of its own)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from qwen3_aligner_triton.params import FrontSettings
from qwen3_aligner_triton.shared_memory import MiB, needed_bytes, plan

ROOT = Path(__file__).resolve().parents[2]
SHM_MIB = 220  # too small for two front instances holding requests of 600 s (38.4 MB) at once


def private_shm_available() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = ["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /dev/shm"]
    return subprocess.run(probe, capture_output=True).returncode == 0


pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not private_shm_available(), reason="needs root and unshare -m (a private /dev/shm)"
    ),
]


def run_scenario(checkpoint: Path) -> dict:
    scenario = ROOT / "tests" / "shm_scenario.py"
    script = (
        f"mount -t tmpfs -o size={SHM_MIB}m tmpfs /dev/shm && "
        f'exec "{sys.executable}" "{scenario}" --checkpoint "{checkpoint}"'
    )
    done = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_maximal_requests_leave_the_next_ones_served(tiny_checkpoint):
    report = run_scenario(tiny_checkpoint)
    settings = FrontSettings(
        max_audio_samples=600 * 16000, max_text_chars=1000, max_segments_bytes=10000
    )
    expected = plan(settings, 2, SHM_MIB * MiB)
    # the front lowered the longest audio to what two instances can hold in this /dev/shm ...
    assert report["lowered"] and report["limit"] == expected.max_audio_samples
    # ... so maximal requests, one after another or all at once, are served, and so is the rest
    assert report["maximal"] == ["ok"] * 4
    assert report["burst"] == ["ok"] * 6, report["burst"]
    assert report["ordinary"] == ["ok"] * 8
    assert (
        report["over"].startswith("400: ") and f"the limit is {report['limit']}" in report["over"]
    )
    # and the regions stayed within the plan
    assert sum(report["regions"].values()) <= needed_bytes(settings, 2, report["limit"])
    assert report["exit"] == 0
