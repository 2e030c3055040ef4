"""Development tooling of qwen3-aligner-triton: benchmarks, the soak run, the test checkpoints and
the simulated device. Installed beside the product for development and tests
(``./scripts/setup-venv``); never copied into the serving image."""
