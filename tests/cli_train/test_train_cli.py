"""`magtok train` and `magtok demo` from the command line."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from magtok.cli.demo import demo_train_config
from magtok.cli.main import main
from magtok.cli.train import load_train_config

REPO = Path(__file__).resolve().parents[2]


def test_configs_folder_recipes_load():
    for path in sorted((REPO / "configs").glob("*.yaml")):
        cfg = load_train_config(str(path), [])
        cfg.tokenizer_config()  # the preset exists and the overrides apply


def test_demo_yaml_mirrors_the_embedded_demo_recipe():
    from_yaml = load_train_config(str(REPO / "configs" / "demo.yaml"), []).to_dict()
    embedded = demo_train_config(Path("demo_out"), 7).to_dict()
    assert from_yaml == embedded


def test_overrides_and_unknown_keys(tmp_path):
    cfg = load_train_config(None, ["optim.lr=3e-4", "steps=5", "model=tiny"])
    assert cfg.optim.lr == 3e-4 and cfg.steps == 5 and cfg.model == "tiny"
    with pytest.raises(ValueError, match="lrr"):
        load_train_config(None, ["optim.lrr=1"])
    with pytest.raises(ValueError, match="key=value"):
        load_train_config(None, ["optim.lr"])


def test_train_cli_on_a_folder_of_real_clips(tmp_path, capsys):
    from magtok.data import make_sample_folder

    data = make_sample_folder(tmp_path / "data", videos=("carphone_pristine", "bikes"), images=False,
                              holdout=("bikes",))
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump({
        "model": "tiny", "output_dir": str(tmp_path / "run"), "steps": 4, "batch_size": 1,
        "log_every": 2, "val_every": 2, "checkpoint_every": 2,
        "data": {"train_dir": str(data.train), "val_dir": str(data.eval), "size": [16, 32], "val_clips": 1},
        "loss": {"perceptual": "none", "perceptual_weight": 0.0, "discriminator": "none"},
    }))
    assert main(["train", "--config", str(recipe)]) == 0
    assert (tmp_path / "run" / "model" / "model.safetensors").exists()
    assert "done at step 4" in capsys.readouterr().out
    # a second run into the same folder is refused, then resumed on request
    assert main(["train", "--config", str(recipe)]) == 0  # "auto": resumes a finished run, nothing to do
    assert main(["train", "--config", str(recipe), "steps=6", "--resume"]) == 0
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in lines) == 6


@pytest.mark.parametrize("args,message", [
    (["train", "--config", "nope.yaml"], "does not exist"),
    (["train", "model=tiny"], "train_dir is empty"),
    (["train", "model=tiny", "optim.learning_rate=1"], "learning_rate"),
])
def test_train_cli_errors_are_one_clear_line(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_demo_writes_every_promised_file(tmp_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "magtok.cli.main", "demo", "--out", str(out), "--minutes", "0.05",
           "--frames", "9", "--size", "32", "--threads", "1"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    for name in ("metrics.json", "side_by_side.mp4", "training_curves.png", "psnr_per_frame.png",
                 "run/model/model.safetensors", "magtok-small/metrics.json", "magtok-small/side_by_side.mp4",
                 "magtok-small/psnr_per_frame.png"):
        assert (out / name).exists(), name
    # magtok-small's held-out PSNR comes first, before any training output
    first = res.stdout.splitlines()[0]
    assert first.startswith("magtok demo: magtok-small reconstructs held-out bikes.mp4") and "PSNR" in first
    small = json.loads((out / "magtok-small" / "metrics.json").read_text())
    assert small["frames"] == 9 and small["psnr_mean"] > 15 and small["size"] == [32, 72]
    m = json.loads((out / "metrics.json").read_text())
    assert m["frames"] == 9 and len(m["psnr_per_frame"]) == 9 and m["psnr_mean"] > 5
    assert str(out / "side_by_side.mp4") in res.stdout
    # never overwrite without being asked
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert res.returncode == 2 and "--overwrite" in res.stderr


def test_demo_no_train_only_reconstructs(tmp_path):
    out = tmp_path / "demo"
    res = subprocess.run([sys.executable, "-m", "magtok.cli.main", "demo", "--out", str(out), "--no-train",
                          "--frames", "17", "--size", "64", "--threads", "1"],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["magtok-small"]
    m = json.loads((out / "magtok-small" / "metrics.json").read_text())
    assert m["model"] == "magtok-small" and m["frames"] == 17 and m["code_grid"] == [5, 16, 37]
    import math
    assert m["size"] == [64, 148]
    assert m["bits_per_pixel"] == pytest.approx(5 * 16 * 37 * math.log2(15360) / (17 * 64 * 148))
