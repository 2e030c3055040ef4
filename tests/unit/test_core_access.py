"""The core's key: made once per server, shared by its stubs through a private file."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from qwen3_aligner_triton import core_access
from qwen3_aligner_triton.core_access import (
    KEY_FILE_PREFIX,
    KEY_PARAMETER,
    carries_key,
    key_folder,
    key_parameters,
    process_start,
    server_key,
)

NO_SUCH_PID = 2**22 + 12345  # above the kernel's largest pid (pid_max is at most 2**22)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")  # per second, the unit of a process's start time


def uptime() -> float:
    """Seconds since boot, the clock that a process's start time counts in ticks."""
    return float(Path("/proc/uptime").read_text().split()[0])


@contextlib.contextmanager
def sleeping_process(command_name: str | None = None):
    """A child process that sleeps (renamed to ``command_name`` first, when given), killed on
    exit; yields it with the uptime read just before and just after it started."""
    rename = f"open('/proc/self/comm', 'w').write({command_name!r}); " if command_name else ""
    code = f"import time; {rename}print('ready', flush=True); time.sleep(60)"
    before = uptime()
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    after = uptime()
    try:
        assert child.stdout.readline() == "ready\n"
        yield child, before, after
    finally:
        child.kill()
        child.wait()
        child.stdout.close()


def key_files(folder: Path) -> list[str]:
    """The names of everything in ``folder``, hidden files included, sorted."""
    return sorted(path.name for path in folder.iterdir())


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


def test_process_start_is_the_tick_since_boot_the_process_started():
    with sleeping_process() as (child, before, after):
        started = int(process_start(child.pid)) / CLOCK_TICKS
    # /proc/uptime and the start time are both cut to whole ticks (1/100 s): allow one either side
    assert before - 1 / CLOCK_TICKS <= started <= after + 1 / CLOCK_TICKS


def test_a_command_name_with_parentheses_and_spaces_does_not_shift_the_fields():
    with sleeping_process("x) 1 2 3 4 5 6") as (child, before, after):
        assert Path(f"/proc/{child.pid}/comm").read_text() == "x) 1 2 3 4 5 6\n"
        started = int(process_start(child.pid)) / CLOCK_TICKS
    assert before - 1 / CLOCK_TICKS <= started <= after + 1 / CLOCK_TICKS


def test_a_folder_named_for_this_user_but_owned_by_another_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.gettempdir", lambda: str(tmp_path))
    owner = os.getuid()
    monkeypatch.setattr(os, "getuid", lambda: owner + 1)  # this user, as the folder sees it
    with pytest.raises(PermissionError, match="owned by this user"):
        key_folder()
    folder = tmp_path / f"qwen3-aligner-{owner + 1}"
    assert folder.stat().st_uid == owner and folder.stat().st_mode & 0o777 == 0o700


def test_by_default_the_key_is_the_parent_server_s_in_the_private_folder(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.gettempdir", lambda: str(tmp_path))
    key = server_key()
    folder = tmp_path / f"qwen3-aligner-{os.getuid()}"
    name = f"{KEY_FILE_PREFIX}{os.getppid()}-{process_start(os.getppid())}"
    assert key_files(folder) == [name]
    assert (folder / name).read_text() == key
    assert server_key(os.getppid(), folder) == key


def test_a_server_whose_start_cannot_be_read_gets_a_key_file_marked_0(tmp_path):
    key = server_key(NO_SUCH_PID, tmp_path)
    assert key_files(tmp_path) == [f"{KEY_FILE_PREFIX}{NO_SUCH_PID}-0"]
    assert server_key(NO_SUCH_PID, tmp_path) == key


def test_a_key_is_written_under_a_hidden_temporary_name_in_its_own_folder(tmp_path, monkeypatch):
    """What another stub listing the folder may see while a key is written: a hidden ``.key-``
    file beside the key files (so a key folder on another file system than the system's temp
    folder works), and nothing once the key is in place."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-temp-folder"))
    folder = tmp_path / "keys"
    folder.mkdir(mode=0o700)
    seen = []
    link = os.link

    def look_then_link(source, target):
        seen.append((Path(source), key_files(folder)))
        link(source, target)

    monkeypatch.setattr(os, "link", look_then_link)
    key = server_key(os.getpid(), folder)
    assert len(key) == 64
    ((temporary, listing),) = seen
    assert temporary.parent == folder and temporary.name.startswith(".key-")
    assert listing == [temporary.name]
    assert key_files(folder) == [f"{KEY_FILE_PREFIX}{os.getpid()}-{process_start(os.getpid())}"]


def test_a_stub_that_loses_the_race_to_place_its_key_returns_the_winner_s(tmp_path, monkeypatch):
    winner = "c" * 64
    link = os.link

    def another_stub_places_its_key_first(source, target):
        Path(target).write_text(winner)
        link(source, target)

    monkeypatch.setattr(os, "link", another_stub_places_its_key_first)
    assert server_key(os.getpid(), tmp_path) == winner
    name = f"{KEY_FILE_PREFIX}{os.getpid()}-{process_start(os.getpid())}"
    assert key_files(tmp_path) == [name]  # the loser's temporary file is gone
    assert (tmp_path / name).read_text() == winner


def test_a_stale_key_removed_by_another_stub_meanwhile_is_no_error(tmp_path, monkeypatch):
    stale = tmp_path / f"{KEY_FILE_PREFIX}{NO_SUCH_PID}-5"
    stale.write_text("f" * 64)
    real_process_start = core_access.process_start

    def another_stub_removes_it_first(pid):
        if pid == NO_SUCH_PID:
            stale.unlink()
        return real_process_start(pid)

    monkeypatch.setattr(core_access, "process_start", another_stub_removes_it_first)
    key = server_key(os.getpid(), tmp_path)
    name = f"{KEY_FILE_PREFIX}{os.getpid()}-{process_start(os.getpid())}"
    assert key_files(tmp_path) == [name]
    assert (tmp_path / name).read_text() == key


def test_a_stale_file_named_with_a_non_decimal_digit_is_removed(tmp_path):
    # "²" is a digit to str.isdigit() but no number to int(): it once made every key fail
    (tmp_path / f"{KEY_FILE_PREFIX}²").write_text("f" * 64)
    server_key(os.getpid(), tmp_path)
    assert key_files(tmp_path) == [f"{KEY_FILE_PREFIX}{os.getpid()}-{process_start(os.getpid())}"]
