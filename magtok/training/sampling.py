"""Deterministic, resumable, rank-sharded batches.

The batch for optimizer step ``s`` (micro-batch ``m``) on rank ``r`` is a pure function of
(seed, s, m, r): indices come from a per-epoch permutation, and every item carries its own seed so
random crops do not depend on worker scheduling. Resuming at step ``s`` therefore reproduces the
uninterrupted run's data exactly, and no data position has to be replayed.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


class SeededItems(Dataset):
    """Item ``(source, index, seed)`` is ``datasets[source][index]`` produced with all global RNGs
    seeded by ``seed`` (and restored afterwards, so the caller's random streams are untouched)."""

    def __init__(self, *datasets: Dataset):
        self.datasets = datasets

    def __len__(self) -> int:
        return sum(len(d) for d in self.datasets)

    def __getitem__(self, key):
        source, index, seed = key
        states = random.getstate(), np.random.get_state(), torch.get_rng_state()
        try:
            random.seed(seed)
            np.random.seed(seed % 2**32)
            torch.manual_seed(seed)
            return self.datasets[source][index]
        finally:
            random.setstate(states[0])
            np.random.set_state(states[1])
            torch.set_rng_state(states[2])


class StepBatchSampler(Sampler):
    """Yields lists of (source, index, seed) for steps ``start_step`` .. ``total_steps - 1``.

    ``micro_batches`` lists per step (gradient accumulation), each of ``batch_size`` items, for
    rank ``rank`` of ``world``. An epoch is one pass over a permutation of the dataset. With
    ``image_every`` = k > 0 and ``n_images`` > 0, every k-th step draws from the image dataset
    (source 1) instead, so video and image batches never mix shapes.
    """

    def __init__(self, n: int, batch_size: int, total_steps: int, start_step: int = 0, micro_batches: int = 1,
                 rank: int = 0, world: int = 1, seed: int = 0, n_images: int = 0, image_every: int = 0):
        if n == 0:
            raise ValueError("the dataset is empty")
        self.n_images, self.image_every = n_images, image_every
        self.n, self.batch_size, self.total_steps = n, batch_size, total_steps
        self.start_step, self.micro_batches = start_step, micro_batches
        self.rank, self.world, self.seed = rank, world, seed
        self._perms: dict[int, torch.Tensor] = {}

    def _perm(self, source: int, n: int, epoch: int) -> torch.Tensor:
        if (source, epoch) not in self._perms:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch * 2 + source)
            self._perms = {k: v for k, v in self._perms.items() if k[0] != source}
            self._perms[(source, epoch)] = torch.randperm(n, generator=g)
        return self._perms[(source, epoch)]

    def is_image_step(self, step: int) -> bool:
        return self.n_images > 0 and self.image_every > 0 and step % self.image_every == self.image_every - 1

    def batch(self, step: int, micro: int) -> list[tuple[int, int, int]]:
        source = 1 if self.is_image_step(step) else 0
        n = self.n_images if source else self.n
        per_step = self.batch_size * self.world * self.micro_batches
        first = step * per_step + (micro * self.world + self.rank) * self.batch_size
        out = []
        for k in range(first, first + self.batch_size):
            epoch, pos = divmod(k, n)
            out.append((source, int(self._perm(source, n, epoch)[pos]), (self.seed * 7_919 + k * 2 + source) % 2**62))
        return out

    def __iter__(self):
        for step in range(self.start_step, self.total_steps):
            for micro in range(self.micro_batches):
                yield self.batch(step, micro)

    def __len__(self) -> int:
        return (self.total_steps - self.start_step) * self.micro_batches
