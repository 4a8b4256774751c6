import os

import pytest
import torch

from magtok.cli.runtime import choose_threads


@pytest.fixture(autouse=True)
def _restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_explicit_thread_count_is_used():
    assert choose_threads(1) == 1 and torch.get_num_threads() == 1


def test_auto_leaves_busy_cores_alone(monkeypatch):
    torch.set_num_threads(2)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(os, "getloadavg", lambda: (1.2, 0.0, 0.0))
    assert choose_threads(0) == 1  # one core busy with other work
    torch.set_num_threads(2)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.1, 0.0, 0.0))
    assert choose_threads(0) == 2  # quiet machine: torch's default
    monkeypatch.setattr(os, "getloadavg", lambda: (7.0, 0.0, 0.0))
    assert choose_threads(0) == 1  # never fewer than 1


def test_negative_is_refused():
    with pytest.raises(ValueError, match="--threads must be >= 0"):
        choose_threads(-2)
