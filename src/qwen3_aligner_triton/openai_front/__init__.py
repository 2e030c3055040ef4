"""An OpenAI-style HTTP front for the aligner (``POST /v1/audio/alignments``, ``GET /v1/models``).

A separate process beside tritonserver (``python -m qwen3_aligner_triton.openai_front``, started by
``./scripts/serve --openai-port N`` and by the container when ``OPENAI_PORT`` is set) that speaks
the OpenAI audio API's shapes to HTTP clients and Triton's gRPC API to the ``qwen3_aligner``
model. See docs/openai.md.
"""
