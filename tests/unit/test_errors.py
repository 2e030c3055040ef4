from qwen3_aligner_triton.errors import INTERNAL, INVALID_ARG, describe
from qwen3_aligner_triton.requests import RequestError


def test_client_mistakes_keep_their_message_and_reason():
    reply = describe(RequestError("input TEXT is empty", "text_empty"), "preparing request 0")
    assert (reply.message, reply.code, reply.reason) == (
        "input TEXT is empty",
        INVALID_ARG,
        "text_empty",
    )
    assert reply.log is None and reply.error_id is None


def test_internal_failures_hide_the_exception_and_log_it_under_an_id():
    try:
        float(10**400)
    except OverflowError as e:
        reply = describe(e, "aligning request 3", "forward_failed")
    assert reply.code == INTERNAL
    assert reply.reason == "forward_failed"
    assert reply.message == f"internal error (id {reply.error_id})"
    assert "too large" not in reply.message and "OverflowError" not in reply.message
    assert reply.log is not None
    assert f"error id {reply.error_id}" in reply.log
    assert "aligning request 3 failed" in reply.log
    assert "OverflowError" in reply.log and "Traceback" in reply.log


def test_each_internal_failure_gets_its_own_id():
    ids = {describe(RuntimeError("boom"), "x").error_id for _ in range(50)}
    assert len(ids) == 50


def test_out_of_memory_is_named_without_the_exception_text():
    class OutOfMemoryError(RuntimeError):  # as torch names it
        pass

    reply = describe(OutOfMemoryError("CUDA out of memory. Tried to allocate 9 GiB"), "aligning")
    assert reply.message == (
        f"internal error (id {reply.error_id}): out of memory, the request does not fit on the "
        "device even alone"
    )
    assert "GiB" not in reply.message and "GiB" in reply.log
