"""Process-level settings shared by the CLI commands that train."""

from __future__ import annotations

import os


def choose_threads(requested: int) -> int:
    """Set torch's CPU thread count and return it.

    ``requested`` > 0 is used as given. 0 (the default of ``--threads``) takes the cores that other work
    is not already using, by the 1-minute load average, at least 1 and at most torch's default: on a
    2-core machine with another job running, 2 threads contend with it and a step can take several times
    longer than with 1 (measured for `magtok demo`: about 6 s a step against 1.4 s).
    """
    import torch

    if requested < 0:
        raise ValueError(f"--threads must be >= 0 (0 = choose), got {requested}")
    if requested == 0:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        try:
            busy = int(os.getloadavg()[0] + 0.5)
        except OSError:  # no load average on this platform
            busy = 0
        requested = max(1, min(torch.get_num_threads(), cores - busy))
    torch.set_num_threads(requested)
    return requested


def setup_logging(level: int | None = None) -> None:
    """Send the library's ``logging`` records (logger ``magtok``) to stderr as ``[magtok HH:MM:SS] msg``.

    Library code only logs; the command line decides where it goes. Called once by ``magtok``'s
    entry point; a second call changes nothing. ``MAGTOK_LOG_LEVEL`` (e.g. ``DEBUG``) overrides INFO.
    """
    import logging
    import sys

    logger = logging.getLogger("magtok")
    if any(getattr(h, "_magtok_cli", False) for h in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[magtok %(asctime)s] %(message)s", datefmt="%H:%M:%S"))
    handler._magtok_cli = True
    logger.addHandler(handler)
    if level is None:
        level = getattr(logging, os.environ.get("MAGTOK_LOG_LEVEL", "INFO").upper(), logging.INFO)
    logger.setLevel(level)
