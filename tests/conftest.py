import os

import pytest
import torch

# Under pytest-xdist every worker gets one thread (2 workers x 2 threads on 2 cores is many times
# slower for small convolutions); a plain run uses up to 2.
THREADS = 1 if os.environ.get("PYTEST_XDIST_WORKER") else max(1, min(2, os.cpu_count() or 1))
torch.set_num_threads(THREADS)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
    # `magtok train/demo --threads N` run in-process set the thread count for the whole worker; with 2
    # threads oneDNN may split a reduction differently for different shapes (chunk vs whole clip), which
    # tests of bit-exact equality must not inherit from an earlier test
    torch.set_num_threads(THREADS)


def rand_video(b=1, t=5, h=16, w=16, c=3):
    return torch.rand(b, c, t, h, w) * 2 - 1


@pytest.fixture
def cli(capsys):
    """Run ``magtok ...`` in-process: returns (exit code, stdout, stderr)."""
    from magtok.cli.main import main

    def run(*argv):
        capsys.readouterr()
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run
