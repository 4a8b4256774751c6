"""`magtok train` and signals: the first Ctrl-C / SIGTERM saves a checkpoint and stops, saying so;
the run then resumes from it; a second Ctrl-C exits at once."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from magtok.training.checkpoints import list_checkpoints

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from magtok.data import make_sample_folder

    return make_sample_folder(tmp_path_factory.mktemp("data"), videos=("carphone_pristine",), images=False,
                              link=True).train


def _recipe(tmp_path, data, steps=100_000):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump({
        "model": "tiny", "output_dir": str(tmp_path / "run"), "steps": steps, "batch_size": 1,
        "log_every": 1, "val_every": 100_000, "checkpoint_every": 100_000,
        "data": {"train_dir": str(data), "size": [16, 16]},
        "loss": {"perceptual": "none", "perceptual_weight": 0.0, "discriminator": "none"},
    }))
    return recipe


def _start(recipe, *extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "magtok.cli.main", "train", "--config", str(recipe),
                             "--threads", "1", "--log-with", "none", *extra],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)


def _wait_for_steps(proc, metrics: Path, n: int, timeout=120):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise AssertionError(f"training ended early: {proc.communicate()[1][-2000:]}")
        if metrics.exists() and len(metrics.read_text().splitlines()) >= n:
            return
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("training did not start in time")


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_saves_a_checkpoint_then_stops_and_the_run_resumes(tmp_path, data, sig, code):
    recipe = _recipe(tmp_path, data)
    proc = _start(recipe)
    _wait_for_steps(proc, tmp_path / "run" / "metrics.jsonl", 3)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-2000:]
    ckpts = list_checkpoints(tmp_path / "run" / "checkpoints")
    assert len(ckpts) == 1, err[-2000:]
    step = int(ckpts[0].name.split("_")[1])
    assert step >= 3
    assert "saving a checkpoint" in err and str(ckpts[0]) in err and "--resume" in err
    assert "Traceback" not in err
    # and the run continues from there
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in rows) == step
    res = subprocess.run([sys.executable, "-m", "magtok.cli.main", "train", "--config", str(recipe), "--resume",
                          "--threads", "1", "--log-with", "none", f"steps={step + 2}"],
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300,
                         cwd=REPO)
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"resumed from checkpoint {ckpts[0]} at step {step}" in res.stderr
    assert f"steps 100000 -> {step + 2}" in res.stderr  # the change is stated
    assert f"done at step {step + 2}" in res.stdout


def test_a_second_ctrl_c_exits_at_once(tmp_path, data):
    proc = _start(_recipe(tmp_path, data))
    _wait_for_steps(proc, tmp_path / "run" / "metrics.jsonl", 2)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    t0 = time.time()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert time.time() - t0 < 30
    assert "interrupted" in err


def test_the_signal_handler_itself(tmp_path):
    """First signal: a request (flag + message); a second Ctrl-C: KeyboardInterrupt at once."""
    from magtok.training.trainer import Trainer

    t = Trainer.__new__(Trainer)
    t._signal, t.step, t._old_handlers = None, 7, {}

    class _Log:
        lines = []

        def warning(self, m):
            self.lines.append(m)

    t.logger = _Log()
    t._on_signal(signal.SIGINT, None)
    assert t._signal == signal.SIGINT and "finishing step 8" in t.logger.lines[0]
    # a launcher forwarding the stop as SIGTERM does not cut the checkpoint short
    t._on_signal(signal.SIGTERM, None)
    assert t._signal == signal.SIGINT and "already stopping" in t.logger.lines[1]
    with pytest.raises(KeyboardInterrupt):
        t._on_signal(signal.SIGINT, None)
