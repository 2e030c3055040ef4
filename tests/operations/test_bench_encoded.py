"""``bench.encoded``: the payloads it compares are one recording, its sizes are what goes on the
wire, and a short run against a real server (uploads through the OpenAI-style front included)
produces its table."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile
from python_multipart import MultipartParser
from python_multipart.multipart import parse_options_header

from qwen3_aligner_tools.bench import encoded
from qwen3_aligner_tools.bench.encoded import (
    SAMPLES,
    Payload,
    Row,
    make_payloads,
    multipart_body,
    table,
    wire_bytes,
)


@pytest.fixture(scope="module")
def payloads() -> list[Payload]:
    return make_payloads(2.0, 16000, 1)


def test_every_payload_holds_the_same_two_seconds(payloads):
    assert [p.label for p in payloads] == [SAMPLES, *(label for label, _, _ in encoded.ENCODINGS)]
    samples = payloads[0].wave
    assert samples is not None and samples.shape == (32000,)
    wav = soundfile.read(io.BytesIO(payloads[1].data), dtype="float32")[0]
    np.testing.assert_array_equal(wav, samples)  # the samples are the WAV file decoded
    for p in payloads[1:]:
        decoded, rate = soundfile.read(io.BytesIO(p.data), dtype="float32")
        assert rate == 16000 and abs(decoded.shape[0] - 32000) < 3000, p.label


def test_wire_bytes_are_the_tensors_plus_a_small_header(payloads):
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    samples, wav = payloads[0], payloads[1]
    for protocol, module in (("http", httpclient), ("grpc", grpcclient)):
        raw = wire_bytes(protocol, samples.inputs(module, "hello", "en"))
        assert 32000 * 4 < raw < 32000 * 4 + 1000, protocol
        file = wire_bytes(protocol, wav.inputs(module, "hello", "en"))
        assert len(wav.data) < file < len(wav.data) + 1000, protocol


def test_the_multipart_body_carries_the_file_and_the_fields_unchanged(payloads):
    wav = payloads[1]
    body, content_type = multipart_body(wav, "hello world", "English")
    _, options = parse_options_header(content_type)
    parts: dict[str, bytes] = {}
    current: list[bytes] = []
    names: list[str] = []

    def on_header_value(data, start, end):
        value = data[start:end].decode()
        if "name=" in value:
            names.append(value.split('name="')[1].split('"')[0])

    def on_part_data(data, start, end):
        current.append(data[start:end])

    def on_part_end():
        parts[names[-1]] = b"".join(current)
        current.clear()

    parser = MultipartParser(
        options[b"boundary"],
        {
            "on_header_value": on_header_value,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    parser.write(body)
    parser.finalize()
    assert parts == {"text": b"hello world", "language": b"English", "file": wav.data}
    assert len(wav.data) < len(body) < len(wav.data) + 600


def test_the_table_puts_each_size_beside_the_samples_of_its_protocol_or_https():
    rows = [
        Row("http", SAMPLES, 1000, 60.0, 61.0, 0.0, 3),
        Row("http", "FLAC", 400, 62.0, 63.0, 5.0, 3),
        Row("openai multipart", "FLAC", 500, 65.0, 66.0, 5.0, 3),
    ]
    lines = table(rows).splitlines()
    assert "| 0.400 " in lines[3] and "| 0.500 " in lines[4]


@pytest.mark.integration
def test_a_short_run_against_a_real_server_gives_every_row(capsys):
    assert encoded.main(["--seconds", "2", "--rounds", "1", "--block", "1", "--openai"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "ms" not in line]
    assert len(rows) == 2 * 6 + 5  # http and grpc: samples and five files; the front: files
    assert sum("openai multipart" in line for line in rows) == 5
