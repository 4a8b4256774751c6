"""Access to the peer implementation, magvit2-pytorch 0.5.1, for parity tests and benchmarks.

The peer is installed with ``make peer`` (``scripts/install_peer.sh``) into a plain folder
(``<repo>/.peer`` by default, or ``$MAGTOK_PEER_DIR``) with ``pip install --no-deps --target``,
so that it shares the project's CPU torch instead of pulling a CUDA build.

The peer imports ``torchvision`` and ``cv2`` at import time although the tokenizer only needs
them for the VGG perceptual loss (``torchvision.models.vgg16``) and for the video file helpers
of its data/trainer modules. Neither is installed here (the PyPI torchvision does not import
beside the CPU torch build), so :func:`import_peer` registers small stub modules for them,
but only when the real ones are not importable. ``torchvision.models.VGG16_Weights`` is an
enum with ``DEFAULT``; ``torchvision.transforms.ToPILImage`` / ``ToTensor`` are small working
versions (the peer trainer writes its validation samples as GIFs with them); every other
stubbed callable (``vgg16``, ``cv2.VideoCapture``, ``transforms.Resize(...)`` when applied, ...)
raises a clear ``RuntimeError`` when it is actually used.

Usage::

    from magtok.testing.peer import import_peer, build_peer_tokenizer, patch_peer_time_padding
    m2p = import_peer()                        # the magvit2_pytorch module
    tok = build_peer_tokenizer(image_size=32, layers=('residual', 'compress_time'),
                               codebook_size=2**8)
    patch_peer_time_padding(tok, left=1)       # intended causal frame grouping
"""

from __future__ import annotations

import enum
import importlib
import os
import sys
import types
from pathlib import Path
from typing import Any

__all__ = [
    "PEER_VERSION",
    "default_peer_dir",
    "peer_dir",
    "peer_available",
    "import_peer",
    "install_stubs",
    "build_peer_tokenizer",
    "patch_peer_time_padding",
    "peer_time_paddings",
]

PEER_VERSION = "0.5.1"
REPO_ROOT = Path(__file__).resolve().parents[2]
_STUB_ATTR = "__magtok_stub__"


def default_peer_dir() -> Path:
    """``<repo>/.peer``: where ``make peer`` installs the peer."""
    return REPO_ROOT / ".peer"


def peer_dir(path: str | os.PathLike | None = None) -> Path:
    """The peer folder: ``path`` if given, else ``$MAGTOK_PEER_DIR``, else ``<repo>/.peer``."""
    if path is not None:
        return Path(path).expanduser().resolve()
    env = os.environ.get("MAGTOK_PEER_DIR")
    if env:
        return Path(env).expanduser().resolve()
    return default_peer_dir()


def _installed(folder: Path) -> bool:
    return (folder / "magvit2_pytorch" / "__init__.py").is_file()


def peer_available(path: str | os.PathLike | None = None) -> bool:
    """True if the peer can be imported (installed in the peer folder, or already importable).

    Cheap: only checks files (plus a module already imported), does not import the peer.
    """
    if "magvit2_pytorch" in sys.modules:
        return True
    return _installed(peer_dir(path))


# --------------------------------------------------------------------------- stubs


def _unavailable(qualname: str, why: str):
    def fn(*args: Any, **kwargs: Any):
        raise RuntimeError(
            f"{qualname} is a magtok stub: {why}. magtok uses the peer (magvit2-pytorch) without "
            "torchvision/opencv; construct it with perceptual_loss_weight=0 (no VGG) and do not use "
            "its video file helpers."
        )

    fn.__name__ = qualname.rsplit(".", 1)[-1]
    fn.__qualname__ = qualname
    return fn


class _StubCallableFactory:
    """Placeholder for an attribute of a stubbed module (e.g. ``cv2.VideoCapture``):
    referencing it works, calling it raises. With ``constructible=True`` (the
    ``torchvision.transforms`` classes, which the peer instantiates at import time as default
    arguments) calling it returns an inert object that raises only when applied."""

    def __init__(self, qualname: str, why: str, constructible: bool = False):
        self._qualname = qualname
        self._why = why
        self._constructible = constructible

    def __call__(self, *args: Any, **kwargs: Any):
        if self._constructible:
            return _StubCallableFactory(f"{self._qualname}(...)", self._why)
        _unavailable(self._qualname, self._why)()

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _StubCallableFactory(f"{self._qualname}.{name}", self._why)

    def __repr__(self) -> str:
        return f"<magtok stub {self._qualname}>"


class _StubModule(types.ModuleType):
    """A module whose unknown attributes are placeholders that raise when called."""

    def __init__(self, name: str, why: str, constructible: bool = False):
        super().__init__(name, doc=f"magtok stub for {name}: {why}")
        setattr(self, _STUB_ATTR, True)
        self.__file__ = None
        self.__path__ = []  # a package, so that submodule imports resolve through sys.modules
        self._why = why
        self._constructible = constructible

    def __getattr__(self, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _StubCallableFactory(f"{self.__name__}.{attr}", self._why, self._constructible)


class _ToPILImage:
    """Minimal ``torchvision.transforms.ToPILImage`` for (C, H, W) tensors with 1, 3 or 4
    channels (floats in [0, 1] or uint8): enough for the peer trainer's validation GIFs.
    Floats are clamped to [0, 1] before the conversion to bytes (torchvision does not clamp)."""

    _MODES = {1: "L", 3: "RGB", 4: "RGBA"}

    def __init__(self, mode: str | None = None):
        self.mode = mode

    def __call__(self, pic):
        import numpy as np
        import torch
        from PIL import Image

        if pic.ndim == 2:
            pic = pic.unsqueeze(0)
        if pic.is_floating_point():
            pic = pic.detach().clamp(0, 1).mul(255).round().to(torch.uint8)
        arr = pic.cpu().permute(1, 2, 0).numpy().astype(np.uint8)
        mode = self.mode or self._MODES.get(arr.shape[-1])
        if mode is None:
            raise ValueError(f"ToPILImage (magtok stub): {arr.shape[-1]} channels are not supported")
        if mode == "L":
            arr = arr[..., 0]
        return Image.fromarray(arr, mode=mode)

    def __repr__(self) -> str:
        return "ToPILImage(magtok stub)"


class _ToTensor:
    """Minimal ``torchvision.transforms.ToTensor``: PIL image / HxWxC uint8 array -> float
    (C, H, W) tensor in [0, 1]."""

    def __call__(self, pic):
        import numpy as np
        import torch

        arr = np.array(pic, copy=True)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        t = torch.from_numpy(arr).permute(2, 0, 1).contiguous()
        return t.float().div(255) if t.dtype == torch.uint8 else t.float()

    def __repr__(self) -> str:
        return "ToTensor(magtok stub)"


class VGG16_Weights(enum.Enum):
    """Stand-in for ``torchvision.models.VGG16_Weights`` (only used as a default argument)."""

    IMAGENET1K_V1 = "IMAGENET1K_V1"
    IMAGENET1K_FEATURES = "IMAGENET1K_FEATURES"
    DEFAULT = "IMAGENET1K_V1"  # an alias of IMAGENET1K_V1, as in torchvision


def _make_torchvision_stub() -> dict[str, types.ModuleType]:
    why = "torchvision is not importable in this environment"
    tv = _StubModule("torchvision", why)
    tv.__version__ = "0.0.0+magtok.stub"
    models = _StubModule("torchvision.models", why)
    models.VGG16_Weights = VGG16_Weights
    models.vgg16 = _unavailable(
        "torchvision.models.vgg16",
        "torchvision is not importable here, so the VGG16 perceptual loss is unavailable "
        "(pass perceptual_loss_weight=0 or an explicit vgg= module)",
    )
    transforms = _StubModule("torchvision.transforms", why, constructible=True)
    transforms.ToPILImage = _ToPILImage  # working minimal versions: the trainer's GIF samples
    transforms.ToTensor = _ToTensor
    utils = _StubModule("torchvision.utils", why)
    io = _StubModule("torchvision.io", why)
    tv.models, tv.transforms, tv.utils, tv.io = models, transforms, utils, io
    return {m.__name__: m for m in (tv, models, transforms, utils, io)}


def _make_cv2_stub() -> dict[str, types.ModuleType]:
    cv2 = _StubModule("cv2", "opencv (cv2) is not importable in this environment")
    cv2.__version__ = "0.0.0+magtok.stub"
    return {"cv2": cv2}


def _importable(name: str) -> bool:
    """Try to really import ``name``; on any failure remove its half-imported modules."""
    if name in sys.modules:
        return not getattr(sys.modules[name], _STUB_ATTR, False)
    before = set(sys.modules)
    try:
        importlib.import_module(name)
        return True
    except Exception:  # ImportError, but also e.g. RuntimeError from a mismatched torchvision
        for mod in set(sys.modules) - before:
            if mod == name or mod.startswith(name + "."):
                sys.modules.pop(mod, None)
        return False


def install_stubs() -> list[str]:
    """Register stub ``torchvision`` and ``cv2`` modules where the real ones do not import.

    Returns the names of the stubbed top-level modules (empty if both real ones import).
    """
    stubbed = []
    for name, factory in (("torchvision", _make_torchvision_stub), ("cv2", _make_cv2_stub)):
        if _importable(name):
            continue
        for modname, mod in factory().items():
            sys.modules.setdefault(modname, mod)
        stubbed.append(name)
    return stubbed


# --------------------------------------------------------------------------- import


def import_peer(path: str | os.PathLike | None = None) -> types.ModuleType:
    """Import and return the ``magvit2_pytorch`` module (the peer, version 0.5.1).

    Puts the peer folder (``path``, else ``$MAGTOK_PEER_DIR``, else ``<repo>/.peer``) at the
    front of ``sys.path`` and registers stub ``torchvision``/``cv2`` modules if the real ones
    are not importable. Raises ``ImportError`` (with the fix: ``make peer``) if the peer is not
    installed there.
    """
    if "magvit2_pytorch" in sys.modules:
        return sys.modules["magvit2_pytorch"]
    folder = peer_dir(path)
    if not _installed(folder):
        raise ImportError(
            f"magvit2-pytorch {PEER_VERSION} (the peer) is not installed in {folder}: run `make peer` "
            f"(or `bash scripts/install_peer.sh <python> {folder}`), or set MAGTOK_PEER_DIR"
        )
    entry = str(folder)
    if entry not in sys.path:
        sys.path.insert(0, entry)
    importlib.invalidate_caches()
    install_stubs()
    try:
        module = importlib.import_module("magvit2_pytorch")
    except ImportError as e:
        raise ImportError(
            f"the peer in {folder} does not import ({type(e).__name__}: {e}); reinstall it with "
            "`rm -rf .peer && make peer`"
        ) from e
    version = getattr(importlib.import_module("magvit2_pytorch.version"), "__version__", None)
    if version != PEER_VERSION:
        raise ImportError(f"expected magvit2-pytorch {PEER_VERSION}, found {version} in {module.__file__}")
    return module


# --------------------------------------------------------------------------- helpers


def build_peer_tokenizer(path: str | os.PathLike | None = None, **kwargs: Any):
    """Construct ``magvit2_pytorch.VideoTokenizer`` usable on CPU without torchvision.

    Defaults (overridable through ``kwargs``): ``perceptual_loss_weight=0`` (no VGG, so no
    torchvision weights), ``use_gan=False`` (no adversarial loss), ``flash_attn=False``
    (plain attention math, no ``scaled_dot_product_attention`` flash kernels),
    ``channels=3``. Pass ``image_size`` and ``layers`` plus ``codebook_size`` (LFQ) or
    ``fsq_levels=...`` (FSQ; ``fsq_levels`` alone implies ``use_fsq=True``).

    The peer always builds its image ``Discriminator`` (``self.discr``), even with
    ``use_gan=False`` where it is never run; by default its width follows the encoder's last
    dim up to 512 channels (32M parameters, 130 MB, at image_size=32 and a 128-dim latent).
    So, with ``use_gan=False`` and no ``discr_kwargs``, a minimal discriminator (~2k
    parameters) is built instead, which keeps construction time and memory comparable with
    magtok's tokenizer. The tokenizer's own ``parameters()`` excludes the discriminator anyway.
    """
    m2p = import_peer(path)
    kwargs.setdefault("perceptual_loss_weight", 0.0)
    kwargs.setdefault("use_gan", False)
    kwargs.setdefault("flash_attn", False)
    if not kwargs["use_gan"] and kwargs.get("discr_kwargs") is None:
        kwargs["discr_kwargs"] = dict(
            dim=1,
            image_size=kwargs.get("image_size"),
            channels=kwargs.get("channels", 3),
            max_dim=4,
            attn_heads=1,
            attn_dim_head=4,
            linear_attn_heads=1,
            linear_attn_dim_head=4,
            ff_mult=1,
        )
    if kwargs.get("fsq_levels") is not None:
        kwargs.setdefault("use_fsq", True)
    if "layers" in kwargs:
        kwargs["layers"] = tuple(kwargs["layers"])
    if kwargs.get("fsq_levels") is not None:
        kwargs["fsq_levels"] = list(kwargs["fsq_levels"])
    return m2p.VideoTokenizer(**kwargs)


def _time_downsamplers(peer_tokenizer) -> list:
    m2p = sys.modules.get("magvit2_pytorch.magvit2_pytorch")
    cls = getattr(m2p, "TimeDownsample2x", None)
    return [
        m
        for m in peer_tokenizer.modules()
        if (cls is not None and isinstance(m, cls)) or type(m).__name__ == "TimeDownsample2x"
    ]


def peer_time_paddings(peer_tokenizer) -> list[tuple[int, int]]:
    """The ``time_causal_padding`` of every ``TimeDownsample2x`` of a peer tokenizer."""
    return [tuple(m.time_causal_padding) for m in _time_downsamplers(peer_tokenizer)]


def patch_peer_time_padding(peer_tokenizer, left: int = 1):
    """Set every ``TimeDownsample2x.time_causal_padding`` of the peer to ``(left, 0)``.

    The peer pads ``(kernel_size - 1, 0) = (2, 0)`` before its stride-2, kernel-3 temporal conv.
    Together with the ``time_downsample_factor - 1`` zero frames that ``encode`` prepends, that
    shifts every latent one step into the past: latent 0 sees only padding, latent ``j`` ends at
    frame ``r_t * j - (r_t - 1)``, and the last ``r_t - 1`` frames reach no latent at all.
    ``left=1`` gives the intended grouping: z0 <- frame 0, z_j <- frames ``(j-1)*r_t+1 .. j*r_t``
    (the same output length as the peer's padding). Returns the tokenizer, patched in place.
    """
    downs = _time_downsamplers(peer_tokenizer)
    if not downs:
        raise ValueError("the peer tokenizer has no TimeDownsample2x layer ('compress_time') to patch")
    for m in downs:
        m.time_causal_padding = (int(left), 0)
    return peer_tokenizer
