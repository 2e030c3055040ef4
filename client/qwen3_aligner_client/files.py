"""Atomic file writes: a reader never sees a partial file, an interrupted run leaves none.

Both the text formats (:mod:`~qwen3_aligner_client.writers`) and the PNG pages
(:mod:`~qwen3_aligner_client.plot`) are written this way; batch mode's resume relies on it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` so that ``path`` never holds a partial file.

    The text goes to a temporary file in the same folder, which then replaces ``path`` in one
    rename; an interrupted run leaves at most a hidden ``.*.tmp`` file behind.
    """
    write_atomic_bytes(path, text.encode("utf-8"))


def write_atomic_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` as :func:`write_atomic` writes text."""
    target = Path(path)
    fd, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp_name, 0o666 & ~_umask())  # as a plainly created file would be
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
