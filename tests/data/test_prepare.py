"""magtok-small's data preparation: .deb photos read in Python, sample clips, manifest."""

import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image

from magtok.data import probe_video, sample_videos
from magtok.data.prepare import deb_members, download_debs, prepare_small_data


def _ar(members: dict[str, bytes]) -> bytes:
    out = b"!<arch>\n"
    for name, data in members.items():
        header = f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode()
        assert len(header) == 60
        out += header + data + (b"\n" if len(data) % 2 else b"")
    return out


def _fake_deb(path, files: dict[str, bytes], links: dict[str, str] = {}):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in links.items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    path.write_bytes(_ar({"debian-binary": b"2.0\n", "control.tar.xz": b"", "data.tar.xz": buf.getvalue()}))
    return path


def _jpeg(seed=0, size=(300, 200)) -> bytes:
    arr = (np.random.default_rng(seed).random((size[1], size[0], 3)) * 255).astype(np.uint8)
    b = io.BytesIO()
    Image.fromarray(arr).save(b, format="JPEG")
    return b.getvalue()


def test_deb_members_reads_files_and_follows_symlinks(tmp_path):
    deb = _fake_deb(tmp_path / "pkg_1.0_all.deb",
                    {"./usr/share/w/A/contents/images/2560x1600.jpg": b"big", "./usr/share/w/readme.txt": b"x"},
                    links={"./usr/share/w/A/contents/images/1920x1080.jpg": "2560x1600.jpg"})
    got = deb_members(deb, ["./usr/share/w/*/contents/images/1920x1080.jpg"])
    assert got == {"./usr/share/w/A/contents/images/1920x1080.jpg": b"big"}
    assert deb_members(deb, ["*.png"]) == {}


def test_deb_members_rejects_other_files(tmp_path):
    bad = tmp_path / "x.deb"
    bad.write_bytes(b"PK\x03\x04 not a deb")
    with pytest.raises(ValueError, match=r"x\.deb.*not an ar archive"):
        deb_members(bad, ["*"])


def test_download_without_apt_names_the_fix(tmp_path, monkeypatch):
    import magtok.data.prepare as prep
    monkeypatch.setattr(prep.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="--debs"):
        download_debs(["some-wallpapers"], tmp_path)
    (tmp_path / "some-wallpapers_2.0_all.deb").write_bytes(b"")
    assert download_debs(["some-wallpapers"], tmp_path)["some-wallpapers"].name == "some-wallpapers_2.0_all.deb"


def test_prepare_small_data(tmp_path):
    debs = tmp_path / "debs"
    debs.mkdir()
    _fake_deb(debs / "fake-wallpapers_1.0_all.deb",
              {"./usr/share/backgrounds/nature/Lake.jpg": _jpeg(0, (600, 400)),
               "./usr/share/backgrounds/abstract/Swirl.jpg": _jpeg(1)})
    out = tmp_path / "data"
    d = prepare_small_data(out, debs=debs, photo_side=64,
                           packages={"fake-wallpapers": ("./usr/share/backgrounds/nature/Lake.jpg",
                                                         "./usr/share/backgrounds/nature/Missing.jpg")},
                           progress=lambda *_: None)
    photos = sorted(p.name for p in (d.train / "photos").iterdir())
    assert "fake-wallpapers-Lake.jpg" in photos and not any("Swirl" in p for p in photos)
    assert sum(p.startswith("skimage-") for p in photos) == 5
    with Image.open(d.train / "photos" / "fake-wallpapers-Lake.jpg") as im:
        assert min(im.size) == 64 and im.size == (96, 64)          # aspect kept, short side 64
    # held-out clips are byte-identical copies; the training clip is re-encoded small
    src = sample_videos()
    for name in ("bikes", "carphone_pristine", "carphone_distorted"):
        assert (d.eval / f"{name}.mp4").read_bytes() == src[name].read_bytes()
    info = probe_video(str(d.train / "bigbuckbunny.mp4"))
    assert min(info.height, info.width) == 128 and info.num_frames == probe_video(str(src["bigbuckbunny"])).num_frames
    manifest = json.loads((out / "manifest.json").read_text())
    sources = {f["source"] for f in manifest["files"]}
    assert any(s.startswith("debian:fake-wallpapers:") and s.endswith("nature/Lake.jpg") for s in sources)
    assert {f["split"] for f in manifest["files"] if f["file"].startswith("eval/")} == {"eval"}
    # a second call reuses the prepared folder (nothing rewritten)
    stamp = (out / "manifest.json").stat().st_mtime_ns
    prepare_small_data(out, debs=debs, packages={}, progress=lambda *_: None)
    assert (out / "manifest.json").stat().st_mtime_ns == stamp
