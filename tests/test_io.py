"""magtok._io.atomic_write: complete file or nothing, with the mode a plain open() would give."""

import os
import stat

import pytest
import torch

from magtok._io import atomic_write
from magtok.data import TokenMeta, save_tokens


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_written_file_has_the_umask_mode(tmp_path, umask_022):
    path = atomic_write(tmp_path / "a.txt", lambda tmp: open(tmp, "w").write("hello"))
    assert path.read_text() == "hello" and mode(path) == 0o644
    os.umask(0o077)
    assert mode(atomic_write(tmp_path / "b.txt", lambda tmp: open(tmp, "w").write("x"))) == 0o600


def test_failed_write_leaves_nothing_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "keep.txt"
    target.write_text("old")

    def fail(tmp):
        open(tmp, "w").write("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, fail)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]  # no temporary file left behind


def test_token_file_and_sidecar_are_readable_by_others(tmp_path, umask_022):
    meta = TokenMeta(tokenizer_id="abc123", config={"x": 1}, source_frames=5, fps=24.0, height=16, width=16)
    path = save_tokens(tmp_path / "clip.tokens", torch.zeros(3, 2, 2, dtype=torch.long), 256, meta)
    sidecars = [p for p in tmp_path.iterdir() if p.name.startswith("magtok-tokenizer-")]
    assert len(sidecars) == 1
    assert mode(path) == 0o644 and mode(sidecars[0]) == 0o644
