"""Tests of magtok.nets. Reference outputs of the original JAX models live in <repo>/../shared/reference."""

from pathlib import Path

import numpy as np
import pytest

# tests/nets/__init__.py -> parents: nets, tests, <repo>, <repo's parent>
REFERENCE_DIR = Path(__file__).resolve().parents[3] / "shared" / "reference"


def load_reference(name: str) -> dict:
    """The arrays of shared/reference/<name>, or skip the test when the folder is absent."""
    path = REFERENCE_DIR / name
    if not path.is_file():
        pytest.skip(f"reference outputs not found at {path} (expected the shared/ folder beside the repo)")
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}
