"""The core serves only the front of its own server: a key per server start.

``qwen3_aligner_core`` runs the forward over whatever clips reach it, batched with other
clients' clips. Triton's inference API is open to every client for every loaded model, so a
client could send the core clips no front would send. The front therefore sends, with each BLS
call, a request parameter carrying a key that only the processes of this ``tritonserver`` know,
and the core refuses every request without it.

The key is made by whichever of the two models loads first and shared through a file readable by
this user only, named for the ``tritonserver`` process (the parent of every backend stub) and its
start time. It never appears in a command line, a log or a response. A restarted stub of the same
server reads the same key; a new server makes a new one, and removes the files of servers that no
longer run.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import stat
import tempfile
from pathlib import Path

KEY_PARAMETER = "qwen3_aligner_core_key"  # the BLS request parameter that carries the key
KEY_FILE_PREFIX = "core-key-"
REFUSED_MESSAGE = (
    "qwen3_aligner_core serves only the qwen3_aligner model of its own server; send requests to "
    "qwen3_aligner"
)


def key_folder() -> Path:
    """This user's private folder for the keys (created 0700; refused if anyone else may use
    it, since a key file there could then be read or planted)."""
    folder = Path(tempfile.gettempdir()) / f"qwen3-aligner-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    info = folder.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise PermissionError(
            f"{folder} must be a folder owned by this user and closed to others (mode 0700)"
        )
    return folder


def process_start(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (field 22 of
    ``/proc/PID/stat``), which tells a process from a later one given the same pid; None when
    no such process runs."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    fields = text[text.rindex(")") + 2 :].split()
    return fields[19]


def server_key(server_pid: int | None = None, folder: Path | None = None) -> str:
    """The key of the server whose process is ``server_pid`` (default: this process's parent,
    the ``tritonserver`` that started this backend stub): read from its file, or made and
    written there by the first caller."""
    pid = os.getppid() if server_pid is None else server_pid
    folder = key_folder() if folder is None else folder
    started = process_start(pid) or "0"
    path = folder / f"{KEY_FILE_PREFIX}{pid}-{started}"
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    _remove_stale_keys(folder)
    key = secrets.token_hex(32)
    # Written whole under a temporary name, then linked into place: a model loading at the same
    # moment either finds no file or the complete one, and only one key wins.
    fd, temporary = tempfile.mkstemp(dir=folder, prefix=".key-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(key)
        try:
            os.link(temporary, path)
        except FileExistsError:
            return _read_key(path)
    finally:
        os.unlink(temporary)
    return key


def _read_key(path: Path) -> str:
    key = path.read_text().strip()
    if len(key) != 64:
        raise PermissionError(f"{path} does not hold a core key")
    return key


def _remove_stale_keys(folder: Path) -> None:
    """Remove the key files of servers that no longer run."""
    for path in folder.glob(f"{KEY_FILE_PREFIX}*"):
        pid, _, started = path.name[len(KEY_FILE_PREFIX) :].partition("-")
        # isdigit() would take "²", which int() refuses: only ASCII decimals name a process
        if not (pid.isascii() and pid.isdecimal()) or process_start(int(pid)) != started:
            path.unlink(missing_ok=True)


def key_parameters(key: str) -> dict[str, str]:
    """The parameters of a BLS request to the core."""
    return {KEY_PARAMETER: key}


def carries_key(parameters: str | dict | None, key: str) -> bool:
    """Whether a request's parameters (the JSON text Triton gives, or a dict) carry ``key``."""
    if isinstance(parameters, str):
        try:
            parameters = json.loads(parameters) if parameters else {}
        except ValueError:
            return False
    if not isinstance(parameters, dict):
        return False
    given = parameters.get(KEY_PARAMETER)
    if not isinstance(given, str):
        return False
    return hmac.compare_digest(given.encode(), key.encode())
