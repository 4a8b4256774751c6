"""Tests of magtok.data; helpers shared by the test modules."""

import numpy as np


def smooth_clip(t=8, h=32, w=48, seed=0):
    """A smooth, moving uint8 (T, H, W, 3) clip that H.264 compresses well (small round-trip error)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, 3)
    frames = []
    for i in range(t):
        chans = [127.5 + 80 * np.sin(xx / 20.0 + yy / 27.0 + 0.2 * i + p) for p in phase]
        frames.append(np.stack(chans, -1))
    return np.clip(np.stack(frames), 0, 255).round().astype(np.uint8)
