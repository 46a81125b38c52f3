"""Atomic file writes: the new file appears whole, or the old one stays.

Checkpoints (``checkpoints.save_checkpoint``) and student notebooks
(``student.py``) are both written this way. Kept free of torch, so the student
command line starts without loading it.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None], *,
                 mode: int | None = None) -> Path:
    """Call ``write(f)`` on a temporary file beside ``path``, then rename it over ``path``.

    A rename within one folder is atomic, so an interrupted write (Ctrl-C, full
    disk, power cut) leaves the previous file intact, never half a file. The
    data is flushed to disk before the rename, and the file gets the usual
    permissions (``mkstemp`` would leave it readable by its owner only):
    ``0o666`` less the umask, or exactly ``mode`` when given (student notebooks
    pass ``0o644``, so others can read them whatever the umask). The mode is set
    on the temporary file, before the rename: the new file never appears with
    other permissions.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if mode is None:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask  # mkstemp makes 0600; give the usual mode
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path

