"""``model_repository/qwen3_asr/1/model.py`` with a fake ``triton_python_backend_utils``: load
checks, one response per request in order, the front's key, malformed calls refused alone, and
answers equal to upstream's ``_infer_asr`` + ``parse_asr_output`` for the same chunks."""

from __future__ import annotations

import re

import fake_pb_utils as pb
import numpy as np
import pytest
from test_model_py import core_request, error_message, init_args, load_model_module, model_config

from qwen3_aligner_triton.asr import AsrCall, ChunkTranscript, asr_request_arrays
from qwen3_aligner_triton.core_access import REFUSED_MESSAGE

ASR = "qwen3_asr"


def clip(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(round(seconds * 16000)) * 0.1).astype(np.float32)


@pytest.fixture(scope="module")
def model(asr_checkpoint):
    instance = load_model_module(ASR).TritonPythonModel()
    config = model_config(ASR, checkpoint=str(asr_checkpoint), encoder_attention="full")
    instance.initialize(init_args(config, name=ASR))
    yield instance
    instance.finalize()


def transcripts(response) -> list[ChunkTranscript]:
    assert not response.has_error(), response.error.message()
    texts = response.output("TRANSCRIPT").reshape(-1)
    langs = response.output("TRANSCRIPT_LANGUAGE").reshape(-1)
    return [
        ChunkTranscript(lang.decode(), t.decode()) for t, lang in zip(texts, langs, strict=True)
    ]


def test_each_request_is_one_call_answered_in_order_as_upstream(model, asr_checkpoint):
    from qwen_asr import Qwen3ASRModel
    from qwen_asr.inference.utils import parse_asr_output

    upstream = Qwen3ASRModel.from_pretrained(str(asr_checkpoint))
    calls = [
        AsrCall((clip(2.3, 0), clip(7.9, 1)), ("", ""), (None, None)),
        AsrCall((clip(4.4, 2),), ("Names: Ada.",), ("German",)),
    ]
    bad_lengths = asr_request_arrays(calls[0])
    bad_lengths["AUDIO_LENGTH"] = np.array([[0], [3]], np.int32)
    requests = [
        core_request(asr_request_arrays(calls[0])),
        pb.InferenceRequest(asr_request_arrays(calls[0])),  # without the server's key
        core_request(bad_lengths),
        core_request(asr_request_arrays(calls[1])),
    ]
    responses = model.execute(requests)
    assert len(responses) == len(requests)
    for response, call in ((responses[0], calls[0]), (responses[3], calls[1])):
        raws = upstream._infer_asr(list(call.contexts), list(call.waves), list(call.languages))
        assert transcripts(response) == [
            ChunkTranscript(*parse_asr_output(raw, user_language=lang))
            for raw, lang in zip(raws, call.languages, strict=True)
        ]
    assert error_message(responses[1]) == REFUSED_MESSAGE
    assert "AUDIO_LENGTH" in error_message(responses[2])
    assert transcripts(responses[3])[0].language == "German"


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"window_seconds": "10"}, "unknown parameter(s) window_seconds"),
        ({"max_new_tokens": "0"}, "'max_new_tokens' must be > 0"),
    ],
)
def test_a_bad_configuration_fails_the_load(asr_checkpoint, parameters, message):
    instance = load_model_module(ASR).TritonPythonModel()
    config = model_config(ASR, checkpoint=str(asr_checkpoint), **parameters)
    with pytest.raises(pb.TritonModelException, match=rf"^{ASR}: .*{re.escape(message)}"):
        instance.initialize(init_args(config, name=ASR))


def test_an_aligner_checkpoint_fails_the_load(random_checkpoint):
    instance = load_model_module(ASR).TritonPythonModel()
    config = model_config(ASR, checkpoint=str(random_checkpoint), warmup="false")
    with pytest.raises(pb.TritonModelException, match="is a forced aligner, not an ASR"):
        instance.initialize(init_args(config, name=ASR))
