"""Training-step paths that a default run does not take: gradient accumulation, bf16 autocast."""

import pytest
import torch

from magtok.training import Trainer
from tests.training._common import ClipDataset, real_clip, tiny_config


@pytest.fixture(scope="module")
def clip():
    return real_clip(frames=9)


def test_grad_accumulation_equals_one_big_batch(tmp_path, clip):
    """2 micro-batches of 1 (the no_sync path) == 1 batch of 2: same items, same update."""
    data = ClipDataset(clip, n=8)

    def run(out, batch, accum):
        cfg = tiny_config(out, steps=2, gan=False)
        cfg.batch_size, cfg.optim.grad_accum, cfg.loss.quantizer_weight = batch, accum, 0.0
        t = Trainer(cfg, data, data, progress=False)
        backward_calls, grads = [], []
        real_backward, real_step = t.acc.backward, t.opt.step
        t.acc.backward = lambda loss: (backward_calls.append(1), real_backward(loss))[1]

        def step(*a, **k):  # the gradients the optimizer is about to apply
            grads.append({n: p.grad.clone() for n, p in t.unwrapped.named_parameters() if p.grad is not None})
            return real_step(*a, **k)

        t.opt.step = step
        t.fit(stop_at=1)
        return backward_calls, grads[0]

    calls_a, grads_a = run(tmp_path / "a", 1, 2)
    calls_b, grads_b = run(tmp_path / "b", 2, 1)
    assert len(calls_a) == 2 and len(calls_b) == 1  # two backward passes per step with accumulation
    assert grads_a.keys() == grads_b.keys() and grads_a
    for k in grads_a:
        assert torch.allclose(grads_a[k], grads_b[k], rtol=1e-3, atol=1e-6), (k, (grads_a[k] - grads_b[k]).abs().max())
    assert any(g.abs().sum() > 0 for g in grads_a.values())


@pytest.fixture
def fresh_accelerate_state():
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def test_a_bf16_autocast_training_step(tmp_path, clip, fresh_accelerate_state):
    data = ClipDataset(clip, n=4)
    t = Trainer(tiny_config(tmp_path, steps=2, gan=True, mixed_precision="bf16"), data, data, progress=False)
    assert t.acc.mixed_precision == "bf16"
    t.adv.start_step = 0  # the discriminator step runs too
    dtypes = {}
    conv = t.unwrapped.encoder.conv_in if hasattr(t.unwrapped.encoder, "conv_in") else None
    first_conv = conv or next(m for m in t.unwrapped.encoder.modules() if isinstance(m, torch.nn.Conv3d))
    first_conv.register_forward_hook(lambda m, i, o: dtypes.setdefault("conv", o.dtype) and None)
    t.unwrapped.quantizer.register_forward_hook(
        lambda m, i, o: dtypes.setdefault("quantizer", o.quantized.dtype) and None)
    before = {k: v.clone() for k, v in t.unwrapped.state_dict().items()}
    logs = t.train_step([next(iter(t._loader(0, 1)))])
    assert dtypes == {"conv": torch.bfloat16, "quantizer": torch.float32}  # autocast on, quantizer in fp32
    assert all(torch.isfinite(torch.tensor(v)) for k, v in logs.items() if k.startswith("loss/"))
    assert "disc/d_loss" in logs or any(k.startswith("disc/") for k in logs)
    after = t.unwrapped.state_dict()
    assert all(after[k].dtype == before[k].dtype for k in before)  # weights stay float32
    assert any(not torch.equal(after[k], before[k]) for k in before)
