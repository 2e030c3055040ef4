"""The /dev/shm plan: what the regions take together, the limit that fits, the shipped sizes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from qwen3_aligner_triton.params import ModelSettings
from qwen3_aligner_triton.repository import MAX_FRONT_INSTANCES
from qwen3_aligner_triton.shared_memory import (
    CLIPS_IN_FLIGHT,
    MIN_CORE_BYTES_IN_FLIGHT,
    MIN_FIT_SECONDS,
    STUB_SLACK_BYTES,
    MiB,
    core_bytes_in_flight,
    front_instances,
    largest_clip_bytes,
    needed_bytes,
    plan,
    request_bytes,
    shm_size,
)

ROOT = Path(__file__).resolve().parents[1]
DEFAULTS = ModelSettings()


def test_a_request_at_its_largest_counts_every_input():
    settings = ModelSettings(
        max_audio_samples=1000, max_audio_file_bytes=3000, max_text_chars=10, max_segments_bytes=7
    )
    assert request_bytes(settings) == 4 * 1000 + 4 * 10 + 7
    assert request_bytes(settings, audio_samples=0, file_bytes=0) == 4 * 10 + 7


def test_a_request_carries_audio_or_an_audio_file_so_the_larger_counts():
    settings = ModelSettings(
        max_audio_samples=1000, max_audio_file_bytes=5000, max_text_chars=10, max_segments_bytes=7
    )
    assert request_bytes(settings) == 5000 + 4 * 10 + 7
    assert request_bytes(settings, audio_samples=2000) == 4 * 2000 + 4 * 10 + 7
    assert request_bytes(settings, audio_samples=0) == 5000 + 4 * 10 + 7


def test_clips_in_flight_hold_at_least_two_whole_windows():
    settings = ModelSettings(window_seconds=300.0, max_forward_tokens=65536)
    assert largest_clip_bytes(settings) == 4 * 300 * 16000 + 8 * 65536
    assert core_bytes_in_flight(settings) == CLIPS_IN_FLIGHT * largest_clip_bytes(settings)
    assert core_bytes_in_flight(ModelSettings(window_seconds=10.0)) == MIN_CORE_BYTES_IN_FLIGHT


def test_every_front_region_and_the_core_regions_are_counted():
    one, two = needed_bytes(DEFAULTS, 1), needed_bytes(DEFAULTS, 2)
    per_front = request_bytes(DEFAULTS) + 2 * core_bytes_in_flight(DEFAULTS) + STUB_SLACK_BYTES
    assert two - one == per_front
    assert one == per_front + STUB_SLACK_BYTES  # and the core's own slack


def test_a_limit_that_fits_is_kept():
    needed = needed_bytes(DEFAULTS, 4)
    kept = plan(DEFAULTS, 4, needed)
    assert not kept.lowered and kept.max_audio_samples == DEFAULTS.max_audio_samples
    assert plan(DEFAULTS, 4, None).max_audio_samples == DEFAULTS.max_audio_samples


@pytest.mark.parametrize(("fronts", "available_mib"), [(1, 600), (2, 1024), (4, 3000), (8, 1024)])
def test_a_limit_that_does_not_fit_is_lowered_to_the_largest_that_does(fronts, available_mib):
    available = available_mib * MiB
    lowered = plan(DEFAULTS, fronts, available)
    assert lowered.lowered
    samples, file_bytes = lowered.max_audio_samples, lowered.max_audio_file_bytes
    assert needed_bytes(DEFAULTS, fronts, samples, file_bytes) <= available
    assert needed_bytes(DEFAULTS, fronts, samples + 1, file_bytes) > available
    # AUDIO_FILE keeps its configured limit while it fits, else takes the room AUDIO has
    assert needed_bytes(DEFAULTS, fronts, 0, file_bytes) <= available
    if file_bytes < DEFAULTS.max_audio_file_bytes:
        assert needed_bytes(DEFAULTS, fronts, 0, file_bytes + 1) > available
    text = lowered.describe()
    assert f"to {samples}" in text and f"{available_mib} MiB" in text
    assert f"need {needed_bytes(DEFAULTS, fronts) // MiB} MiB" in text
    assert ("max_audio_file_bytes lowered" in text) == (file_bytes < DEFAULTS.max_audio_file_bytes)


def test_too_little_shared_memory_fails_the_load_naming_what_it_needs():
    minimum = int(MIN_FIT_SECONDS * 16000)
    least = needed_bytes(DEFAULTS, 8, minimum, file_bytes=4 * minimum)
    with pytest.raises(
        ValueError, match=rf"/dev/shm holds 64 MiB; 8 front instances need {least // MiB} MiB"
    ):
        plan(DEFAULTS, 8, 64 * MiB)
    assert plan(DEFAULTS, 8, least).max_audio_samples == int(MIN_FIT_SECONDS * 16000)


def test_front_instances_add_up_the_instance_groups():
    assert front_instances({"instance_group": [{"count": 3, "kind": "KIND_CPU"}]}) == 3
    assert front_instances({"instance_group": [{"count": 2}, {"count": 1}]}) == 3
    assert front_instances({}) == 1


def test_shm_size_reads_the_file_system(tmp_path):
    assert shm_size(str(tmp_path)) > 0
    assert shm_size(str(tmp_path / "missing")) is None


def _bytes(size: str) -> int:
    number, unit = re.fullmatch(r"(\d+)\s*([kmgKMG]i?[bB]?)", size.strip()).groups()
    return int(number) * {"k": 2**10, "m": 2**20, "g": 2**30}[unit[0].lower()]


def test_the_shipped_deployments_hold_maximal_requests_on_every_front():
    """Compose, Kubernetes and the documented docker run give /dev/shm what the most front
    instances the launcher starts need for the default limits (4 h per request)."""
    needed = needed_bytes(DEFAULTS, MAX_FRONT_INSTANCES)
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    assert _bytes(compose["services"]["aligner"]["shm_size"]) >= needed
    deployment = yaml.safe_load((ROOT / "docker" / "k8s" / "deployment.yaml").read_text())
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    (dshm,) = [v for v in volumes if v["name"] == "dshm"]
    assert dshm["emptyDir"]["medium"] == "Memory"
    assert _bytes(dshm["emptyDir"]["sizeLimit"]) >= needed
    docs = (ROOT / "docs" / "deployment.md").read_text()
    sizes = re.findall(r"--shm-size[ =](\d+[kmgKMG])", docs)
    assert sizes and all(_bytes(size) >= needed for size in sizes)
