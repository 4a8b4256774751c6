"""Reference outputs of the original JAX models (LPIPS, I3D, Frechet distance), kept in the
repository at tests/data/reference (README.md there says how they were made); tests/nets and
tests/metrics compare against them. They ship with every clone, so a missing or altered file is a
test failure, never a skip."""

import hashlib
from pathlib import Path

import numpy as np
import pytest

REFERENCE_DIR = Path(__file__).resolve().parent / "data" / "reference"

# sha256 of the files as computed (copied from the shared/reference folder of the original run)
SHA256 = {
    "fvd_ref.npz": "bc4929253ab514e72d373e06c04511293ab21a65bfc6fbef4637e374c8a4ba05",
    "i3d_ref.npz": "b5a7ce37220274839bbcb34727e16a6eb7791c0f23bc5cbe79fc99d094da8f39",
    "lpips_ref.npz": "160f0aa0b875666d44981b4cf74ca14a87a91986db824b47207ec50d6cf76250",
}


def load_reference(name: str) -> dict:
    """The arrays of tests/data/reference/<name>; fails the test when the file is missing or altered."""
    path = REFERENCE_DIR / name
    if name not in SHA256:
        pytest.fail(f"unknown reference file {name!r}; the known ones are {', '.join(sorted(SHA256))}")
    if not path.is_file():
        pytest.fail(f"reference outputs not found at {path}: restore tests/data/reference from git "
                    f"(git checkout -- tests/data/reference)")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != SHA256[name]:
        pytest.fail(f"{path} is altered (sha256 {digest[:12]}..., expected {SHA256[name][:12]}...; a Git LFS "
                    f"pointer or a text conversion?): restore it (git checkout -- tests/data/reference/{name})")
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}
