"""Serve Qwen3-ForcedAligner on NVIDIA Triton Inference Server.

The modules here hold everything that needs no Triton: parameter parsing, request validation,
audio preparation, word-level batching and the forward pass, timestamp repair, result documents,
and the launcher behind ``./scripts/serve``. ``model_repository/qwen3_aligner/1/model.py`` is glue.
"""

__version__ = "0.1.0"
