"""The /dev/shm plan: what the regions take together, the limit that fits, the shipped sizes."""

from __future__ import annotations

import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from qwen3_aligner_triton.params import FrontSettings
from qwen3_aligner_triton.repository import MAX_FRONT_INSTANCES
from qwen3_aligner_triton.shared_memory import (
    CLIPS_IN_FLIGHT,
    MIN_CORE_BYTES_IN_FLIGHT,
    MIN_FIT_SECONDS,
    STUB_SLACK_BYTES,
    MiB,
    SharedMemoryPlan,
    core_bytes_in_flight,
    front_instances,
    largest_clip_bytes,
    needed_bytes,
    plan,
    request_bytes,
    shm_size,
)

ROOT = Path(__file__).resolve().parents[2]
DEFAULTS = FrontSettings()


def test_a_request_at_its_largest_counts_every_input():
    settings = FrontSettings(
        max_audio_samples=1000, max_audio_file_bytes=3000, max_text_chars=10, max_segments_bytes=7
    )
    assert request_bytes(settings) == 4 * 1000 + 4 * 10 + 7
    assert request_bytes(settings, audio_samples=0, file_bytes=0) == 4 * 10 + 7


def test_a_request_carries_audio_or_an_audio_file_so_the_larger_counts():
    settings = FrontSettings(
        max_audio_samples=1000, max_audio_file_bytes=5000, max_text_chars=10, max_segments_bytes=7
    )
    assert request_bytes(settings) == 5000 + 4 * 10 + 7
    assert request_bytes(settings, audio_samples=2000) == 4 * 2000 + 4 * 10 + 7
    assert request_bytes(settings, audio_samples=0) == 5000 + 4 * 10 + 7


def test_clips_in_flight_hold_at_least_two_whole_windows():
    settings = FrontSettings(window_seconds=300.0, max_forward_tokens=65536)
    assert largest_clip_bytes(settings) == 4 * 300 * 16000 + 8 * 65536
    assert core_bytes_in_flight(settings) == CLIPS_IN_FLIGHT * largest_clip_bytes(settings)
    assert core_bytes_in_flight(FrontSettings(window_seconds=10.0)) == MIN_CORE_BYTES_IN_FLIGHT


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


# Small limits whose sums come out in whole MiB: the in-flight clips are at their floor
# (2 windows of 10 s are 1.8 MB < 32 MiB), TEXT is 2**18 characters (1 MiB), SEGMENTS 1 MiB. So
# each front region takes 1 + 1 + 32 MiB besides its audio, the core 32 MiB per front, and every
# stub 16 MiB: 2 fronts need 2 * (audio + 34 + 32 + 16) + 16 = 2 * audio + 180 MiB.
SMALL = FrontSettings(
    window_seconds=10.0,
    max_audio_samples=115_200_000,  # 120 min at 16 kHz: 460_800_000 bytes of float32
    max_audio_file_bytes=64 * MiB,
    max_text_chars=2**18,
    max_segments_bytes=MiB,
)
SMALL_FIXED = 180 * MiB  # 2 fronts, no audio
SMALL_NEEDED = 2 * 460_800_000 + SMALL_FIXED  # 1_110_343_680 bytes: 1058.9 MiB


def test_the_small_limits_take_what_the_formula_says():
    assert needed_bytes(SMALL, 2, audio_samples=0, file_bytes=0) == SMALL_FIXED
    assert needed_bytes(SMALL, 2) == SMALL_NEEDED == 1_110_343_680


def test_a_plan_that_fits_keeps_every_configured_value():
    expected = SharedMemoryPlan(
        available=SMALL_NEEDED,
        front_instances=2,
        configured_samples=115_200_000,
        max_audio_samples=115_200_000,
        needed=SMALL_NEEDED,
        configured_file_bytes=64 * MiB,
        max_audio_file_bytes=64 * MiB,
    )
    assert plan(SMALL, 2, SMALL_NEEDED) == expected
    assert plan(SMALL, 2, None) == replace(expected, available=None)


def test_a_limit_under_the_minimum_is_kept_when_it_fits_exactly():
    """1 s of audio per request is less than MIN_FIT_SECONDS, but the load fails only when the
    configured limit does not fit: exactly enough /dev/shm keeps it."""
    short = replace(SMALL, max_audio_samples=16_000, max_audio_file_bytes=0)
    needed = 2 * 64_000 + SMALL_FIXED
    assert plan(short, 2, needed).max_audio_samples == 16_000
    assert not plan(short, 2, needed).lowered
    with pytest.raises(ValueError, match=r"^/dev/shm holds 180 MiB; 2 front instances need "):
        plan(short, 2, needed - 1)


def test_a_lowered_plan_names_both_limits_in_its_log_line():
    available = SMALL_FIXED + 2 * 19_200_000  # 227_143_680 bytes: 5 min of float32 per front
    lowered = plan(SMALL, 2, available)
    assert lowered == SharedMemoryPlan(
        available=227_143_680,
        front_instances=2,
        configured_samples=115_200_000,
        max_audio_samples=4_800_000,
        needed=SMALL_NEEDED,
        configured_file_bytes=64 * MiB,
        max_audio_file_bytes=19_200_000,
    )
    assert lowered.describe() == (
        "max_audio_samples lowered from 115200000 to 4800000 (120 to 5 min at 16 kHz) and "
        "max_audio_file_bytes lowered from 67108864 to 19200000: /dev/shm holds 216 MiB and 2 "
        "front instances need 1058 MiB for the configured limits; give the container that much "
        "(docker --shm-size, a Kubernetes memory emptyDir's sizeLimit) or fewer front instances "
        "to keep them"
    )


def test_the_log_line_rounds_to_whole_minutes_at_16_khz():
    lowered = plan(SMALL, 2, SMALL_FIXED + 2 * 230_400_000)  # 60 min of float32 per front
    assert (lowered.max_audio_samples, lowered.max_audio_file_bytes) == (57_600_000, 64 * MiB)
    assert lowered.describe() == (
        "max_audio_samples lowered from 115200000 to 57600000 (120 to 60 min at 16 kHz): "
        "/dev/shm holds 619 MiB and 2 front instances need 1058 MiB for the configured limits; "
        "give the container that much (docker --shm-size, a Kubernetes memory emptyDir's "
        "sizeLimit) or fewer front instances to keep them"
    )


def test_an_audio_file_limit_lowered_alone_is_the_only_one_named():
    two_minutes = replace(SMALL, max_audio_samples=1_920_000)  # 7_680_000 bytes < 32 MiB
    lowered = plan(two_minutes, 2, SMALL_FIXED + 2 * 32 * MiB)  # 244 MiB
    assert (lowered.max_audio_samples, lowered.max_audio_file_bytes) == (1_920_000, 32 * MiB)
    assert lowered.lowered
    assert lowered.describe() == (
        "max_audio_file_bytes lowered from 67108864 to 33554432: /dev/shm holds 244 MiB and 2 "
        "front instances need 308 MiB for the configured limits; give the container that much "
        "(docker --shm-size, a Kubernetes memory emptyDir's sizeLimit) or fewer front instances "
        "to keep them"
    )


def test_too_little_shared_memory_names_every_size_in_whole_mib():
    """60 s take 3_840_000 bytes per front: 2 * 3_840_000 + 180 MiB = 187.3 MiB."""
    available = SMALL_FIXED + 2 * 3_000_000  # 185.7 MiB: 750_000 samples, under a minute
    with pytest.raises(ValueError) as info:
        plan(SMALL, 2, available)
    assert str(info.value) == (
        "/dev/shm holds 185 MiB; 2 front instances need 187 MiB for requests of 60 s and 1058 "
        "MiB for the configured max_audio_samples (115200000): give the container more (docker "
        "--shm-size, a Kubernetes memory emptyDir's sizeLimit) or run fewer front instances"
    )


def test_the_fitted_limits_are_exact_whole_numbers_however_large():
    """Integer arithmetic throughout: 2**55 + 12 bytes of room hold exactly 2**53 + 3 samples,
    which a float cannot represent."""
    huge = replace(SMALL, max_audio_samples=2**60, max_audio_file_bytes=2**60)
    room = 2**55 + 12
    lowered = plan(huge, 1, needed_bytes(huge, 1, audio_samples=0, file_bytes=0) + room)
    assert lowered.max_audio_samples == 2**53 + 3
    assert lowered.max_audio_file_bytes == room


@pytest.mark.parametrize("fronts", [0, -1])
def test_a_plan_needs_at_least_one_front_instance(fronts):
    with pytest.raises(ValueError, match=r"^a server needs at least one front instance$"):
        plan(DEFAULTS, fronts, None)


def test_front_instances_add_up_the_instance_groups():
    assert front_instances({"instance_group": [{"count": 3, "kind": "KIND_CPU"}]}) == 3
    assert front_instances({"instance_group": [{"count": 2}, {"count": 1}]}) == 3
    assert front_instances({}) == 1


def test_a_group_without_a_count_or_with_count_0_starts_one_instance_as_triton_does():
    assert front_instances({"instance_group": [{"kind": "KIND_CPU"}]}) == 1
    assert front_instances({"instance_group": [{"count": 0}]}) == 1
    assert front_instances({"instance_group": [{"count": 0}, {"count": 2}]}) == 3


def test_shm_size_reads_the_file_system(tmp_path):
    assert shm_size(str(tmp_path)) > 0
    assert shm_size(str(tmp_path)) == shutil.disk_usage(tmp_path).total  # blocks * block size
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


# --- with the ASR model: one call per front instance in flight --------------------------------


def test_an_asr_call_holds_up_to_32_padded_chunks_of_the_recording():
    from qwen3_aligner_triton.shared_memory import asr_call_bytes

    asr = replace(DEFAULTS, asr=True, max_text_chars=0)
    assert asr_call_bytes(DEFAULTS) == 0  # no ASR model, no calls
    assert asr_call_bytes(asr, 16000 * 60) == 4 * 16000 * 60  # one chunk: the recording
    assert asr_call_bytes(asr, 16000 * 176) == 2 * 4 * 16000 * 176  # two rows, padded
    assert asr_call_bytes(asr, 16000 * 3600) == 21 * 4 * 16000 * 185
    assert asr_call_bytes(asr) == 32 * 4 * 16000 * 185  # 4 h: the call's 32 chunks


def test_with_the_asr_model_the_lowered_limit_fits_with_its_calls():
    asr = replace(DEFAULTS, asr=True)
    available = 3 * 2**30
    fitted = plan(asr, 4, available)
    assert fitted.lowered
    samples, file_bytes = fitted.max_audio_samples, fitted.max_audio_file_bytes
    assert needed_bytes(asr, 4, samples, file_bytes) <= available
    assert needed_bytes(asr, 4, samples + 1, min(file_bytes + 4, asr.max_audio_file_bytes)) > (
        available
    )
    assert needed_bytes(asr, 4) > needed_bytes(DEFAULTS, 4)
