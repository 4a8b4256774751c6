"""The peer environment: magvit2-pytorch 0.5.1 installed by ``make peer`` into ``.peer/``.

Checks that the peer imports beside the CPU torch (with torchvision / cv2 stubs), that its
tokenizer runs on CPU with LFQ and FSQ, and documents (and fixes) its temporal padding bug.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from magtok.testing.peer import (
    PEER_VERSION,
    build_peer_tokenizer,
    import_peer,
    patch_peer_time_padding,
    peer_available,
    peer_dir,
    peer_time_paddings,
)

REPO = Path(__file__).resolve().parents[1]

ALL_LAYERS = (
    "residual",
    "compress_space",
    "compress_time",
    "attend_space",
    "attend_time",
    "linear_attend_space",
    "gateloop_time",
    ("consecutive_residual", 2),
)

needs_peer = [
    pytest.mark.peer,
    pytest.mark.skipif(
        not peer_available(),
        reason=f"magvit2-pytorch {PEER_VERSION} is not installed in {peer_dir()}: run `make peer`",
    ),
]


def _apply(fn):
    """Mark a test as needing the peer (skipped with the fix when it is not installed)."""
    for mark in needs_peer:
        fn = mark(fn)
    return fn


@pytest.fixture(scope="module")
def m2p():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the peer's torch.cuda.amp.autocast FutureWarning
        return import_peer()


def _dependency_map(tok, frames: int, size: int = 8) -> list[list[int]]:
    """For every latent frame j of ``tok.encode`` (pre-quantization), the input frames whose
    gradient is nonzero."""
    video = torch.randn(1, 3, frames, size, size, requires_grad=True)
    z = tok.encode(video)
    deps = []
    for j in range(z.shape[2]):
        (g,) = torch.autograd.grad(z[:, :, j].sum(), video, retain_graph=True)
        per_frame = g.abs().sum(dim=(0, 1, 3, 4))
        deps.append([i for i in range(frames) if per_frame[i] > 0])
    return deps


# --------------------------------------------------------------------------- no peer needed


def test_import_peer_missing_folder_says_make_peer(tmp_path):
    """Fresh interpreter, so an already imported peer does not hide the error."""
    code = (
        "from magtok.testing.peer import import_peer, peer_available\n"
        f"assert not peer_available({str(tmp_path)!r})\n"
        "try:\n"
        f"    import_peer({str(tmp_path)!r})\n"
        "except ImportError as e:\n"
        "    print(e)\n"
        "else:\n"
        "    raise SystemExit('no ImportError')\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert "make peer" in out.stdout and str(tmp_path) in out.stdout


def test_peer_dir_env_override(monkeypatch, tmp_path):
    monkeypatch.setenv("MAGTOK_PEER_DIR", str(tmp_path))
    assert peer_dir() == tmp_path.resolve()
    monkeypatch.delenv("MAGTOK_PEER_DIR")
    assert peer_dir() == REPO / ".peer"


# --------------------------------------------------------------------------- peer


@_apply
def test_peer_imports(m2p):
    import magvit2_pytorch.trainer as trainer
    import magvit2_pytorch.version as version

    assert version.__version__ == PEER_VERSION
    assert hasattr(m2p, "VideoTokenizer") and hasattr(trainer, "VideoTokenizerTrainer")
    # the peer comes from the peer folder, not from the venv
    assert Path(m2p.__file__).resolve().is_relative_to(peer_dir())
    # torchvision / cv2: real modules if importable, else the magtok stubs
    tv = sys.modules["torchvision"]
    if getattr(tv, "__magtok_stub__", False):
        from torchvision.models import VGG16_Weights, vgg16

        assert VGG16_Weights.DEFAULT is VGG16_Weights.IMAGENET1K_V1
        with pytest.raises(RuntimeError, match="perceptual_loss_weight=0"):
            vgg16(weights=VGG16_Weights.DEFAULT)
        with pytest.raises(RuntimeError, match="perceptual_loss_weight=0"):
            build_peer_tokenizer(image_size=8, layers=("residual",), codebook_size=16, perceptual_loss_weight=0.1)
        # the two working transforms (used by the peer trainer for its GIF samples)
        from torchvision.transforms import Resize, ToPILImage, ToTensor

        x = torch.rand(3, 6, 5)
        img = ToPILImage()(x)
        assert img.size == (5, 6) and img.mode == "RGB"
        assert torch.allclose(ToTensor()(img), x, atol=1 / 255)
        with pytest.raises(RuntimeError, match="magtok stub"):
            Resize(8)(img)
        import cv2

        with pytest.raises(RuntimeError, match="magtok stub"):
            cv2.VideoCapture("x.mp4")


@_apply
@pytest.mark.parametrize(
    "quantizer, n_codes, dtype",
    [
        (dict(codebook_size=2**8), 2**8, torch.int64),
        (dict(fsq_levels=(8, 5, 5, 5)), 8 * 5 * 5 * 5, torch.int32),
    ],
    ids=["lfq-2^8", "fsq-8555"],
)
def test_peer_tokenizer_forward_cpu(m2p, quantizer, n_codes, dtype):
    torch.manual_seed(0)
    tok = build_peer_tokenizer(image_size=32, init_dim=16, layers=ALL_LAYERS, **quantizer)
    assert isinstance(tok, m2p.VideoTokenizer)
    assert tok.vgg is None and not tok.use_gan
    video = torch.randn(1, 3, 5, 32, 32)
    codes = tok.tokenize(video)
    # 1 + (5 - 1) / 2 latent frames, 32 / 2 spatial
    assert codes.shape == (1, 3, 16, 16)
    assert codes.dtype == dtype
    assert 0 <= int(codes.min()) and int(codes.max()) < n_codes
    z = tok.encode(video)
    assert z.shape[:3] == (1, 64, 3) and z.shape[-2:] == (16, 16)
    tok.train()
    loss, _ = tok(video, return_loss=True)
    assert torch.isfinite(loss)
    loss.backward()


@_apply
def test_peer_time_padding_bug_and_patch(m2p):
    """Which input frames each pre-quantization latent of the peer depends on (nonzero gradient
    of ``encode(video)[:, :, j].sum()``), 17 frames, two 'compress_time' layers (r_t = 4).

    ``encode`` prepends r_t - 1 = 3 zero frames, the 7-frame causal conv_in follows, and each
    TimeDownsample2x pads ``time_causal_padding`` on the left before its kernel-3 stride-2 conv.

    Measured, peer as shipped (padding (2, 0) per TimeDownsample2x), layers
    ('compress_time', 'compress_time')::

        z0: no frame at all (zero gradient w.r.t. every input frame: it sees only padding)
        z1: frames 0..1   z2: 0..5   z3: 0..9   z4: 1..13    (z_j ends at frame 4j - 3)
        frames 14, 15, 16 reach no latent

    After ``patch_peer_time_padding(tok, left=1)`` (padding (1, 0), same number of latents)::

        z0: frame 0 only   z1: 0..4   z2: 0..8   z3: 0..12   z4: 4..16   (z_j ends at 4j)
        every frame reaches a latent, and none depends on a later frame than 4j

    (z4 starts at 4 because conv_in + two stride-2 convs see 13 frames.) With causal temporal
    mixing in between (('compress_time', 'attend_time', 'compress_time', 'gateloop_time')) the
    patched z_j depends on exactly frames 0..4j, and the unpatched one on 0..4j-3 (z0 on none).
    """
    torch.manual_seed(0)
    frames = 17

    def make(layers):
        return build_peer_tokenizer(image_size=8, init_dim=8, layers=layers, codebook_size=2**4)

    layers = ("compress_time", "compress_time")

    # ---- as shipped
    tok = make(layers)
    assert peer_time_paddings(tok) == [(2, 0), (2, 0)]
    deps = _dependency_map(tok, frames)
    assert len(deps) == 5
    assert deps[0] == []  # the first latent ignores every input frame
    assert [max(d) for d in deps[1:]] == [1, 5, 9, 13]
    # a 13-frame receptive field (7-frame conv_in + two kernel-3 stride-2 convs) ending at 4j - 3
    assert deps[1:] == [list(range(max(0, 4 * j - 15), 4 * j - 3 + 1)) for j in range(1, 5)]
    reached = set().union(*map(set, deps))
    assert sorted(set(range(frames)) - reached) == [14, 15, 16]

    # ---- patched: the intended grouping z0 <- frame 0, z_j <- frames 4(j-1)+1 .. 4j
    tok = patch_peer_time_padding(make(layers), left=1)
    assert peer_time_paddings(tok) == [(1, 0), (1, 0)]
    deps = _dependency_map(tok, frames)
    assert len(deps) == 5
    assert deps[0] == [0]
    assert deps == [list(range(max(0, 4 * j - 12), 4 * j + 1)) for j in range(5)]
    assert set().union(*map(set, deps)) == set(range(frames))

    # ---- with causal temporal mixing the patched latent j sees exactly frames 0..4j
    mixing = ("compress_time", "attend_time", "compress_time", "gateloop_time")
    deps = _dependency_map(make(mixing), frames)
    assert deps == [[]] + [list(range(0, 4 * j - 3 + 1)) for j in range(1, 5)]
    deps = _dependency_map(patch_peer_time_padding(make(mixing), left=1), frames)
    assert deps == [list(range(0, 4 * j + 1)) for j in range(5)]


@_apply
def test_patch_needs_compress_time(m2p):
    tok = build_peer_tokenizer(image_size=8, init_dim=8, layers=("residual",), codebook_size=16)
    with pytest.raises(ValueError, match="compress_time"):
        patch_peer_time_padding(tok)


@_apply
@pytest.mark.slow
def test_peer_trainer_runs_on_cpu(m2p, tmp_path):
    """The peer's VideoTokenizerTrainer (accelerate, ema-pytorch, pytorch-warmup) trains two
    steps on CPU from an in-memory dataset, including its step-0 validation GIF."""
    from torch.utils.data import Dataset

    class Videos(Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):
            return torch.rand(3, 5, 16, 16, generator=torch.Generator().manual_seed(i))

    torch.manual_seed(0)
    tok = build_peer_tokenizer(image_size=16, init_dim=8, layers=("residual", "compress_time"), codebook_size=2**4)
    trainer = m2p.VideoTokenizerTrainer(
        tok,
        dataset=Videos(),
        batch_size=2,
        num_train_steps=2,
        valid_frac=0.25,
        num_frames=5,
        warmup_steps=1,
        validate_every_step=1000,
        checkpoint_every_step=1000,
        checkpoints_folder=str(tmp_path / "checkpoints"),
        results_folder=str(tmp_path / "results"),
    )
    trainer.train()
    assert (tmp_path / "results" / "sampled.0.gif").is_file()
