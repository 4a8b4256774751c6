"""The one streaming H.264 writer, and the checks every output goes through.

    with VideoSink("out.mp4", fps=25) as sink:      # frames go to a hidden temporary file ...
        for frames in chunks:                       # uint8 (t, H, W, 3)
            sink.write(frames)
    # ... renamed over out.mp4 when the block ends; an exception removes it: never a half-written file
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from magtok._io import atomic_write, set_default_mode, temp_path_beside
from magtok.errors import InputError

__all__ = ["OutputError", "VideoSink", "check_output", "check_not_input", "check_writable_folder",
           "write_image_atomic", "IMAGE_OUTPUTS"]

IMAGE_OUTPUTS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}


class OutputError(InputError):
    """An output that cannot be written where asked (message names the path and the fix). A
    ``magtok.errors.InputError``, so also a ValueError."""


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.resolve() == b.resolve():
            return True
    except (OSError, RuntimeError):
        pass
    try:
        return os.path.samefile(a, b)          # hard links, bind mounts, case-insensitive file systems
    except OSError:
        return False                           # one of them does not exist (yet)


def check_not_input(path, inputs, what: str = "input") -> None:
    """Refuse an output ``path`` that is (resolves to, or is a hard link of) one of ``inputs``: writing
    it would replace the input, even with ``overwrite``. URLs among ``inputs`` are ignored."""
    path = Path(path)
    for inp in inputs:
        if inp is None or "://" in str(inp):
            continue
        if _same_file(path, Path(inp)):
            raise OutputError(f"the output {path} is the {what} {inp}: writing it would replace the {what}; "
                              f"give another output path")


def check_writable_folder(folder: Path, what: str) -> None:
    """Refuse early (before any work) when ``folder`` is missing or cannot take new files."""
    folder = Path(folder)
    if not folder.exists():
        raise OutputError(f"cannot write {what}: the folder {folder} does not exist")
    if not folder.is_dir():
        raise OutputError(f"cannot write {what}: {folder} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".magtok-write-test.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputError(f"cannot write {what}: the folder {folder} is not writable "
                          f"({e.strerror or e})") from None


def check_output(path, overwrite: bool, what: str | None = None) -> None:
    """A file output: not a folder, not existing unless ``overwrite``, in a writable folder."""
    path = Path(path)
    what = what or str(path)
    if path.is_dir():
        raise OutputError(f"output {path} is a folder; give a file name")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    check_writable_folder(path.parent if str(path.parent) else Path("."), what)


class VideoSink:
    """Write frames to an H.264 video chunk by chunk; the file appears (atomically) only at ``close``.

    Frames go to a hidden temporary file in the target's folder that is renamed over the target when
    everything is written; any failure (or leaving the ``with`` block by an exception) deletes it.
    Even sizes use yuv420p, odd ones yuv444p (libx264 cannot do 4:2:0 at odd sizes).
    """

    def __init__(self, path, fps: float, overwrite: bool = False, crf: int = 18, preset: str = "medium"):
        from magtok.data.video import CONTAINERS, fps_fraction
        self.path = Path(path)
        self.overwrite = overwrite
        self.format = CONTAINERS.get(self.path.suffix.lower())
        if self.format is None:
            raise OutputError(f"{self.path}: videos are written as H.264 into "
                              f"{', '.join(CONTAINERS)} files, not {self.path.suffix or 'no suffix'!r}")
        self.rate = fps_fraction(fps)
        self.crf, self.preset = crf, preset
        check_output(self.path, overwrite)
        self.tmp = temp_path_beside(self.path)
        self._out = self._stream = None
        self.frames = 0

    def write(self, frames: np.ndarray) -> None:
        """uint8 (t, H, W, 3)."""
        import av
        if self._out is None:
            h, w = frames.shape[1:3]
            self._out = av.open(self.tmp, "w", format=self.format)
            s = self._out.add_stream("libx264", rate=self.rate)
            s.width, s.height = w, h
            s.pix_fmt = "yuv420p" if h % 2 == 0 and w % 2 == 0 else "yuv444p"
            s.options = {"crf": str(self.crf), "preset": self.preset}
            self._stream = s
        for f in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            frame.pts = self.frames
            frame.time_base = 1 / self.rate
            for packet in self._stream.encode(frame):
                self._out.mux(packet)
            self.frames += 1

    def close(self) -> Path:
        try:
            if self._out is None:
                raise OutputError(f"no frames to write into {self.path}")
            for packet in self._stream.encode():
                self._out.mux(packet)
            self._out.close()
            self._out = None
            if self.path.exists() and not self.overwrite:
                raise FileExistsError(f"{self.path} exists; pass overwrite=True to replace it")
            set_default_mode(self.tmp)
            os.replace(self.tmp, self.path)
        finally:
            self.abort()
        return self.path

    def abort(self) -> None:
        if self._out is not None:
            try:
                self._out.close()
            except Exception:
                pass
            self._out = None
        if os.path.exists(self.tmp):
            os.unlink(self.tmp)

    def __enter__(self) -> "VideoSink":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_image_atomic(path, frame: np.ndarray, overwrite: bool) -> Path:
    """Write one uint8 (H, W, 3) frame as png/jpg/webp, atomically."""
    from PIL import Image
    path = Path(path)
    fmt = IMAGE_OUTPUTS.get(path.suffix.lower())
    if fmt is None:
        raise OutputError(f"{path}: images are written as {', '.join(IMAGE_OUTPUTS)}, not {path.suffix!r}")
    check_output(path, overwrite)
    return atomic_write(path, lambda tmp: Image.fromarray(frame).save(tmp, format=fmt))
