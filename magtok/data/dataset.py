"""A folder of videos (and photos) as a torch Dataset of fixed-size clips.

    ds = VideoFolderDataset("videos/", frames=17, size=128)            # train: random crops
    ds = VideoFolderDataset("videos/", frames=17, size=(128, 224), train=False)
    loader = DataLoader(ds, batch_sampler=ds.batch_sampler(8), num_workers=2)

Every sample is ``dict(video=(3, T, H, W) float32 in [-1, 1], path=str, start=int, fps=float)``
(an image has T = 1, start 0, fps 0.0).

Choices, and why
    * Scan: recursive, sorted (the same order on every machine), hidden files and folders (names
      starting with ".", e.g. half-written temporary files) are ignored.
    * Validation happens once, at construction, in the calling process: every file is probed
      (``probe_video(mode=validate)``; default "packets": open, decode the first frame, count the
      packets without decoding, about 5 ms for a 250-frame clip; photos are decoded). Files that
      cannot be read or are too short for one sample are left out, each with one
      ``warnings.warn`` naming the file and the reason, and listed in ``dataset.skipped`` (path ->
      reason). A file whose container promises more frames than decode (cut short, or a header
      that overcounts) is used with the frames that decode: one ``warnings.warn`` gives both
      counts, and ``dataset.shortened`` maps its path to (declared, decodable) frames. Because
      this happens before the DataLoader forks its workers, the main process knows every skip
      that can be found without decoding everything. Use ``validate="decode"`` to find corrupt
      frames in the middle of files too (slow: decodes everything), or ``"header"`` for huge
      data sets (it trusts the header's frame count).
    * Damage only visible when decoding (a corrupt frame mid-file) is handled in ``__getitem__``:
      it never raises for a bad file; it warns once, records the file in that process's
      ``skipped`` and returns the next valid index (index + 1, + 2, ...), deterministically.
      Such runtime skips inside DataLoader workers live in the worker's copy of the dataset and
      show up only as the worker's warning.
    * Randomness of training crops (temporal start, spatial offset), two modes:
      ``seed=None`` (default): each call draws a fresh generator seed from torch's global RNG, so
      every epoch gets new crops and ``torch.manual_seed`` makes a run reproducible (DataLoader
      workers are seeded from it; the trainer's SeededItems seeds it per item).
      ``seed=int``: crops come from ``np.random.default_rng((seed, epoch, index))``, a pure
      function of (seed, epoch, index) whatever the workers; call ``set_epoch(e)`` each epoch (as
      with DistributedSampler) for new crops, or the same index gives the same crop.
    * Evaluation (``train=False``): the temporal window is centred in the clip (skips fade-ins and
      title frames that a start at frame 0 would always hit), the spatial crop is central.
    * Spatial: resize first so that the frame covers ``size`` (int: short side = size, square
      crop), then crop. The whole field of view is scaled down; any aspect ratio, any target H x W.
    * Photos: with ``images=True`` (default) png/jpg/jpeg/webp files are one-frame samples
      (3, 1, H, W). With ``frames > 1`` they cannot share a batch with videos; use
      ``dataset.batch_sampler(batch_size)`` (batches hold one kind only) or two datasets
      (``images=False`` / ``videos=False``) that the trainer mixes.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import av
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from magtok.data.video import (VideoReadError, _offset, probe_video, read_image, read_video,
                               resize_and_crop, to_tensor)

__all__ = ["VideoFolderDataset", "KindBatchSampler", "MediaItem", "VIDEO_EXTENSIONS",
           "IMAGE_EXTENSIONS", "scan_media", "build_training_datasets"]

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".gif")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")


@dataclass(frozen=True)
class MediaItem:
    """One usable file: ``kind`` is "video" or "image"; frames/fps are 1/0.0 for images."""

    path: str
    kind: str
    num_frames: int
    fps: float
    height: int
    width: int


def _accepted(videos: bool = True, images: bool = True) -> str:
    parts = (["videos " + " ".join(VIDEO_EXTENSIONS)] if videos else []) + \
            (["images " + " ".join(IMAGE_EXTENSIONS)] if images else [])
    return "; ".join(parts)


def scan_media(root, videos: bool = True, images: bool = True) -> list[tuple[str, str]]:
    """Sorted (path, kind) of the media files under ``root`` (recursive, hidden names ignored).

    Raises FileNotFoundError / NotADirectoryError / ValueError (empty) naming the folder and the
    accepted extensions.
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"data folder {root} does not exist (accepted files: {_accepted()})")
    if not root.is_dir():
        raise NotADirectoryError(f"data folder {root} is not a folder (accepted files: {_accepted()})")
    found, other = [], 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            ext = os.path.splitext(name)[1].lower()
            kind = "video" if ext in VIDEO_EXTENSIONS else "image" if ext in IMAGE_EXTENSIONS else None
            if kind is None:
                continue
            if (kind == "video" and videos) or (kind == "image" and images):
                found.append((os.path.join(dirpath, name), kind))
            else:
                other += 1
    found.sort()
    if not found:
        hint = f" ({other} files of the disabled kind: check videos=/images=)" if other else ""
        raise ValueError(f"no media files found under {root} (searched recursively for "
                         f"{_accepted(videos, images)}){hint}")
    return found


class VideoFolderDataset(Dataset):
    """Fixed-size clips from a folder of videos and photos (see the module docstring).

    Args:
        root: folder, scanned recursively.
        frames: frames per sample (1 + k * r_t for a tokenizer with temporal compression r_t).
        size: int (short side, square crop) or (H, W).
        frame_stride: take every n-th frame; or ``target_fps`` to resample to a rate (nearest frame).
        train: random temporal + spatial crops; False: centred window and central crop.
        images / videos: include photos (one-frame samples) / videos.
        seed: None (crops from torch's global RNG) or an int (crops keyed on seed, epoch, index).
        validate: "packets" (default), "header" or "decode"; how files are checked at construction.
    """

    def __init__(self, root, frames: int, size, frame_stride: int = 1, target_fps: float | None = None,
                 train: bool = True, images: bool = True, videos: bool = True, seed: int | None = None,
                 validate: str = "packets"):
        self._setup(root, frames, size, frame_stride, target_fps, train, seed, validate)
        for path, kind in scan_media(root, videos=videos, images=images):
            try:
                item = self._probe(path, kind, validate)
            except VideoReadError as e:
                self._skip(path, e.reason)
                continue
            self.items.append(item)
        if not self.items:
            raise ValueError(f"no usable media under {root}: all {len(self.skipped)} files were "
                             f"skipped: {self.skipped}")

    @classmethod
    def from_manifest(cls, manifest, frames: int, size, frame_stride: int = 1, target_fps: float | None = None,
                      train: bool = True, images: bool = True, videos: bool = True,
                      seed: int | None = None, name: str | None = None) -> "VideoFolderDataset":
        """The same dataset from a manifest (``magtok manifest``: a Parquet file, local path or URL, or
        its rows as dicts), without probing any file: path, kind, frames, fps, height and width come
        from the rows. Rows with a probe ``error``, remote paths (training reads local files), rows
        without a frame count or size, and videos too short for one sample are left out, each with one
        warning, and listed in ``skipped``; a video whose container declared more frames than decode
        is used with the frames that decode (``shortened``). Relative paths are relative to the
        working directory, as ``magtok manifest`` recorded them. ``name``: how messages call the rows."""
        from magtok.data.video import VideoInfo
        if isinstance(manifest, (str, os.PathLike)):
            from magtok.pipeline.manifest import read_manifest
            name, rows = name or str(manifest), read_manifest(manifest)
        else:
            name, rows = name or "<manifest rows>", list(manifest)
        self = cls.__new__(cls)
        self._setup(name, frames, size, frame_stride, target_fps, train, seed, "packets")
        for r in rows:
            path = str(r["path"])
            kind = r.get("kind") or ("image" if os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS else "video")
            if (kind == "image" and not images) or (kind == "video" and not videos):
                continue
            h, w, n, fps = r.get("height"), r.get("width"), r.get("frames"), r.get("fps")
            if r.get("error"):
                reason, prefix = str(r["error"]), f"cannot read {path}: "
                self._skip(path, reason[len(prefix):] if reason.startswith(prefix) else reason)
            elif "://" in path and not path.startswith("file://"):
                self._skip(path, "a remote path: training reads local files (copy the videos to a local or "
                                 "mounted folder and write the manifest there)")
            elif not n or not h or not w:
                self._skip(path, "the manifest row has no frame count or size (write it with `magtok manifest`)")
            elif kind == "image":
                self.items.append(MediaItem(path.removeprefix("file://"), "image", 1, 0.0, int(h), int(w)))
            else:
                path = path.removeprefix("file://")
                fps = float(fps or 0.0)
                info = VideoInfo(path, int(n), fps, int(h), int(w), int(n) / fps if fps else 0.0,
                                 int(r.get("declared_frames") or 0))
                try:
                    self.items.append(self._video_item(path, info))
                except VideoReadError as e:
                    self._skip(path, e.reason)
        if not self.items:
            raise ValueError(f"no usable media in the manifest {name}: {len(rows)} rows, {len(self.skipped)} "
                             f"skipped: {dict(list(self.skipped.items())[:5])}")
        return self

    def _setup(self, root, frames, size, frame_stride, target_fps, train, seed, validate) -> None:
        """Check the options and set the attributes (no files yet)."""
        if int(frames) != frames or frames < 1:
            raise ValueError(f"frames must be a positive integer, not {frames}")
        if isinstance(size, int):
            if size < 1:
                raise ValueError(f"size must be positive, not {size}")
        elif len(size) != 2 or min(size) < 1:
            raise ValueError(f"size must be an int or (H, W), not {size}")
        if target_fps is not None and frame_stride != 1:
            raise ValueError("give either frame_stride or target_fps, not both")
        if int(frame_stride) != frame_stride or frame_stride < 1:
            raise ValueError(f"frame_stride must be a positive integer, not {frame_stride}")
        if target_fps is not None and target_fps <= 0:
            raise ValueError(f"target_fps must be positive, not {target_fps}")
        if validate not in ("header", "packets", "decode"):
            raise ValueError(f"validate must be 'header', 'packets' or 'decode', not {validate!r}")
        self.root = str(root)
        self.frames = int(frames)
        self.size = size if isinstance(size, int) else (int(size[0]), int(size[1]))
        self.frame_stride = int(frame_stride)
        self.target_fps = target_fps
        self.train = train
        self.seed = seed
        self.epoch = 0
        self.skipped: dict[str, str] = {}
        self.shortened: dict[str, tuple[int, int]] = {}   # path -> (declared, decodable) frames
        self._bad: set[int] = set()
        self.items: list[MediaItem] = []

    # ------------------------------------------------------------------ construction helpers
    def _step(self, fps: float) -> float:
        return fps / self.target_fps if self.target_fps is not None else float(self.frame_stride)

    def _span(self, fps: float) -> int:
        """Source frames one sample covers (first to last, inclusive)."""
        return _offset(self.frames - 1, self._step(fps)) + 1

    def _probe(self, path: str, kind: str, validate: str) -> MediaItem:
        if kind == "image":
            if validate == "header":
                from PIL import Image
                try:
                    with Image.open(path) as im:
                        w, h = im.size
                except Exception as e:
                    raise VideoReadError(path, f"not a readable image ({type(e).__name__}: {e})") from None
            else:
                h, w = read_image(path).shape[:2]
            return MediaItem(path, "image", 1, 0.0, h, w)
        return self._video_item(path, probe_video(path, mode=validate))   # num_frames: the frames that decode

    def _video_item(self, path: str, info) -> MediaItem:
        """A usable video from what is known of it (a probe or a manifest row); VideoReadError if not."""
        if self.target_fps is not None and info.fps <= 0:
            raise VideoReadError(path, "unknown frame rate, cannot resample to target_fps")
        short = info.declared_frames > info.num_frames   # cut short, or a header that overcounts
        need = self._span(info.fps)
        if info.num_frames < need:
            how = f"target_fps={self.target_fps}" if self.target_fps else f"frame_stride={self.frame_stride}"
            promised = f" (the container declares {info.declared_frames})" if short else ""
            raise VideoReadError(path, f"too short: {info.num_frames} frames decode{promised}, a sample "
                                       f"of {self.frames} frames at {how} needs {need}")
        if short:
            self.shortened[path] = (info.declared_frames, info.num_frames)
            warnings.warn(f"{path}: the container declares {info.declared_frames} frames but only "
                          f"{info.num_frames} decode (cut short or a wrong header); using those "
                          f"{info.num_frames}", stacklevel=4)
        return MediaItem(path, "video", info.num_frames, info.fps, info.height, info.width)

    def _skip(self, path: str, reason: str) -> None:
        if path not in self.skipped:
            self.skipped[path] = reason
            warnings.warn(f"skipping {path}: {reason}", stacklevel=3)

    # ------------------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.items)

    @property
    def kinds(self) -> list[str]:
        """'video' or 'image' for each index."""
        return [it.kind for it in self.items]

    def set_epoch(self, epoch: int) -> None:
        """New random crops for a new epoch (training only)."""
        self.epoch = int(epoch)

    def batch_sampler(self, batch_size: int, shuffle: bool | None = None,
                      drop_last: bool = False) -> "KindBatchSampler":
        """A batch sampler whose batches hold only videos or only images (shuffled when training)."""
        return KindBatchSampler(self.kinds, batch_size, shuffle=self.train if shuffle is None else shuffle,
                                seed=self.seed, drop_last=drop_last)

    def __getitem__(self, index: int) -> dict:
        n = len(self.items)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} samples")
        index %= n
        last_error = None
        for k in range(n):
            i = (index + k) % n
            if i in self._bad:
                continue
            item = self.items[i]
            try:
                return self._load(item, index)   # randomness keyed on the asked index
            except (VideoReadError, OSError, av.error.FFmpegError) as e:
                reason = e.reason if isinstance(e, VideoReadError) else f"{type(e).__name__}: {e}"
                self._bad.add(i)
                self._skip(item.path, reason)
                last_error = reason
        raise RuntimeError(f"every file under {self.root} failed to load; last error: {last_error}")

    def _rng(self, index: int) -> np.random.Generator | None:
        if not self.train:
            return None
        if self.seed is None:
            return np.random.default_rng(int(torch.randint(2**62, ()).item()))
        return np.random.default_rng((self.seed, self.epoch, index))

    def _load(self, item: MediaItem, index: int) -> dict:
        rng = self._rng(index)
        if item.kind == "image":
            x = to_tensor(read_image(item.path)[None])                 # (3, 1, H, W)
            start, fps = 0, 0.0
        else:
            latest = item.num_frames - self._span(item.fps)           # last valid start
            start = int(rng.integers(0, latest + 1)) if rng is not None else latest // 2
            if self.target_fps is not None:
                u8, fps = read_video(item.path, start, self.frames, target_fps=self.target_fps)
            else:
                u8, fps = read_video(item.path, start, self.frames, stride=self.frame_stride)
            x = to_tensor(u8)                                          # (3, T, H, W)
        video, _ = resize_and_crop(x, self.size, rng)
        return {"video": video.clamp(-1, 1).contiguous(), "path": item.path, "start": start, "fps": float(fps)}


class KindBatchSampler(Sampler):
    """Batches of indices that never mix kinds (e.g. 17-frame videos and 1-frame photos).

    ``kinds``: the kind of each index (``dataset.kinds``). With ``shuffle``, the order within each
    kind and the order of the batches come from ``(seed, epoch)`` (call ``set_epoch`` each epoch),
    or with ``seed=None`` from torch's global RNG at each ``iter``.
    """

    def __init__(self, kinds: list[str], batch_size: int, shuffle: bool = True, seed: int | None = None,
                 drop_last: bool = False):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, not {batch_size}")
        self.groups: dict[str, list[int]] = {}
        for i, k in enumerate(kinds):
            self.groups.setdefault(k, []).append(i)
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, seed, drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _batches(self) -> list[list[int]]:
        rng = np.random.default_rng(int(torch.randint(2**62, ()).item()) if self.seed is None
                                    else (self.seed, self.epoch))
        batches = []
        for kind in sorted(self.groups):
            idx = np.array(self.groups[kind])
            if self.shuffle:
                idx = rng.permutation(idx)
            for s in range(0, len(idx), self.batch_size):
                b = idx[s:s + self.batch_size].tolist()
                if len(b) == self.batch_size or not self.drop_last:
                    batches.append(b)
        if self.shuffle:
            batches = [batches[j] for j in rng.permutation(len(batches))]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches())

    def __len__(self) -> int:
        if self.drop_last:
            return sum(len(v) // self.batch_size for v in self.groups.values())
        return sum(math.ceil(len(v) / self.batch_size) for v in self.groups.values())


def build_training_datasets(cfg, tcfg, val_data=None):
    """(train, val, images) datasets for a ``TrainConfig`` ``cfg`` and its ``TokenizerConfig``.

    train: videos of ``cfg.data.train_dir`` (random crops); val: videos of ``cfg.data.val_dir``
    (centred crops) unless ``val_data`` is given, None without a val_dir; images: the photos of
    ``train_dir`` as one-frame samples when ``cfg.data.images`` and ``image_batch_ratio > 0``, else
    None (also None, with a warning, when the folder has no photos). Frames and size default to the
    tokenizer's ``frames`` and ``image_size``. Separate datasets keep video and image batches apart.
    """
    d = cfg.data
    manifest = getattr(d, "manifest", "")
    if not d.train_dir and not manifest:
        raise ValueError("cfg.data.train_dir is empty: set it to a folder of videos (or data.manifest to a "
                         "manifest written by `magtok manifest`)")
    frames = d.frames or tcfg.frames
    size = tuple(d.size or tcfg.image_size)
    common = dict(frames=frames, size=size, frame_stride=d.frame_stride, target_fps=d.target_fps)
    if manifest:   # no file is probed: the manifest's rows say what each file holds
        from magtok.pipeline.manifest import read_manifest
        train_rows, val_rows = _split_manifest(read_manifest(manifest), d.train_dir, d.val_dir)
        if not train_rows:
            where = f" under data.train_dir={d.train_dir}" if d.train_dir else ""
            raise ValueError(f"data.manifest {manifest} lists no training files{where} (data.val_dir="
                             f"{d.val_dir or '<unset>'}); write it with `magtok manifest` over the training videos")
        train = VideoFolderDataset.from_manifest(train_rows, train=True, images=False,
                                                 name=f"{manifest} (training rows)", **common)
        if val_data is None and val_rows:
            val_data = VideoFolderDataset.from_manifest(val_rows, train=False, images=False,
                                                        name=f"{manifest} (validation rows)", **common)
    else:
        train_rows = None
        train = VideoFolderDataset(d.train_dir, train=True, images=False, **common)
    if val_data is None and d.val_dir:   # a val_dir the manifest does not cover is probed as before
        val_data = VideoFolderDataset(d.val_dir, train=False, images=False, **common)
    if d.still_motion > 0 and not (d.stills_dir or d.train_dir):
        raise ValueError("data.still_motion > 0 needs data.stills_dir (a folder of photos) when training "
                         "from data.manifest without data.train_dir")
    if d.still_motion > 0:
        from magtok.data.augment import MixtureDataset, MovingStillsDataset

        if not d.still_motion <= 1:
            raise ValueError(f"data.still_motion is a share of training clips in [0, 1], not {d.still_motion}")
        stills = MovingStillsDataset(d.stills_dir or d.train_dir, frames=frames, size=size, motion=d.motion)
        if d.still_motion >= 1:
            train = stills
        else:
            train = MixtureDataset([train, stills], [1 - d.still_motion, d.still_motion],
                                   length=max(len(train) + len(stills), 64))
    images = None
    if d.images and d.image_batch_ratio > 0:
        try:
            if train_rows is not None:
                images = VideoFolderDataset.from_manifest(train_rows, frames=1, size=size, train=True, videos=False,
                                                          name=f"{manifest} (training rows)")
            else:
                images = VideoFolderDataset(d.train_dir, frames=1, size=size, train=True, videos=False)
        except ValueError as e:
            warnings.warn(f"no image batches: {e}", stacklevel=2)
    return train, val_data, images


def _split_manifest(rows: list[dict], train_dir: str, val_dir: str) -> tuple[list[dict], list[dict]]:
    """(training rows, validation rows) of a manifest: rows whose path lies under ``val_dir`` are
    validation; the others are training (only those under ``train_dir`` when it is set)."""
    def under(path: str, folder: str) -> bool:
        if not folder:
            return False
        if "://" in path or "://" in folder:
            return path.startswith(folder.rstrip("/") + "/")
        return os.path.abspath(path).startswith(os.path.abspath(folder).rstrip(os.sep) + os.sep)

    val = [r for r in rows if under(str(r["path"]), val_dir)]
    train = [r for r in rows if not under(str(r["path"]), val_dir)
             and (not train_dir or under(str(r["path"]), train_dir))]
    return train, val
