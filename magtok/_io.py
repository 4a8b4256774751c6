"""Atomic file writes shared by every module that writes files (no magtok imports: bottom layer).

A file appears under its final name complete or not at all: the data goes to a temporary file in the
same folder, which replaces the target by ``os.replace`` only after the write succeeded; on any error
the temporary file is removed; one left by a process that was killed (kill -9) is removed by the
next write of the same target (``remove_stale_temps``). The file gets the mode a plain
``open(path, "w")`` would give (0666 less the umask), not mkstemp's owner-only 0600.
"""

from __future__ import annotations

import os
import re
import socket
import tempfile
from pathlib import Path
from typing import Callable


def default_file_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def set_default_mode(path: str | os.PathLike) -> None:
    os.chmod(path, default_file_mode())


def _host_tag() -> str:
    """This machine's name as it appears in temporary file names (letters, digits and '-' only)."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:24] or "host"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True            # exists (another user's) or unknown: keep its file
    return True


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Remove the hidden temporary files of ``path`` (``.<stem>.<pid>@<host>.<random>.tmp<suffix>``)
    left in its folder by processes of this machine that no longer run (e.g. killed with kill -9).
    Files of running processes, of this process, of other machines and of other targets are kept.
    Returns the removed paths."""
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.stem)}\.(\d+)@{re.escape(_host_tag())}\.[A-Za-z0-9_]+"
                         rf"\.tmp{re.escape(path.suffix)}")
    removed = []
    try:
        names = os.listdir(path.parent if str(path.parent) else ".")
    except OSError:
        return removed
    for name in names:
        m = pattern.fullmatch(name)
        if m is None:
            continue
        pid = int(m.group(1))
        if pid == os.getpid() or _pid_alive(pid):
            continue
        stale = path.parent / name
        try:
            os.unlink(stale)
            removed.append(stale)
        except OSError:
            pass               # removed meanwhile, or not ours to remove
    return removed


def temp_path_beside(path: Path) -> str:
    """An empty, closed temporary file in ``path``'s folder, keeping its suffix (PyAV / PIL pick the
    format by it). Its name holds this process's id and host (``.<stem>.<pid>@<host>.<random>.tmp<suffix>``)
    so that the next write of the same target removes what a killed process left (``remove_stale_temps``)."""
    path = Path(path)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.{os.getpid()}@{_host_tag()}.", suffix=f".tmp{path.suffix}",
                               dir=path.parent)
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
