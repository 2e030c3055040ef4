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
from shared_fixtures import upstream_align
from test_model_py import (
    FRONT,
    core_execute,
    core_request,
    init_args,
    load_model_module,
    make_core,
    model_config,
    request,
    serve,
    wire,
)

from qwen3_aligner_triton.front import core_request_arrays
from qwen3_aligner_triton.loading import load_aligner


@pytest.fixture(scope="module")
def upstream_bf16(tiny_checkpoint):
    return load_aligner(str(tiny_checkpoint), "cpu", dtype="bfloat16")


@pytest.fixture(scope="module")
def core_bf16(tiny_checkpoint):
    """The forward-only core with ``dtype: bfloat16``."""
    instance = make_core(tiny_checkpoint, dtype="bfloat16")
    yield instance
    instance.finalize()


@pytest.fixture(scope="module")
def front(tiny_checkpoint):
    instance = load_model_module(FRONT).TritonPythonModel()
    instance.initialize(init_args(model_config(FRONT, checkpoint=str(tiny_checkpoint))))
    yield instance
    instance.finalize()


@pytest.fixture
def model_bf16(front, core_bf16):
    """The public model (front) whose BLS calls reach the bfloat16 core."""
    wire(core_bf16)
    yield front
    pb.InferenceRequest.handler = None


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


def test_both_sides_really_run_in_bfloat16(upstream_bf16, model_bf16, core_bf16):
    assert upstream_bf16.model.dtype == torch.bfloat16
    engine = model_bf16.front.preparer  # the front prepares only; the core holds the model
    assert not hasattr(engine, "model")
    core_engine = core_bf16.forward.run  # the core's forward over the loaded model
    assert core_engine.dtype == torch.bfloat16
    assert core_engine.model.thinker.lm_head.weight.dtype == torch.bfloat16


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_lone_request_equals_upstream_in_bfloat16(model_bf16, expected, case):
    (response,) = serve(
        model_bf16, [request(case.audio(), case.text, case.language, sample_rate=case.sample_rate)]
    )
    assert served(response) == as_float32(expected[case.name])


# bfloat16 keeps 8 significant bits: in a shared pass the attention runs over the batch's padded
# length and sums in another order, so an activation, and so a logit, can land one bfloat16
# rounding away from its lone value. The bins must stay equal; a slot's confidence (a probability
# in [0, 1], from bf16 logits) is held to what bfloat16 can resolve at 1.0, its machine epsilon
# 2**-7: finer differences are below the precision the pass computed in. Measured: 3.4e-4 on one
# machine, 1.37e-3 on another (00-English-short), every other clip bit-equal.
BF16_BATCH_TOLERANCE = float(torch.finfo(torch.bfloat16).eps)


def test_batched_clips_get_their_lone_results_in_bfloat16(front, core_bf16):
    """The core's forward passes in bfloat16: each clip's bins and confidences are the same in a
    shared pass as alone."""
    from qwen3_aligner_triton.requests import AlignRequest

    picked = [CASES[i] for i in (3, 17, 0, 9, 12, 5, 20, 1)]
    arrays = []
    for c in picked:
        req = AlignRequest(
            audio=c.audio(), sample_rate=c.sample_rate, text=c.text, language=c.upstream_language
        )
        arrays.append(core_request_arrays(front.front.preparer.prepare(req).core_input()))
    alone = [core_execute(core_bf16, [core_request(a)])[0] for a in arrays]
    family = core_bf16.metrics._families["qwen3_aligner_forward_batch_size"]
    seen = len(family.metrics[0].observations)
    together = core_execute(core_bf16, [core_request(a) for a in arrays])
    sizes = family.metrics[0].observations
    assert len(sizes) > seen and max(sizes[seen:]) > 1, "the clips did not share a forward pass"
    for case, one, shared in zip(picked, alone, together, strict=True):
        bins = "TIMESTAMP_BINS"
        np.testing.assert_array_equal(shared.output(bins), one.output(bins), err_msg=case.name)
        np.testing.assert_allclose(
            shared.output("SLOT_CONFIDENCE"),
            one.output("SLOT_CONFIDENCE"),
            rtol=0,
            atol=BF16_BATCH_TOLERANCE,
            err_msg=case.name,
        )


def test_bfloat16_results_differ_from_float32_somewhere(model_bf16, upstream, expected):
    """The dtype setting reaches the forward pass: some case's timestamps change with it."""
    f32 = {
        c.name: upstream_align(upstream, c.audio(), c.sample_rate, c.text, c.upstream_language)
        for c in CASES
    }
    assert any(f32[name] != expected[name] for name in expected)
