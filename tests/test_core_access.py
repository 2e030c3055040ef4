"""The core's key: made once per server, shared by its stubs through a private file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from qwen3_aligner_triton.core_access import (
    KEY_FILE_PREFIX,
    KEY_PARAMETER,
    carries_key,
    key_folder,
    key_parameters,
    process_start,
    server_key,
)


def test_every_stub_of_one_server_reads_the_same_key(tmp_path):
    first = server_key(os.getpid(), tmp_path)
    assert len(first) == 64 and int(first, 16) >= 0
    assert server_key(os.getpid(), tmp_path) == first
    (path,) = tmp_path.glob(f"{KEY_FILE_PREFIX}*")
    assert path.stat().st_mode & 0o077 == 0  # readable by this user only


def test_stubs_started_at_once_agree_on_one_key(tmp_path):
    """Two processes of one server load at the same moment: both end up with the same key."""
    code = (
        "import sys; from pathlib import Path; from qwen3_aligner_triton.core_access import "
        f"server_key; print(server_key({os.getpid()}, Path(sys.argv[1])))"
    )
    runs = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE)
        for _ in range(4)
    ]
    keys = {run.communicate(timeout=60)[0].strip() for run in runs}
    assert len(keys) == 1 and len(keys.pop()) == 64


def test_another_server_gets_another_key_and_stale_keys_are_removed(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        mine = server_key(os.getpid(), tmp_path)
        theirs = server_key(child.pid, tmp_path)
        assert mine != theirs
    finally:
        child.kill()
        child.wait()
    # A key of a process given a reused pid is not that process's key.
    (tmp_path / f"{KEY_FILE_PREFIX}{os.getpid()}-1").write_text("f" * 64)
    (tmp_path / f"{KEY_FILE_PREFIX}junk").write_text("f" * 64)
    server_key(os.getppid(), tmp_path)  # a new server's first load cleans up
    left = sorted(p.name for p in tmp_path.glob(f"{KEY_FILE_PREFIX}*"))
    assert left == sorted(
        f"{KEY_FILE_PREFIX}{pid}-{process_start(pid)}" for pid in (os.getpid(), os.getppid())
    )


def test_a_folder_others_may_write_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.gettempdir", lambda: str(tmp_path))
    assert key_folder() == tmp_path / f"qwen3-aligner-{os.getuid()}"
    key_folder().chmod(0o777)
    with pytest.raises(PermissionError, match="mode 0700"):
        key_folder()


def test_a_planted_file_that_is_no_key_is_refused(tmp_path):
    (tmp_path / f"{KEY_FILE_PREFIX}{os.getpid()}-{process_start(os.getpid())}").write_text("x")
    with pytest.raises(PermissionError, match="does not hold a core key"):
        server_key(os.getpid(), tmp_path)


@pytest.mark.parametrize(
    "parameters",
    [
        None,
        "",
        "not json",
        "[1]",
        "{}",
        '{"qwen3_aligner_core_key": 7}',
        '{"qwen3_aligner_core_key": "' + "0" * 64 + '"}',
        {KEY_PARAMETER: "a" * 63},
    ],
)
def test_requests_without_the_key_are_told_apart(parameters):
    assert not carries_key(parameters, "a" * 64)


def test_the_front_s_parameters_carry_the_key():
    key = "b" * 64
    params = key_parameters(key)
    assert carries_key(params, key)
    import json

    assert carries_key(json.dumps({**params, "other": 1}), key)


def test_process_start_tells_processes_apart():
    assert process_start(os.getpid()) == process_start(os.getpid())
    assert process_start(2**22 + 12345) is None
    assert Path(f"/proc/{os.getpid()}/stat").is_file()
