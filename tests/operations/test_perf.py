"""perf_analyzer against a real server, and the benchmark scripts' parts that need no GPU.

The integration tests install perf_analyzer on first use (wheel + private Debian 13 runtime on
glibc < 2.38, see ``qwen3_aligner_tools.bench.perf_analyzer``) and fail, rather than skip, when
it cannot be installed or run: the load-testing path is part of what this project ships.
"""

from __future__ import annotations

import itertools
import json
import re
import time

import numpy as np
import pytest

from qwen3_aligner_tools.bench import gpu_check, perf, run, shape
from qwen3_aligner_tools.bench import perf_analyzer as pa
from qwen3_aligner_tools.bench.stats import PassResult, format_table, paired_ratio, percentile
from qwen3_aligner_tools.bench.workload import Clip, durations, make_clips

PERF_TIMEOUT = 300.0  # seconds for one short sweep against the tiny model


# --- perf_analyzer input data and output parsing --------------------------------------------


def test_input_data_writes_fp32_as_json_floats(tmp_path):
    audio = np.array([0.0, 1.0, -1.0, 1e-7, 0.25, 3.0e-5], dtype=np.float32)
    clip = Clip("edge", audio, "hello world", "English")
    path = pa.write_input_data([clip, *make_clips(1, 0.5, 0.5)], tmp_path / "input.json")
    raw = path.read_text(encoding="utf-8")
    first_audio = re.search(r'"AUDIO":\{"content":\[([^\]]*)\]', raw).group(1)
    tokens = first_audio.split(",")
    # perf_analyzer rejects integer tokens for FP32 ("unable to find float data").
    assert all(
        re.fullmatch(r"-?\d+(\.\d+)?(e-?\d+)?", t) and ("." in t or "e" in t) for t in tokens
    )
    entry = json.loads(raw)["data"][0]
    assert entry["AUDIO"]["shape"] == [6]
    assert entry["AUDIO"]["content"] == pytest.approx([0.0, 1.0, -1.0, 0.0, 0.25, 3e-5], abs=1e-6)
    assert entry["TEXT"] == {"content": ["hello world"], "shape": [1]}
    assert entry["LANGUAGE"] == {"content": ["English"], "shape": [1]}
    assert entry["SAMPLE_RATE"] == {"content": [16000], "shape": [1]}


def test_input_data_keeps_non_ascii_transcripts(tmp_path):
    clip = make_clips(2, 1.0, 1.0)[1]
    assert clip.language == "Chinese"
    path = pa.write_input_data([clip], tmp_path / "input.json")
    assert json.loads(path.read_text(encoding="utf-8"))["data"][0]["TEXT"]["content"] == [clip.text]


def _audio_files(folder, specs=(("wav", "PCM_16", 16000), ("flac", "PCM_16", 44100))):
    """Short speech-like files in ``folder``, one per (suffix, subtype, rate)."""
    import soundfile

    from qwen3_aligner_tools.bench.workload import speech_like_audio

    paths = []
    for k, (suffix, subtype, rate) in enumerate(specs):
        wave = speech_like_audio(2.0 + k, seed=k)
        if rate != 16000:  # the same voice at another rate (nearest sample: a test signal)
            wave = wave[(np.arange(int(wave.size * rate / 16000)) * 16000 // rate)]
        path = folder / f"clip{k}.{suffix}"
        soundfile.write(path, wave, rate, format=suffix.upper(), subtype=subtype)
        paths.append(path)
    return paths


def test_file_input_data_sends_each_file_length_prefixed_in_b64(tmp_path):
    import base64

    paths = _audio_files(tmp_path)
    (tmp_path / "clip1.txt").write_text("Her own words.\n", encoding="utf-8")
    (tmp_path / "notes.md").write_text("not audio", encoding="utf-8")
    clips = perf.file_clips([tmp_path], "English")
    assert [c.name for c in clips] == ["clip0.wav", "clip1.flac"]
    assert [c.seconds for c in clips] == [2.0, 3.0]
    assert clips[1].text == "Her own words."  # from STEM.txt
    assert len(clips[0].text.split()) == 5  # made up: 2.5 words per second
    document = json.loads(pa.write_input_data(clips, tmp_path / "in.json").read_text())
    for entry, path in zip(document["data"], paths, strict=True):
        assert set(entry) == {"AUDIO_FILE", "TEXT", "LANGUAGE"}  # no AUDIO, no SAMPLE_RATE
        raw = base64.b64decode(entry["AUDIO_FILE"]["b64"])
        data = path.read_bytes()
        assert raw[:4] == len(data).to_bytes(4, "little") and raw[4:] == data
        assert entry["LANGUAGE"] == {"content": ["English"], "shape": [1]}
    assert perf.file_clips([paths[0]], "Chinese")[0].text.endswith("。")
    with pytest.raises(ValueError, match="not a readable audio file"):
        perf.file_clips([tmp_path / "notes.md"], "English")
    with pytest.raises(ValueError, match="neither a file nor a folder"):
        perf.file_clips([tmp_path / "missing.wav"], "English")
    args = perf.parse_args(["--audio-files", str(tmp_path)])
    assert args.audio_files == [tmp_path] and args.window_requests is None  # 8 x the files, later


def test_find_errors_flags_failures_not_statistics():
    output = "\n".join(
        [
            "Request concurrency: 1",
            "  Client: ",
            "    Request count: 146",
            "    Avg latency: 20741 usec (standard deviation 5601 usec)",
            "  Server: ",
            "    Successful request count: 146",
            "Failed to obtain stable measurement within 10 measurement windows for concurrency 2.",
            "Thread [0] had error: [400] input LANGUAGE: unsupported language 'Klingon'",
        ]
    )
    assert pa.find_errors(output) == [
        "Failed to obtain stable measurement within 10 measurement windows for concurrency 2.",
        "Thread [0] had error: [400] input LANGUAGE: unsupported language 'Klingon'",
    ]


def test_perf_arguments_and_sdk_command(tmp_path):
    settings = pa.PerfSettings(
        url="127.0.0.1:8001",
        protocol="grpc",
        concurrency_range="1:8:2",
        measurement_mode="count_windows",
        measurement_request_count=32,
    )
    args = pa.perf_arguments(settings, tmp_path / "in.json", tmp_path / "out.csv")
    joined = " ".join(args)
    assert "-m qwen3_aligner -u 127.0.0.1:8001 -i grpc -b 1" in joined
    assert "--concurrency-range 1:8:2" in joined
    assert "--measurement-mode count_windows" in joined
    assert "--measurement-request-count 32" in joined
    sdk = pa.sdk_command(settings, tmp_path / "in.json")
    assert pa.SDK_IMAGE in sdk and "--input-data /data/in.json" in sdk


def test_summary_table_adds_audio_throughput():
    row = {
        "Concurrency": "2",
        "Inferences/Second": "4.0",
        "p50 latency": "250000",
        "p90 latency": "300000",
        "p99 latency": "400000",
        "Server Queue": "1000",
        "Server Compute Infer": "200000",
    }
    table = perf.summary_table([row], mean_clip_seconds=10.0)
    last = table.splitlines()[-1]
    assert [c.strip() for c in last.strip("|").split("|")] == [
        "2",
        "4.00",
        "250",
        "300",
        "400",
        "1.00",
        "200",
        "40.0",
    ]


def test_perf_cli_defaults_and_conflicts():
    args = perf.parse_args(["--clips", "5"])
    assert args.measurement_mode == "count_windows" and args.window_requests == 40
    assert args.url is None and args.protocol == "http"
    with pytest.raises(SystemExit):
        perf.parse_args(["--url", "x:1", "--start-server"])
    with pytest.raises(SystemExit):  # perf_analyzer takes --request-count with one level only
        perf.parse_args(["--total-requests", "10", "--concurrency-range", "1:4"])
    assert (
        perf.parse_args(["--total-requests", "10", "--concurrency-range", "4"]).total_requests == 10
    )
    assert perf.parse_args(["--", "--percentile", "95"]).extra == ["--percentile", "95"]


# --- benchmark plumbing ------------------------------------------------------------------------


def test_workload_is_mixed_and_sized_to_duration():
    assert sorted(durations(5, 2.0, 60.0)) == [2.0, 16.5, 31.0, 45.5, 60.0]
    clips = make_clips(4, 2.0, 60.0)
    assert {c.language for c in clips} == {"English", "Chinese"}
    for clip in clips:
        rate = 2.5 if clip.language == "English" else 4.0
        assert clip.units == pytest.approx(clip.seconds * rate, abs=1)
        assert float(np.abs(clip.audio).max()) < 1.0
    again = make_clips(4, 2.0, 60.0)
    assert all(
        np.array_equal(a.audio, b.audio) and a.text == b.text
        for a, b in zip(clips, again, strict=True)
    )


def test_stats_percentiles_and_paired_ratio():
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    assert percentile([1.0, 2.0, 3.0], 100) == 3.0
    fast = [PassResult("c", 1.0, 10.0), PassResult("c", 2.0, 10.0)]
    slow = [PassResult("a", 2.0, 10.0), PassResult("a", 2.0, 10.0)]
    assert paired_ratio(fast, slow) == pytest.approx(1.5)  # median of 2.0 and 1.0


def test_format_table_aligns_numbers_right():
    table = format_table(["mode", "x"], [["a", 1.5], ["long name", 123.0]])
    assert table.splitlines() == [
        "| mode      |    x |",
        "|-----------|-----:|",
        "| a         | 1.50 |",
        "| long name |  123 |",
    ]


def test_bench_defaults_depend_on_checkpoint():
    tiny = run.parse_args([])
    assert (tiny.clips, tiny.concurrency, tiny.rounds) == (16, [1, 4, 8, 16], 2)
    full = run.parse_args(["--checkpoint", "full"])
    assert (full.clips, full.max_seconds, full.concurrency) == (8, 20.0, [1, 8])
    assert full.budget_minutes == 10.0
    given = run.parse_args(["--url", "http://10.0.0.5:8000", "--concurrency", "2,6"])
    assert (given.url, given.grpc_url, given.concurrency) == (
        "10.0.0.5:8000",
        "10.0.0.5:8001",
        [2, 6],
    )
    with pytest.raises(SystemExit):
        run.parse_args(["--protocols", "smtp"])


# --- gpu_check without a GPU -----------------------------------------------------------------


def test_gpu_check_arguments():
    args = gpu_check.parse_args([])
    assert args.batch_sizes == [1, 8, 32, 64] and args.budget_seconds == 420.0
    assert gpu_check.parse_args(["--batch-sizes", "64,1,8,8"]).batch_sizes == [1, 8, 64]
    for bad in (["--batch-sizes", "0,8"], ["--batch-sizes", "x"], ["--repeats", "0"]):
        with pytest.raises(SystemExit):
            gpu_check.parse_args(bad)


def test_gpu_check_table_marks_missing_cells():
    report = gpu_check.GpuReport(
        command="./scripts/gpu_check",
        date="2026-01-01",
        gpu="test",
        torch="x",
        checkpoint="full",
        dtype="bfloat16",
        attn_implementation="auto",
        clip_seconds=30.0,
        batch_sizes=[1, 64],
        protocol="grpc",
    )
    report.cells = {
        "engine": {1: gpu_check.Cell(31.25, 2.5), 64: gpu_check.Cell(8.5, 20.0)},
        "upstream": {1: gpu_check.Cell(30.0, 2.25)},
    }
    lines = gpu_check.results_table(report).splitlines()
    assert lines[0].split("|")[1].strip() == "batch"
    cells_1 = [c.strip() for c in lines[2].strip("|").split("|")]
    cells_64 = [c.strip() for c in lines[3].strip("|").split("|")]
    assert cells_1 == ["1", "31.2", "30.0", "-", "2.50", "2.25", "-"]
    assert cells_64 == ["64", "8.50", "-", "-", "20.0", "-", "-"]


def test_gpu_check_fails_fast_without_cuda(capsys):
    if gpu_check.cuda_problem() is None:
        pytest.skip("this machine has CUDA; the check would run for real")
    started = time.monotonic()
    assert gpu_check.main([]) == 2
    assert time.monotonic() - started < 30
    err = capsys.readouterr().err
    assert "CUDA" in err and "TORCH_REQUIREMENT" in err


def test_gpu_check_paths_instances_and_parity_arguments():
    args = gpu_check.parse_args(["--paths", "server,engine", "--instances", "3"])
    assert args.paths == ["engine", "server"] and args.instances == 3
    assert gpu_check.parse_args(["--skip-server"]).paths == ["engine", "upstream"]
    assert gpu_check.parse_args(["--batch-sizes", "1,4"]).parity_clips == 4  # at most the batch
    for bad in (
        ["--paths", "engine,gpu"],
        ["--paths", ""],
        ["--instances", "0"],
        ["--parity-clips", "-1"],
        ["--paths", "server", "--skip-server"],
    ):
        with pytest.raises(SystemExit):
            gpu_check.parse_args(bad)


def test_gpu_check_parity_counts_equal_clips_and_the_largest_difference():
    reference = [
        [["a", 0.08, 0.16], ["b", 0.24, 0.4]],
        [["c", 1.0, 1.2]],
        [["d", 2.0, 2.4]],
    ]
    got = [
        [("a", 0.08, 0.16), ("b", 0.24, 0.40000001)],  # float32 rounding: equal
        [("c", 1.0, 1.28)],  # one bin later
        [("x", 2.0, 2.4)],  # another unit
    ]
    cmp = gpu_check.compare_units(reference, got)
    assert cmp == {"clips": 3, "equal": 1, "max_diff_ms": 80.0, "other_units": 1}
    report = gpu_check.GpuReport(
        "./scripts/gpu_check", "d", "g", "t", "full", "bfloat16", "auto", 30.0, [1], "grpc"
    )
    report.parity = {"server": cmp}
    assert gpu_check.parity_lines(report) == [
        "parity, server vs upstream alone: 1/3 clips equal, largest difference 80 ms, "
        "1 with other units"
    ]
    with pytest.raises(ValueError):  # a clip missing from the answer is not a pass
        gpu_check.compare_units(reference, got[:2])


def test_gpu_check_refuses_a_reference_of_another_setup(tmp_path):
    report = gpu_check.GpuReport(
        "./scripts/gpu_check", "d", "g", "t", "full", "bfloat16", "auto", 30.0, [1], "grpc"
    )
    path = tmp_path / "earlier.json"
    path.write_text(
        json.dumps(
            {"checkpoint": "full", "dtype": "float32", "clip_seconds": 30.0, "reference": []}
        )
    )
    with pytest.raises(SystemExit, match="float32"):
        gpu_check._load_reference(path, report)
    path.write_text(
        json.dumps(
            {"checkpoint": "full", "dtype": "bfloat16", "clip_seconds": 30.0, "reference": [[]]}
        )
    )
    gpu_check._load_reference(path, report)
    assert report.reference == [[]]


def test_gpu_check_splits_served_time_by_stage_from_two_scrapes():
    def scrape(requests, prep_s, core_queue_us, waited_s, forward_s, inputs_us=0):
        front = 'model="qwen3_aligner",'
        core = 'model="qwen3_aligner_core",'
        return "\n".join(
            [
                "# HELP nv_inference_request_success Number of successful inference requests",
                f'nv_inference_request_success{{{front}version="1"}} {requests}',
                f'nv_inference_request_success{{{core}version="1"}} {requests}',
                f'qwen3_aligner_stage_seconds_sum{{{front}stage="preprocess",version="1"}} '
                f"{prep_s}",
                f'qwen3_aligner_stage_seconds_sum{{{front}stage="postprocess",version="1"}} 0',
                f'nv_inference_queue_duration_us{{{front}version="1"}} 999999',
                f'nv_inference_queue_duration_us{{{core}version="1"}} {core_queue_us}',
                f'qwen3_aligner_stage_seconds_sum{{{core}stage="device_queue",version="1"}} '
                f"{waited_s}",
                f'qwen3_aligner_stage_seconds_sum{{{core}stage="forward",version="1"}} {forward_s}',
                f'nv_inference_request_duration_us{{{core}version="1"}} 123456789',  # not a stage
                f'nv_inference_compute_input_duration_us{{{core}version="1"}} {inputs_us}',
            ]
        )

    before = scrape(10, 0.5, 20_000, 0.1, 3.0)
    after = scrape(14, 0.516, 28_000, 0.104, 3.12, 4_400)  # 4 requests later
    split = gpu_check.served_split(before, after)
    assert split == pytest.approx(
        {
            "front preparation": 4.0,
            "front results": 0.0,
            "core queue": 2.0,
            "core device queue": 1.0,
            "core inputs": 1.1,
            "core outputs": 0.0,  # absent from both scrapes
            "core forward": 30.0,
        }
    )
    assert gpu_check.served_split(after, after) == {}  # no request in between
    report = gpu_check.GpuReport(
        "./scripts/gpu_check", "d", "g", "t", "full", "bfloat16", "auto", 30.0, [1], "grpc"
    )
    report.cells = {"server": {1: gpu_check.Cell(50.0)}}
    report.served_split = {1: split}
    (line,) = gpu_check.split_lines(report)
    assert "core forward 30.0" in line and "of the client's 50.0, 11.9 elsewhere" in line


def test_gpu_check_dry_run_on_the_cpu_runs_every_path_and_finds_parity(
    tiny_checkpoint, tmp_path, capsys
):
    """The whole script, server included, as it runs on a GPU machine (CPU placement here), so
    that it is ready the day a GPU is lent; then a server-only run against the first's reference.
    """
    first = tmp_path / "first.json"
    common = ["--device", "cpu", "--checkpoint", str(tiny_checkpoint), "--repeats", "1"]
    assert gpu_check.main([*common, "--batch-sizes", "1,3", "--json", str(first)]) == 0
    out = capsys.readouterr().out
    data = json.loads(first.read_text())
    assert data["dtype"] == "float32" and len(data["reference"]) == 3
    for path in ("engine", "upstream", "server"):
        assert all(data["cells"][path][n]["ms_per_clip"] > 0 for n in ("1", "3")), path
    assert set(data["parity"]) == {"engine", "upstream batch", "server"}
    assert all(c["equal"] == 3 and c["other_units"] == 0 for c in data["parity"].values())
    assert "parity, server vs upstream alone: 3/3 clips equal" in out
    assert set(data["breakdown"]) == {"1", "3"}
    for b in data["breakdown"].values():
        assert b["forward_ms"] > 0 and b["audio_encoder_ms"] > 0 and b["prepare_ms_per_clip"] > 0
    assert "of which the audio encoder" in out
    split = data["served_split"]["1"]
    assert split["core forward"] > 0 and split["core device queue"] >= 0
    assert split["core inputs"] > 0 and split["core outputs"] >= 0
    assert "served batch 1, mean ms per request: front preparation" in out

    second = tmp_path / "second.json"
    log = tmp_path / "server.log"
    argv = [*common, "--batch-sizes", "3", "--paths", "server", "--instances", "2"]
    argv += ["--reference", str(first), "--json", str(second), "--server-log", str(log)]
    assert gpu_check.main(argv) == 0
    data = json.loads(second.read_text())
    assert data["instances"] == 2 and set(data["cells"]) == {"server"}
    assert data["parity"]["server"]["equal"] == 3
    assert "qwen3_aligner_core_0_1" in log.read_text()  # the second core instance was there


# --- perf_analyzer against the session's real server -----------------------------------------


@pytest.fixture(scope="module")
def analyzer() -> pa.PerfAnalyzer:
    try:
        return pa.locate()
    except pa.PerfAnalyzerError as e:
        pytest.fail(f"perf_analyzer cannot be installed or run on this machine: {e}")


def _model_counts(url: str) -> tuple[int, int]:
    import tritonclient.http as httpclient

    with httpclient.InferenceServerClient(url) as client:
        stats = client.get_inference_statistics("qwen3_aligner")["model_stats"][0]
    inference = stats["inference_stats"]
    return int(inference["success"]["count"]), int(inference["fail"]["count"])


@pytest.mark.integration
def test_perf_analyzer_over_http(server, analyzer, tmp_path):
    clips = make_clips(4, 1.0, 6.0, seed=5)
    data = pa.write_input_data(clips, tmp_path / "input.json")
    # A fixed number of requests at one level: the run cannot fail on measurement stability
    # (which on a shared machine says nothing about the server), only on errors.
    settings = pa.PerfSettings(
        url=server.http_url, protocol="http", concurrency_range="2", request_count=32
    )
    ok_before, failed_before = _model_counts(server.http_url)
    result = pa.run(analyzer, settings, data, tmp_path / "perf.csv", timeout=PERF_TIMEOUT)
    assert result.ok, f"perf_analyzer failed (exit {result.returncode}):\n{result.output[-3000:]}"
    assert [int(r["Concurrency"]) for r in result.rows] == [2]
    assert float(result.rows[0]["Inferences/Second"]) > 0
    ok_after, failed_after = _model_counts(server.http_url)
    assert ok_after - ok_before >= 32
    assert failed_after == failed_before


@pytest.mark.integration
def test_scripts_perf_over_grpc(server, analyzer, tmp_path, capsys):
    code = perf.main(
        [
            "--url",
            server.grpc_url,
            "--protocol",
            "grpc",
            "--concurrency-range",
            "2",
            "--total-requests",
            "24",
            "--clips",
            "3",
            "--max-seconds",
            "5",
            "--csv",
            str(tmp_path / "perf.csv"),
        ]
    )
    captured = capsys.readouterr()
    out = captured.out
    assert code == 0, f"{out[-3000:]}\n{captured.err[-2000:]}"
    assert "| concurrency | infer/s |" in out
    assert "nvcr.io/nvidia/tritonserver:24.10-py3-sdk" in out
    assert (tmp_path / "perf.csv").read_text().startswith("Concurrency,Inferences/Second")


@pytest.mark.integration
def test_scripts_perf_sends_real_audio_files(server, analyzer, tmp_path, capsys):
    """--audio-files: perf_analyzer sends each file as AUDIO_FILE, and the server aligns every
    request (a BYTES element without its length prefix would be refused)."""
    specs = (("wav", "PCM_16", 16000), ("flac", "PCM_16", 44100), ("mp3", "MPEG_LAYER_III", 24000))
    folder = tmp_path / "audio"
    folder.mkdir()
    _audio_files(folder, specs)
    ok_before, failed_before = _model_counts(server.http_url)
    argv = ["--url", server.grpc_url, "--protocol", "grpc", "--concurrency-range", "2"]
    argv += ["--total-requests", "12", "--audio-files", str(folder)]
    code = perf.main(argv)
    captured = capsys.readouterr()
    assert code == 0, f"{captured.out[-3000:]}\n{captured.err[-2000:]}"
    assert "3 audio files sent as AUDIO_FILE" in captured.err
    ok_after, failed_after = _model_counts(server.http_url)
    assert ok_after - ok_before >= 12
    assert failed_after == failed_before


@pytest.mark.integration
def test_perf_analyzer_errors_fail_the_run(server, analyzer, tmp_path):
    clip = make_clips(1, 1.0, 1.0)[0]
    bad = Clip(clip.name, clip.audio, clip.text, "Klingon")  # rejected with INVALID_ARG
    data = pa.write_input_data([bad], tmp_path / "input.json")
    settings = pa.PerfSettings(url=server.http_url, concurrency_range="1", max_trials=3)
    result = pa.run(analyzer, settings, data, tmp_path / "perf.csv", timeout=PERF_TIMEOUT)
    assert not result.ok
    assert any("LANGUAGE" in line for line in result.errors), result.output[-2000:]


def test_gpu_check_judges_the_served_goals():
    report = gpu_check.GpuReport(
        command="./scripts/gpu_check",
        date="2026-01-01",
        gpu="test",
        torch="x",
        checkpoint="full",
        dtype="bfloat16",
        attn_implementation="auto",
        clip_seconds=30.0,
        batch_sizes=[1, 64],
        protocol="grpc",
    )
    assert gpu_check.goal_lines(report) == [
        "served throughput at batch 64: not measured",
        "served latency of one clip alone: not measured",
    ]
    report.cells = {"server": {1: gpu_check.Cell(31.0), 64: gpu_check.Cell(8.0)}}
    fast, slow = gpu_check.goal_lines(report)
    assert "125 clips/s" in fast and fast.endswith("met)") and "NOT" not in fast
    assert "31.0 ms" in slow and "NOT met" in slow


def test_bench_repository_raises_both_models_batch_limits(tmp_path):
    from qwen3_aligner_tools.bench.served import render_bench_repository
    from qwen3_aligner_triton.repository import load_config

    repo = render_bench_repository(
        tmp_path / "repo", "/ckpt", "KIND_GPU", {"max_forward_batch": "128"}, 128
    )
    front = load_config(repo / "qwen3_aligner" / "config.pbtxt")
    core = load_config(repo / "qwen3_aligner_core" / "config.pbtxt")
    assert front.max_batch_size == core.max_batch_size == 128
    assert core.parameters["max_forward_batch"].string_value == "128"
    assert "max_forward_batch" not in front.parameters
    assert core.instance_group[0].kind == 1  # KIND_GPU: the forward on the GPU
    assert front.instance_group[0].kind == 2  # KIND_CPU: the front on the host


# --- bench-shape, shortened ------------------------------------------------------------------


def test_bench_shape_runs_both_measurements_and_replays_the_windows(tiny_checkpoint, tmp_path):
    """The whole script on a small scale: the simulated device's pass and a 90 s recording in
    30 s windows, whose windows it replays in-process to say what a short request waits for."""
    path = tmp_path / "shape.json"
    argv = ["--checkpoint", str(tiny_checkpoint), "--clips", "6", "--prep-clips", "3"]
    argv += ["--concurrency", "3", "--long-minutes", "1.5", "--window-seconds", "30"]
    argv += ["--short-requests", "3", "--instances", "1", "--upload-grace", "0"]
    argv += ["--json", str(path)]
    assert shape.main(argv) == 0
    data = json.loads(path.read_text())
    sim = data["simulated"]
    assert sim["errors"] == 0 and sim["clips"] == 6 and sim["served_clips_per_s"] > 0
    assert sim["first_pass_clips_per_s"] > 0  # the untimed start-up pass, reported apart
    assert sim["core_passes"] == sum(sim["core_passes_by_size"].values()) >= 1
    assert sim["mean_core_batch"] * sim["core_passes"] >= 6 - 0.5  # every clip in a pass
    assert sim["device_busy_fraction"] > 0 and sim["serial_prep_clips_per_s"] > 0
    assert sim["upstream_serial_prep_clips_per_s"] > 0 and sim["ratio_to_upstream_prep"] > 0
    inputs_ms, outputs_ms = sim["core_input_output_ms_per_execution"]
    assert inputs_ms > 0 and outputs_ms >= 0
    (long,) = data["longform"]
    windows = long["window_detail"]
    assert long["windows"] == len(windows) >= 3
    assert windows[0]["start_s"] == 0 and windows[-1]["end_s"] == 90.0
    assert all(a["start_s"] < b["start_s"] for a, b in itertools.pairwise(windows))
    assert long["window_forward_s"]["largest"] == max(w["forward_s"] for w in windows) > 0
    assert long["window_words"] == [
        min(w["words"] for w in windows),
        max(w["words"] for w in windows),
    ]
    assert long["lone_180s_forward_s"] > 0 and long["idle_p95_s"] > 0


def test_trained_checkpoint_means_synthetic_speech_for_the_longform_runs(tmp_path, tiny_checkpoint):
    """``--checkpoint trained`` is the cached tiny checkpoint trained on synthetic speech, and
    its longform runs send that speech, whose words it places (random weights pile them up)."""
    from qwen3_aligner_tools.bench.checkpoints import resolve_checkpoint
    from qwen3_aligner_tools.checkpoint_training import cached_trained_checkpoint

    choice = resolve_checkpoint("trained", tmp_path)
    assert choice.kind == "trained" and choice.location == str(cached_trained_checkpoint())
    args = shape.build_parser().parse_args(["--long-minutes", "4", "--short-requests", "3"])
    assert args.recording is None  # chosen from the checkpoint once it is resolved
    args.recording = "synthetic"
    workload = shape.longform_workload(args)
    assert [round(c.seconds, 2) for c in workload.short] == [5.0] * 3
    assert len(workload.lone) == 3 and all(178.5 < c.seconds <= 179.0 for c in workload.lone)
    assert 239.0 < workload.recording.seconds <= 240.0
    for clip in [*workload.short, *workload.lone, workload.recording]:
        assert clip.audio.dtype == np.float32 and clip.audio.ndim == 1
        words = clip.text.split()
        assert 0.8 < len(words) / clip.seconds < 3.0, clip.name  # a natural pace
        assert set("".join(words)) <= set("abdeiklmnoprstvz")  # the made-up syllables
    texts = {c.text for c in [*workload.short, *workload.lone]}
    assert len(texts) == 6  # every request its own words
    speech_like = shape.longform_workload(shape.build_parser().parse_args(["--long-minutes", "4"]))
    assert speech_like.recording.text != workload.recording.text


def test_the_closed_loop_model_gives_what_a_load_allows_at_best():
    from qwen3_aligner_triton.params import GpuCost

    cost = GpuCost(25.0, 8.1)
    # One client: its clip's CPU and its pass, one after the other.
    rate, mean_pass = shape.closed_loop_model(1, 5, 10.0, 2, cost)
    assert rate == pytest.approx(1000 / (10 + 25 + 8.1)) and mean_pass == 1
    # CPU-bound: two cores at one second per clip serve two clips a second, one per pass.
    rate, mean_pass = shape.closed_loop_model(32, 3, 1000.0, 2, cost)
    assert 1.9 < rate < 2.0 and mean_pass == 1
    # Free CPU, 32 clients: the first clip starts a pass alone, the rest gather behind it, and
    # the loop settles into two alternating passes of 16 (2 x 25 + 32 x 8.1 ms per round).
    rate, mean_pass = shape.closed_loop_model(32, 30, 0.0, 2, cost)
    assert rate == pytest.approx(32_000 / (2 * 25 + 32 * 8.1), rel=0.02)
    assert mean_pass == pytest.approx(16, rel=0.05)
    # A pass never takes more than max_pass clips; more requests each amortise the ramp-up.
    assert shape.closed_loop_model(32, 30, 0.0, 2, cost, max_pass=4)[1] <= 4
    short = shape.closed_loop_model(32, 3, 17.9, 2, cost)[0]
    assert short < shape.closed_loop_model(32, 15, 17.9, 2, cost)[0]


def test_core_passes_come_from_the_cores_batch_size_histogram():
    from qwen3_aligner_tools.bench.shape import parse_core_passes

    def scrape(count, total, cumulative):
        core = 'model="qwen3_aligner_core",version="1"'
        lines = [f"qwen3_aligner_forward_batch_size_count{{{core}}} {count}"]
        lines.append(f"qwen3_aligner_forward_batch_size_sum{{{core}}} {total}")
        for le, n in cumulative.items():
            lines.append(f'qwen3_aligner_forward_batch_size_bucket{{{core},le="{le}"}} {n}')
        lines.append('qwen3_aligner_forward_batch_size_count{model="qwen3_aligner",version="1"} 99')
        return "\n".join(lines)

    def cumulative(*counts):
        return dict(zip(["1", "2", "4", "8", "16", "32", "64", "+Inf"], counts, strict=True))

    before = parse_core_passes(scrape(2, 3, cumulative(1, 2, 2, 2, 2, 2, 2, 2)))
    after = parse_core_passes(scrape(7, 40, cumulative(2, 3, 3, 5, 6, 7, 7, 7)))
    grown = after.since(before)
    assert (grown.passes, grown.clips) == (5, 37)
    assert grown.ranges() == {"1": 1, "5-8": 2, "9-16": 1, "17-32": 1}  # empty ranges left out
