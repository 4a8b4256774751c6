import os

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def rand_video(b=1, t=5, h=16, w=16, c=3):
    return torch.rand(b, c, t, h, w) * 2 - 1
