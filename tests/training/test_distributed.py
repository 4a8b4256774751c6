"""Two processes on gloo (CPU): ranks keep identical state and always agree on when to stop."""

import json
from pathlib import Path

import pytest

from magtok.training.checkpoints import list_checkpoints
from tests.training._common import run_two_processes

SCRIPT = Path(__file__).with_name("_ddp_script.py")
pytestmark = pytest.mark.slow


def _ranks(tmp_path):
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]


def test_two_processes_keep_identical_parameters_and_ema(tmp_path):
    res = run_two_processes(tmp_path, SCRIPT, "gan")
    assert res.returncode == 0, res.stderr[-3000:]
    r0, r1 = _ranks(tmp_path)
    assert r0["world"] == r1["world"] == 2
    for key in ("model", "ema", "disc", "val_psnr"):
        assert r0[key] == r1[key], f"{key} differs between ranks"
    assert r0["ema"] != r0["ema_init"]  # the EMA moved during training
    # every rank's RNG state is in the checkpoint (Accelerate save_state)
    last = list_checkpoints(tmp_path / "run" / "checkpoints")[-1]
    assert (last / "random_states_0.pkl").exists() and (last / "random_states_1.pkl").exists()


def test_skewed_start_with_a_time_budget_stops_all_ranks_at_the_same_step(tmp_path):
    # rank 0 starts training 1.5 s after rank 1 with a 3 s budget: decided per rank, rank 1 would wait
    # in the checkpoint barrier while rank 0 is in the DDP forward (a hang until the timeout)
    res = run_two_processes(tmp_path, SCRIPT, "skew", timeout=90, env={"MAGTOK_DEBUG_HANG": "80"})
    assert res.returncode == 0, res.stderr[-3000:]
    r0, r1 = _ranks(tmp_path)
    assert r0["step"] == r1["step"] > 0
    assert r0["model"] == r1["model"]
    ckpts = list_checkpoints(tmp_path / "run" / "checkpoints")
    assert [p.name for p in ckpts][-1] == f"step_{r0['step']:08d}"
    assert "time budget" in (tmp_path / "run" / "train.log").read_text()


def test_vq_dead_code_replacement_keeps_codebooks_identical_across_ranks(tmp_path):
    # every code is dead at every step, so every step replaces the whole codebook with encoder outputs;
    # ranks see different batches, so only rank 0's broadcast keeps their codebooks equal
    res = run_two_processes(tmp_path, SCRIPT, "vq")
    assert res.returncode == 0, res.stderr[-3000:]
    r0, r1 = _ranks(tmp_path)
    assert r0["codebook"] == r1["codebook"]
    assert r0["model"] == r1["model"] and r0["ema"] == r1["ema"]


def test_grad_accumulation_under_ddp_keeps_ranks_identical(tmp_path):
    # the first micro-batch runs under no_sync: if the last one did not all-reduce, ranks would diverge
    res = run_two_processes(tmp_path, SCRIPT, "accum")
    assert res.returncode == 0, res.stderr[-3000:]
    r0, r1 = _ranks(tmp_path)
    assert r0["step"] == r1["step"] == 2
    for key in ("model", "ema", "disc"):
        assert r0[key] == r1[key], f"{key} differs between ranks"
    assert r0["model"] != r0["ema_init"]


def test_only_rank_0_probes_the_data_folder_and_errors_reach_every_rank(tmp_path):
    from magtok.data import make_sample_folder

    folder = make_sample_folder(tmp_path / "sample", videos=("carphone_pristine",), images=False, link=True).train
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "clip.mp4").symlink_to(next(folder.glob("*.mp4")))
    (tmp_path / "data" / "broken.mp4").write_bytes(bytes(range(256)) * 40)
    res = run_two_processes(tmp_path, SCRIPT, "folder")
    assert res.returncode == 0, res.stderr[-3000:]
    r0, r1 = _ranks(tmp_path)
    assert r0["probes"] >= 2 and r1["probes"] == 0  # start-up does not grow with the number of ranks
    assert r0["skipped"] == r1["skipped"] == ["broken.mp4"] and r0["items"] == r1["items"] == 1
    assert r0["step"] == r1["step"] == 2 and r0["model"] == r1["model"]
    # an unusable folder: rank 0's error is every rank's error (no rank left waiting)
    for r in (0, 1):
        (tmp_path / f"rank{r}.json").unlink()
    (tmp_path / "empty").mkdir()
    res = run_two_processes(tmp_path, SCRIPT, "empty", timeout=90)
    assert res.returncode == 0, res.stderr[-3000:]
    r0, r1 = _ranks(tmp_path)
    assert r0["error"] == r1["error"] and "no media files" in r0["error"]
    assert r0["group_closed"] and r1["group_closed"]      # left together, no abort at exit
