"""Honest resume: exact continuation, stated and recorded changes, refused unsafe ones, legacy
checkpoints, exported models never replaced in place, --overwrite starts clean."""

import json

import pytest
import torch

from magtok import VideoTokenizer
from magtok.errors import ResumeError, UserError
from magtok.training import Trainer
from magtok.training.checkpoints import list_checkpoints, rng_state, save_legacy_checkpoint
from tests.training._common import ClipDataset, real_clip, tiny_config


@pytest.fixture(scope="module")
def clip():
    return real_clip(frames=9)


def _same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_safe_overrides_apply_are_stated_and_recorded(tmp_path, clip):
    data = ClipDataset(clip, n=4)
    Trainer(tiny_config(tmp_path, steps=6), data, data, progress=False).fit(stop_at=3)
    cfg = tiny_config(tmp_path, steps=8)
    cfg.optim.lr, cfg.loss.adversarial_weight = 3e-4, 0.2
    t = Trainer(cfg, data, data, progress=False)
    assert t.step == 3
    assert t.resume_changes == {"optim.lr": (1e-3, 3e-4), "steps": (6, 8), "loss.adversarial_weight": (0.1, 0.2)}
    # the restored optimizer runs at the new base lr on the new schedule, at this very step
    factor = t.sched.lr_lambdas[0](t.sched.last_epoch)
    assert t.opt.param_groups[0]["lr"] == 3e-4 * factor and t.sched.base_lrs == [3e-4]
    assert t.adv.base_weight == 0.2
    log = (tmp_path / "train.log").read_text()
    assert "optim.lr 0.001 -> 0.0003" in log and "steps 6 -> 8" in log
    history = [json.loads(x) for x in (tmp_path / "resume_history.jsonl").read_text().splitlines()]
    assert history[-1]["step"] == 3 and history[-1]["changes"]["optim.lr"] == [1e-3, 3e-4]
    t.fit()
    assert json.loads((tmp_path / "train_config.json").read_text())["optim"]["lr"] == 3e-4
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in rows) == 8
    assert rows[-1].get("optim/lr", 0) <= 3e-4 + 1e-12 or all("optim/lr" not in r for r in rows[-1:])
    # the checkpoint written by the resumed run records the config it ran with: no change on the next resume
    again = Trainer(cfg, data, data, progress=False)
    assert again.step == 8 and again.resume_changes == {}


@pytest.mark.parametrize("change,message", [
    (lambda c: setattr(c, "model", "tiny-fsq"), "model='tiny'"),
    (lambda c: c.model_overrides.update(init_dim=16), "another architecture"),
    (lambda c: setattr(c.data, "size", (16, 32)), "data.size"),
    (lambda c: setattr(c.data, "frames", 9), "data.frames"),
    (lambda c: setattr(c.loss, "discriminator_dim", 16), "discriminator"),
])
def test_unsafe_changes_are_refused_with_the_fix(tmp_path, clip, change, message):
    data = ClipDataset(clip, n=2)
    Trainer(tiny_config(tmp_path, steps=3), data, data, progress=False).fit(stop_at=3)
    cfg = tiny_config(tmp_path, steps=3)
    change(cfg)
    with pytest.raises(ResumeError, match=message) as e:
        Trainer(cfg, data, data, progress=False)
    msg = str(e.value)
    assert "--overwrite" in msg and "output_dir" in msg and "\n" not in msg
    assert isinstance(e.value, UserError)


def test_a_legacy_checkpoint_resumes_to_the_uninterrupted_weights(tmp_path, clip):
    """A run checkpointed by magtok before Accelerate state (one state.pt) resumes exactly."""
    data = ClipDataset(clip, n=4)
    full = Trainer(tiny_config(tmp_path / "full"), data, data, progress=False)
    full.fit()
    part = Trainer(tiny_config(tmp_path / "part"), data, data, progress=False)
    part.fit(stop_at=3)
    # rewrite its step-3 checkpoint in the legacy format (the state dict the earlier trainer saved)
    legacy = {"step": part.step, "model": part.unwrapped.state_dict(), "ema": part.ema.state_dict(),
              "optimizer": part.opt.state_dict(), "scheduler": part.sched.state_dict(),
              "adversarial": part.adv.state_dict(), "rng": rng_state(),
              "data_position": {"step": part.step, "seed": 0}, "nonfinite_in_a_row": 0, "skipped_steps": 0}
    ckpts = tmp_path / "part" / "checkpoints"
    for p in list_checkpoints(ckpts):
        import shutil

        shutil.rmtree(p)
    save_legacy_checkpoint(ckpts, 3, legacy, part.cfg.to_dict(), keep=3)
    assert (ckpts / "step_00000003" / "state.pt").exists()
    resumed = Trainer(tiny_config(tmp_path / "part"), data, data, resume=True, progress=False)
    assert resumed.step == 3
    assert "legacy" in (tmp_path / "part" / "train.log").read_text()
    resumed.fit()
    for a, b in [(full.unwrapped, resumed.unwrapped), (full.ema.model, resumed.ema.model),
                 (full.adv.discriminator_module, resumed.adv.discriminator_module)]:
        sa, sb = a.state_dict(), b.state_dict()
        for k in sa:
            assert torch.allclose(sa[k].float(), sb[k].float(), atol=1e-6), k
    # its new checkpoints are in the new format
    assert (ckpts / "step_00000006" / "magtok_checkpoint.json").exists()


def test_export_never_replaces_model_in_place_without_overwrite(tmp_path, clip):
    data = ClipDataset(clip, n=2)
    first = Trainer(tiny_config(tmp_path, steps=3, gan=False), data, data, progress=False)
    first.fit()
    fp = VideoTokenizer.from_pretrained(tmp_path / "model").fingerprint()
    again = Trainer(tiny_config(tmp_path, steps=3, gan=False), data, data, progress=False)
    again.fit()  # nothing to train: the same weights, model/ left as it is
    assert again.exported == tmp_path / "model"
    more = Trainer(tiny_config(tmp_path, steps=5, gan=False), data, data, resume=True, progress=False)
    more.fit()
    assert more.exported == tmp_path / "model-step_00000005"
    assert VideoTokenizer.from_pretrained(tmp_path / "model").fingerprint() == fp  # untouched
    assert VideoTokenizer.from_pretrained(more.exported).fingerprint() != fp
    assert "model-step_00000005" in (tmp_path / "train.log").read_text()
    fresh = Trainer(tiny_config(tmp_path, steps=2, gan=False), data, data, resume=False, overwrite=True,
                    progress=False)
    fresh.fit()
    assert fresh.exported == tmp_path / "model"
    assert VideoTokenizer.from_pretrained(tmp_path / "model").fingerprint() != fp


def test_overwrite_removes_the_earlier_runs_checkpoints(tmp_path, clip):
    data = ClipDataset(clip, n=2)
    Trainer(tiny_config(tmp_path, steps=6, gan=False), data, data, progress=False).fit()
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step_00000003", "step_00000006"]
    Trainer(tiny_config(tmp_path, steps=6, gan=False), data, data, resume=False, overwrite=True,
            progress=False).fit(stop_at=3)
    # the old step 6 would otherwise be picked up by the next resume
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step_00000003"]
    assert Trainer(tiny_config(tmp_path, steps=6, gan=False), data, data, progress=False).step == 3


def test_export_ema_false_exports_the_trained_weights(tmp_path, clip):
    data = ClipDataset(clip, n=2)
    t = Trainer(tiny_config(tmp_path, steps=3, gan=False, export_ema=False, ema_decay=0.99), data, data,
                progress=False)
    t.fit()
    exported = VideoTokenizer.from_pretrained(tmp_path / "model")
    assert _same(exported, t.unwrapped)
    assert not _same(exported, t.ema.model)  # the EMA (decay 0.99) lags behind: it would be another model
    assert "exported the tokenizer" in (tmp_path / "train.log").read_text()


def test_a_preset_whose_numbers_changed_since_the_checkpoint_is_refused(tmp_path, clip):
    """The checkpoint records the resolved tokenizer config, not only the preset's name."""
    data = ClipDataset(clip, n=2)
    Trainer(tiny_config(tmp_path, steps=3, gan=False), data, data, progress=False).fit(stop_at=3)
    meta_path = list_checkpoints(tmp_path / "checkpoints")[-1] / "magtok_checkpoint.json"
    meta = json.loads(meta_path.read_text())
    assert meta["tokenizer"]["init_dim"] > 0
    meta["tokenizer"]["init_dim"] += 8  # as if the "tiny" preset had another width when the run started
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ResumeError, match="another architecture"):
        Trainer(tiny_config(tmp_path, steps=3, gan=False), data, data, progress=False)
