import os

import pytest
import torch

# Under pytest-xdist every worker gets one thread (2 workers x 2 threads on 2 cores is many times
# slower for small convolutions); a plain run uses up to 2.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def rand_video(b=1, t=5, h=16, w=16, c=3):
    return torch.rand(b, c, t, h, w) * 2 - 1
