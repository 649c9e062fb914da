"""The one trainer: it learns, its EMA is an average, and a killed run resumes to the same weights."""
import json

import pytest
import torch

from dfs.train import Trainer, TrainConfig, latest_checkpoint, list_checkpoints, load_weights


def _regression_problem():
    w_true = torch.tensor([[2.0, -1.0, 0.5]])

    def data(step, g):
        x = torch.randn(32, 3, generator=g)
        return x, x @ w_true.T + 0.01 * torch.randn(32, 1, generator=g)

    def loss_fn(model, batch, step):
        x, y = batch
        # dropout-like randomness from the global RNG: resume must reproduce it too
        noise = 0.01 * torch.randn_like(y)
        return {"loss": ((model(x) - y - noise) ** 2).mean(), "mean_y": y.mean()}

    return w_true, data, loss_fn


def _model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Linear(3, 1)


def test_trainer_learns_linear_regression_and_logs():
    w_true, data, loss_fn = _regression_problem()
    tr = Trainer(_model(), loss_fn, data, TrainConfig(steps=300, lr=0.05, log_every=50, progress=False,
                                                       ema_decay=0.9, device="cpu"))
    hist = tr.fit()
    assert [h["step"] for h in hist] == [50, 100, 150, 200, 250, 300]
    assert hist[-1]["loss"] < 0.01 * hist[0]["loss"]
    torch.testing.assert_close(tr.raw_model.weight.detach(), w_true, atol=0.05, rtol=0)
    # the EMA copy is a different object that has also converged, but lags the live weights
    assert tr.ema_model is not tr.raw_model
    torch.testing.assert_close(tr.ema_model.weight, w_true, atol=0.1, rtol=0)


def test_ema_is_exponential_average_of_weights():
    # with a constant-gradient loss the weights move linearly; the EMA must follow the recursion exactly
    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    cfg = TrainConfig(steps=5, lr=0.1, ema_decay=0.5, grad_clip=None, progress=False, device="cpu")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    tr = Trainer(model, lambda m, b, s: m.weight.sum(), lambda s, g: torch.zeros(1), cfg, optimizer=opt)
    ema, w = 0.0, 0.0
    for n in range(5):
        tr.fit(n + 1)
        w -= 0.1
        decay = min(0.5, (1 + n + 1) / (10 + n + 1))
        ema = decay * ema + (1 - decay) * w
        assert tr.ema_model.weight.item() == pytest.approx(ema, abs=1e-6)


def test_resume_after_interrupt_gives_same_weights_as_uninterrupted(tmp_path):
    _, data, loss_fn = _regression_problem()
    base = dict(steps=40, lr=0.02, seed=3, progress=False, log_every=10, ema_decay=0.9, device="cpu")

    straight = Trainer(_model(), loss_fn, data, TrainConfig(**base))
    straight.fit()

    ckpt = tmp_path / "ckpt"
    class Killed(BaseException):
        pass

    def dies_at_25(model, batch, step):
        if step == 25:
            raise Killed  # like a SIGKILL: no chance to save anything
        return loss_fn(model, batch, step)

    first = Trainer(_model(), dies_at_25, data, TrainConfig(**base, checkpoint_dir=str(ckpt), checkpoint_every=10))
    with pytest.raises(Killed):
        first.fit()
    assert latest_checkpoint(ckpt).name == "step_0000020"
    # a half-written checkpoint (a crash mid-save) must be ignored
    (ckpt / ".incomplete-xyz").mkdir()
    (ckpt / "step_0000030").mkdir()  # no state.json: not complete

    resumed = Trainer(_model(seed=99), loss_fn, data, TrainConfig(**base, checkpoint_dir=str(ckpt),
                                                                   checkpoint_every=10))
    assert resumed.step == 20
    resumed.fit()
    for a, b in zip(straight.raw_model.parameters(), resumed.raw_model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for a, b in zip(straight.ema_model.parameters(), resumed.ema_model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)
    assert [h["step"] for h in resumed.history] == [10, 20, 30, 40]
    assert resumed.history[-1]["loss"] == pytest.approx(straight.history[-1]["loss"], rel=1e-6)
    state = json.loads((latest_checkpoint(ckpt) / "state.json").read_text())
    assert state["step"] == 40
    assert len(list_checkpoints(ckpt)) <= 2


def test_ctrl_c_writes_a_checkpoint_before_stopping(tmp_path):
    _, data, loss_fn = _regression_problem()

    def interrupted_at_7(model, batch, step):
        if step == 7:
            raise KeyboardInterrupt
        return loss_fn(model, batch, step)

    tr = Trainer(_model(), interrupted_at_7, data, TrainConfig(steps=20, progress=False, device="cpu",
                                                                checkpoint_dir=str(tmp_path)))
    with pytest.raises(KeyboardInterrupt):
        tr.fit()
    assert latest_checkpoint(tmp_path).name == "step_0000007"


def test_load_weights_rejects_other_architecture(tmp_path):
    _, data, loss_fn = _regression_problem()
    tr = Trainer(_model(), loss_fn, data, TrainConfig(steps=2, progress=False, checkpoint_dir=str(tmp_path),
                                                       device="cpu"))
    tr.fit()
    fresh = _model(seed=5)
    load_weights(fresh, latest_checkpoint(tmp_path))
    torch.testing.assert_close(fresh.weight, tr.ema_model.weight)
    with pytest.raises(ValueError, match="does not match this model"):
        load_weights(torch.nn.Linear(4, 1), latest_checkpoint(tmp_path))


def test_nan_loss_is_a_clear_error():
    tr = Trainer(_model(), lambda m, b, s: m.weight.sum() * float("nan"), lambda s, g: torch.zeros(1),
                 TrainConfig(steps=3, progress=False, device="cpu"))
    with pytest.raises(FloatingPointError, match="at step 0"):
        tr.fit()


def test_bad_config_values_raise():
    with pytest.raises(ValueError, match="ema_decay"):
        TrainConfig(ema_decay=1.5)
    with pytest.raises(ValueError, match="mixed_precision"):
        TrainConfig(mixed_precision="fp8")


# ---------------------------------------------------------------------------------------------------------------
# several optimisers and a step function (a GAN's two-optimiser step)


class _TinyGAN(torch.nn.Module):
    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.g, self.d = torch.nn.Linear(2, 2), torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.ReLU(),
                                                                    torch.nn.Linear(8, 1))


def _gan_parts(model):
    opts = {"g": torch.optim.Adam(model.g.parameters(), lr=0.01, betas=(0.5, 0.9)),
            "d": torch.optim.SGD(model.d.parameters(), lr=0.05, momentum=0.9)}

    def data(step, g):
        return torch.randn(16, 2, generator=g) * 0.5 + torch.tensor([2.0, -1.0])

    def step_fn(trainer, real, step):
        m = trainer.model
        fake = m.g(torch.randn_like(real))          # global RNG: seeded per step by the trainer
        loss_g = -m.d(fake).mean()                  # hinge generator loss
        trainer.backward_step(loss_g, "g")
        loss_d = torch.relu(1 - m.d(real)).mean() + torch.relu(1 + m.d(fake.detach())).mean()
        trainer.backward_step(loss_d, "d")
        return {"loss_g": loss_g, "loss_d": loss_d, "fake": fake}  # tensors with >1 element are not logged

    return opts, data, step_fn


def _gan_trainer(seed=0, **cfg):
    model = _TinyGAN(seed)
    opts, data, step_fn = _gan_parts(model)
    base = {"steps": 30, "seed": 4, "progress": False, "log_every": 5, "ema_decay": 0.8, "warmup_steps": 4,
            "grad_clip": 1.0, "device": "cpu"}
    base.update(cfg)
    return Trainer(model, None, data, TrainConfig(**base), optimizers=opts, step_fn=step_fn, ema_module="g")


def test_two_optimisers_keep_their_own_learning_rates_and_ema_of_the_generator_only():
    tr = _gan_trainer(steps=2)
    assert tr.optimizer is None and set(tr.optimizers) == {"g", "d"}
    tr.fit()
    # warm-up 4 steps: at the last step (step index 1) each optimiser runs at 2/4 of its own rate
    assert tr.optimizers["g"].param_groups[0]["lr"] == pytest.approx(0.01 * 2 / 4)
    assert tr.optimizers["d"].param_groups[0]["lr"] == pytest.approx(0.05 * 2 / 4)
    assert set(dict(tr.ema_model.named_parameters())) == {"weight", "bias"}   # a copy of g, not of the GAN
    assert tr.ema_model is not tr.raw_model.g
    assert {"loss_g", "loss_d", "lr_g", "lr_d"} <= set(tr.history[-1]) and "fake" not in tr.history[-1]


def test_two_optimiser_run_killed_and_resumed_is_bit_identical(tmp_path):
    straight = _gan_trainer()
    straight.fit()

    class Killed(BaseException):
        pass

    first = _gan_trainer(checkpoint_dir=str(tmp_path), checkpoint_every=5)
    inner = first.step_fn

    def dies_at_13(trainer, batch, step):
        if step == 13:
            raise Killed
        return inner(trainer, batch, step)

    first.step_fn = dies_at_13
    with pytest.raises(Killed):
        first.fit()
    assert latest_checkpoint(tmp_path).name == "step_0000010"
    assert (latest_checkpoint(tmp_path) / "optimizers.pt").is_file()

    resumed = _gan_trainer(seed=77, checkpoint_dir=str(tmp_path), checkpoint_every=5)
    assert resumed.step == 10
    resumed.fit()
    for a, b in zip(straight.raw_model.parameters(), resumed.raw_model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for a, b in zip(straight.ema_model.parameters(), resumed.ema_model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for name in ("g", "d"):  # optimiser states (Adam moments, SGD momentum) came back too
        sa, sb = straight.optimizers[name].state_dict()["state"], resumed.optimizers[name].state_dict()["state"]
        for k in sa:
            for key in sa[k]:
                torch.testing.assert_close(sa[k][key], sb[k][key], rtol=0, atol=0)
    assert [h["step"] for h in resumed.history] == [5, 10, 15, 20, 25, 30]
    assert resumed.history[-1]["loss_d"] == straight.history[-1]["loss_d"]


def test_step_function_errors(tmp_path):
    model = _TinyGAN()
    opts, data, step_fn = _gan_parts(model)
    cfg = TrainConfig(steps=1, progress=False, device="cpu")
    with pytest.raises(ValueError, match="exactly one of loss_fn"):
        Trainer(model, lambda m, b, s: 0, data, cfg, step_fn=step_fn)
    with pytest.raises(ValueError, match="needs a step_fn"):
        Trainer(model, lambda m, b, s: 0, data, cfg, optimizers=opts)
    tr = Trainer(model, None, data, cfg, optimizers=opts, step_fn=lambda t, b, s: t.backward_step(b.sum(), "e"))
    with pytest.raises(KeyError, match="no optimiser 'e'"):
        tr.fit()
    tr = Trainer(model, None, data, cfg, optimizers=opts,
                 step_fn=lambda t, b, s: t.backward_step(b.sum() * float("nan"), "d"))
    with pytest.raises(FloatingPointError, match="the d loss became nan at step 0"):
        tr.fit()
    # a single-optimiser checkpoint is not silently loaded into a two-optimiser trainer
    Trainer(_TinyGAN(), lambda m, b, s: m.d(m.g(b)).mean(), data,
            TrainConfig(steps=1, progress=False, device="cpu", ema_decay=None,
                        checkpoint_dir=str(tmp_path / "one"))).fit()
    with pytest.raises(ValueError, match="no optimizers.pt: it was written by a trainer with one optimiser"):
        _gan_trainer(checkpoint_dir=str(tmp_path / "one"))
