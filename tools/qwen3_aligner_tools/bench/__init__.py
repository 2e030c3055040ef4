"""Benchmarks of the served aligner against the upstream library, on the same inputs.

* :mod:`.run` (``./scripts/bench``): upstream ``align()`` one at a time and in batches vs the
  server at several concurrencies, over HTTP and gRPC, plus the timestamp-repair speed-up.
* :mod:`.perf` (``./scripts/perf``): NVIDIA's ``perf_analyzer`` against the server with real-length
  input data; :mod:`.perf_analyzer` installs and drives it.
* :mod:`.gpu_check` (``./scripts/gpu_check``): milliseconds per 30 s clip on one CUDA GPU.

Nothing here is imported by the server; these modules only use the package's public pieces
(engine, launcher, repository rendering, checkpoint builder).
"""
