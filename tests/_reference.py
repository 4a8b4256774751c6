"""Reference outputs of the original JAX models (LPIPS, I3D, Frechet distance), kept in
<repo>/../shared/reference; tests/nets and tests/metrics compare against them."""

from pathlib import Path

import numpy as np
import pytest

# tests/_reference.py -> parents: tests, <repo>, <repo's parent>
REFERENCE_DIR = Path(__file__).resolve().parents[2] / "shared" / "reference"


def load_reference(name: str) -> dict:
    """The arrays of shared/reference/<name>, or skip the test when the folder is absent."""
    path = REFERENCE_DIR / name
    if not path.is_file():
        pytest.skip(f"reference outputs not found at {path} (expected the shared/ folder beside the repo)")
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}
