"""Atomic file writes shared by every module that writes files (no magtok imports: bottom layer).

A file appears under its final name complete or not at all: the data goes to a temporary file in the
same folder, which replaces the target by ``os.replace`` only after the write succeeded; on any error
the temporary file is removed. The file gets the mode a plain ``open(path, "w")`` would give (0666
less the umask), not mkstemp's owner-only 0600.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


def default_file_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def set_default_mode(path: str | os.PathLike) -> None:
    os.chmod(path, default_file_mode())


def temp_path_beside(path: Path) -> str:
    """An empty, closed temporary file in ``path``'s folder, keeping its suffix (PyAV / PIL pick the
    format by it)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    return tmp


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)``, then move the finished file to ``path``."""
    path = Path(path)
    tmp = temp_path_beside(path)
    try:
        write(tmp)
        set_default_mode(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
