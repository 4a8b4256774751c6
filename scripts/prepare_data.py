#!/usr/bin/env python
"""Fetch and prepare magtok-small's data (see magtok/data/prepare.py): `make data`."""
import argparse
import sys

from magtok.data.prepare import prepare_small_data


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default="data/small", help="output folder (default data/small)")
    p.add_argument("--debs", default=None, help="folder with the wallpaper .deb files (downloaded when missing)")
    p.add_argument("--photo-side", type=int, default=256, help="short side of the written photos")
    p.add_argument("--video-side", type=int, default=128, help="short side of the re-encoded training clip (0: copy)")
    p.add_argument("--overwrite", action="store_true", help="prepare again even if manifest.json exists")
    a = p.parse_args(argv)
    try:
        d = prepare_small_data(a.out, debs=a.debs, photo_side=a.photo_side, video_side=a.video_side, overwrite=a.overwrite)
    except (RuntimeError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"train: {d.train}  eval: {d.eval}  ({len(d.manifest['files'])} files, manifest.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
