"""The mutation lane's own table and configuration (the lane itself runs for minutes)."""

from __future__ import annotations

import pytest
import tomllib

from qwen3_aligner_tools.bench.mutation_lane import (
    MODULES,
    ROOT,
    SINGLE_THREADED,
    LaneResult,
    mutmut_config,
    run_module,
    source_path,
)


def test_every_module_and_its_tests_exist():
    for module, tests in MODULES.items():
        path = source_path(module).replace(
            "src/qwen3_aligner_client/", "client/qwen3_aligner_client/"
        )
        assert (ROOT / path).is_file(), module
        assert tests and all((ROOT / t).is_file() for t in tests), module


def test_client_modules_are_mutated_where_the_tests_import_them():
    assert source_path("client.writers") == "src/qwen3_aligner_client/writers.py"
    assert source_path("timestamps") == "src/qwen3_aligner_triton/timestamps.py"


def test_mutants_run_single_threaded():
    # a forked mutant whose parent started an OpenMP pool deadlocks and would count as killed
    assert SINGLE_THREADED["OMP_NUM_THREADS"] == "1"


def test_the_configuration_names_the_module_and_its_tests():
    tests = ("tests/unit/test_timestamps.py",)
    config = tomllib.loads(mutmut_config("timestamps", tests))["tool"]
    assert config["mutmut"]["source_paths"] == ["src/qwen3_aligner_triton/timestamps.py"]
    assert config["mutmut"]["pytest_add_cli_args_test_selection"] == list(tests)


def test_timeouts_count_as_killed():
    result = LaneResult("m", killed=8, timeout=1, survived=1, total=10, survivors=(), folder=ROOT)
    assert result.kill_rate == 0.9


@pytest.mark.parametrize(
    ("module", "pattern"),
    [("languages", "*x_resolve_language*"), ("client.segments", "*x_clean_cue_text*")],
)
def test_the_scratch_copy_runs_the_modules_tests_and_kills_mutants(tmp_path, module, pattern):
    """The copy holds what the tests import and read (the checkout's conftest.py, the helpers of
    tests/ and client/tests/): a mutant of a product module and one of a client module are
    killed there and none survive."""
    result = run_module(module, MODULES[module], tmp_path, only=(pattern,))
    assert result.killed > 0, result
    assert result.survived == 0, result.survivors
