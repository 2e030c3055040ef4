"""bfloat16, the GPU's dtype, on CPU: the served model (``dtype`` parameter) against upstream.

Upstream ``Qwen3ForcedAligner`` is loaded with ``dtype=torch.bfloat16``; model.py (with the fake
``triton_python_backend_utils``) is configured with ``dtype: bfloat16``. Each request alone must
equal upstream ``align()`` on that clip, and a request's result must not depend on its batch-mates.
"""

from __future__ import annotations

import fake_pb_utils as pb
import numpy as np
import pytest
import torch
from cases import CASES
from conftest import upstream_align
from test_model_py import init_args, load_model_module, model_config, request

from qwen3_aligner_triton.loading import load_aligner


@pytest.fixture(scope="module")
def upstream_bf16(tiny_checkpoint):
    return load_aligner(str(tiny_checkpoint), "cpu", dtype="bfloat16")


@pytest.fixture(scope="module")
def model_bf16(tiny_checkpoint):
    module = load_model_module()
    instance = module.TritonPythonModel()
    instance.initialize(init_args(model_config(checkpoint=str(tiny_checkpoint), dtype="bfloat16")))
    yield instance
    instance.finalize()


@pytest.fixture(scope="module")
def expected(upstream_bf16):
    return {
        c.name: upstream_align(upstream_bf16, c.audio(), c.sample_rate, c.text, c.upstream_language)
        for c in CASES
    }


def served(response) -> list[tuple[str, float, float]]:
    assert not response.has_error(), response.error.message()
    words = [w.decode() for w in response.output("WORDS")[0]]
    starts = response.output("START_TIMES")[0]
    ends = response.output("END_TIMES")[0]
    return list(zip(words, starts.tolist(), ends.tolist(), strict=True))


def as_float32(units):
    return [(t, float(np.float32(s)), float(np.float32(e))) for t, s, e in units]


def test_both_sides_really_run_in_bfloat16(upstream_bf16, model_bf16):
    assert upstream_bf16.model.dtype == torch.bfloat16
    assert model_bf16.engine.dtype == torch.bfloat16
    assert model_bf16.engine.model.thinker.lm_head.weight.dtype == torch.bfloat16


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_lone_request_equals_upstream_in_bfloat16(model_bf16, expected, case):
    (response,) = model_bf16.execute(
        [request(case.audio(), case.text, case.language, sample_rate=case.sample_rate)]
    )
    assert served(response) == as_float32(expected[case.name])


def test_batched_requests_get_their_lone_results_in_bfloat16(model_bf16, expected):
    picked = [CASES[i] for i in (3, 17, 0, 9, 12, 5, 20, 1)]
    responses = model_bf16.execute(
        [request(c.audio(), c.text, c.language, sample_rate=c.sample_rate) for c in picked]
    )
    batches = pb.MetricFamily.families["qwen3_aligner_forward_batch_size"].metrics[0].observations
    assert max(batches[-len(picked) :]) > 1, "the requests did not share a forward pass"
    for case, response in zip(picked, responses, strict=True):
        assert served(response) == as_float32(expected[case.name]), case.name


def test_bfloat16_results_differ_from_float32_somewhere(model_bf16, upstream, expected):
    """The dtype setting reaches the forward pass: some case's timestamps change with it."""
    f32 = {
        c.name: upstream_align(upstream, c.audio(), c.sample_rate, c.text, c.upstream_language)
        for c in CASES
    }
    assert any(f32[name] != expected[name] for name in expected)
