"""The pipeline's one-call API and the model resolver."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch

from magtok.data import read_video
from magtok.pipeline import (ComputeOptions, ReadOptions, TokenizeResult, detokenize, load_model, reconstruct,
                             resolve_model, tokenize_array, tokenize_file)


def test_file_array_detokenize_reconstruct(videos, tiny_model, tmp_path):
    read = ReadOptions(short_side=16, max_frames=9)
    r = tokenize_file(videos / "bikes-0.mp4", tiny_model, read)
    assert isinstance(r, TokenizeResult) and tuple(r.codes.shape) == (5, 8, 10) and r.frames == 9
    assert r.notes == ["16x21 centre-cropped to 16x20 (multiples of r_s=2)"]
    frames, _ = read_video(videos / "bikes-0.mp4", num_frames=9)
    a = tokenize_array(frames, tiny_model, fps=25, read=read, compute=ComputeOptions(chunk_latents=2))
    assert torch.equal(a.codes, r.codes)
    p = r.save(tmp_path / "c.tokens")
    d = detokenize(p, tmp_path / "c.mp4")
    assert (d.frames, d.height, d.width, d.fps) == (9, 16, 20, 25.0)
    rec = reconstruct(videos / "bikes-0.mp4", tmp_path / "r.mp4", tiny_model, read)
    assert rec.frames == 9 and rec.psnr > 5 and rec.ssim is not None
    with pytest.raises(FileExistsError, match="exists"):
        r.save(p)
    with pytest.raises(ValueError, match="uint8"):
        tokenize_array(np.zeros((2, 8, 8), np.uint8), tiny_model)


def test_tokenize_file_reads_fsspec_urls(videos, tiny_model):
    import fsspec
    fsspec.filesystem("memory").pipe("/api/clip.mp4", (videos / "bikes-0.mp4").read_bytes())
    read = ReadOptions(size=(16, 16), max_frames=5)
    a = tokenize_file("memory:///api/clip.mp4", tiny_model, read)
    b = tokenize_file(f"file://{videos / 'bikes-0.mp4'}", tiny_model, read)
    assert torch.equal(a.codes, b.codes)
    with pytest.raises(ValueError, match="no such file"):
        tokenize_file("memory:///api/missing.mp4", tiny_model, read)


def test_model_resolver_uses_bundled_names(tiny_model, tmp_path, monkeypatch):
    assert resolve_model(tiny_model) == tiny_model
    fake = types.ModuleType("magtok.models.pretrained")
    def resolve_pretrained(name):     # the contract: a bundled name -> its folder; a folder -> itself
        if name == "magtok-test":
            return tiny_model
        if (tmp_path / name).is_dir() or __import__("os").path.isdir(name):
            return name
        raise FileNotFoundError(f"{name} is neither a folder nor a bundled name")

    fake.resolve_pretrained = resolve_pretrained
    monkeypatch.setitem(sys.modules, "magtok.models.pretrained", fake)
    assert resolve_model("magtok-test") == tiny_model
    assert load_model("magtok-test").id == load_model(tiny_model).id
    with pytest.raises(ValueError, match="does not exist"):
        resolve_model(tmp_path / "nope")
    monkeypatch.setitem(sys.modules, "magtok.models.pretrained", None)      # module missing: a path
    with pytest.raises(ValueError, match="does not exist"):
        resolve_model("magtok-test")


def test_option_errors_are_one_line_value_errors():
    for kw, msg in ((dict(fps=0), "fps=0: the frame rate must be positive"), (dict(max_frames=0), "max_frames=0"),
                    (dict(frames_policy="x"), "frames_policy='x'"), (dict(size=(8, 8), short_side=8), "not both")):
        with pytest.raises(ValueError, match=msg):
            ReadOptions(**kw)
    with pytest.raises(ValueError, match="chunk_latents=0"):
        ComputeOptions(chunk_latents=0)


def test_library_errors_name_parameters_not_flags(tiny_model):
    """The library names its parameters (``size=...``); only the command line speaks of ``--size``."""
    from magtok.pipeline import DatasetOptions, plan_geometry
    cases = [(lambda: ReadOptions(start=-1), "start=-1"), (lambda: ComputeOptions(chunk_latents=0), "chunk_latents=0"),
             (lambda: DatasetOptions(engine="spark"), "engine='spark'"),
             (lambda: DatasetOptions(rows_per_part=0), "rows_per_part=0"),
             (lambda: plan_geometry(32, 32, 2, size=(1, 1)), "size=(1, 1)"),
             (lambda: plan_geometry(32, 32, 2, short_side=1), "short_side=1"),
             (lambda: ComputeOptions(tile=15).tiles(2), "tile=15")]
    for make, name in cases:
        with pytest.raises(ValueError) as e:
            make()
        assert name in str(e.value) and "--" not in str(e.value), str(e.value)
    assert plan_geometry(32, 32, 2, size=(33, 40)).notes == ["size=(33, 40) rounded down to 32x40 (multiples of r_s=2)"]


def test_decode_workers_default_leaves_the_encoder_a_core(monkeypatch):
    """Half the cores, 1 to 4 (one decode thread beat two on 2 cores); an explicit value is kept."""
    from magtok.pipeline import DatasetOptions
    from magtok.pipeline.dataset import default_decode_workers
    assert [default_decode_workers(c) for c in (1, 2, 3, 4, 8, 64)] == [1, 1, 1, 2, 4, 4]
    monkeypatch.setattr("os.cpu_count", lambda: 6)
    assert DatasetOptions().decode_workers == 3 and DatasetOptions(decode_workers=5).decode_workers == 5
    with pytest.raises(ValueError, match="decode_workers=0"):
        DatasetOptions(decode_workers=0)


def test_cli_names_flags():
    from magtok.cli.common import flag_names
    assert flag_names("size=(33, 40) rounded down") == "--size 33 40 rounded down"
    assert flag_names("x exists; pass overwrite=True to replace it") == "x exists; pass --overwrite to replace it"
    assert flag_names("start=5 is past; target_fps=3 stays") == "--start 5 is past; target_fps=3 stays"
    assert flag_names("tile=8 and tile_overlap=2") == "--tile 8 and --tile-overlap 2"


def test_bad_input_of_issue_13_in_the_library(videos, tiny_model, tmp_path, monkeypatch):
    """The library raises ValueErrors (magtok.errors.InputError) for: an output that is its input,
    an fps above the source rate, a device the machine lacks; a broken model folder found while
    searching is skipped with a SkippedModelWarning."""
    import shutil

    from magtok.errors import InputError
    from magtok.pipeline import open_source
    from magtok.pipeline.model import MODEL_PATH_ENV, SkippedModelWarning, find_model, pick_device
    clip = tmp_path / "clip.mp4"
    shutil.copy(videos / "bikes-0.mp4", clip)
    read = ReadOptions(short_side=16, max_frames=3)
    r = tokenize_file(clip, tiny_model, read)
    with pytest.raises(InputError, match="would replace the tokenized video"):
        r.save(clip, overwrite=True)
    with pytest.raises(ValueError, match="would replace the video"):
        reconstruct(clip, clip, tiny_model, read, overwrite=True)
    with pytest.raises(ValueError, match=r"fps=1e\+06 is above the frame rate of .*clip.mp4 \(25 fps\)"):
        open_source(clip, 2, ReadOptions(fps=1e6))
    assert open_source(clip, 2, ReadOptions(fps=12.5)).frames == 7     # 13 frames at 25 fps -> 7 at 12.5
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InputError, match="CUDA is not available"):
        load_model(tiny_model, "cuda:0")
    assert pick_device("auto") == "cpu" and pick_device("cpu") == "cpu"
    from magtok.data import load_tokens
    tokens = r.save(tmp_path / "c.tokens")
    header = load_tokens(tokens).header
    header["extra"]["model"] = str(tmp_path / "gone")        # the recorded folder is gone: search the path
    zoo = tmp_path / "zoo"
    shutil.copytree(tiny_model, zoo / "a-broken")
    (zoo / "a-broken" / "model.safetensors").unlink()
    shutil.copytree(tiny_model, zoo / "b-good")
    monkeypatch.setenv(MODEL_PATH_ENV, str(zoo))
    with pytest.warns(SkippedModelWarning, match=f"skipped the model folder {zoo / 'a-broken'}"):
        m = find_model(header, tokens)
    assert m.path == (zoo / "b-good").resolve()
