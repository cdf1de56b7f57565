"""The Lightning Callback: β follows the schedule step by step, the adaptive controller moves it by its law
from the validation gap (with the lr compensation), and both survive Lightning's checkpoint and resume."""

from __future__ import annotations

import importlib
import math
import sys

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

pytest.importorskip("lightning")
import lightning.pytorch as pl

from gdsoftmax.integrations.lightning import GradientDecayBeta
from gdsoftmax.loss import GradientDecayLoss
from gdsoftmax.loss.adaptive import PIDController


def loader(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    y = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()  # 4 classes a linear model can learn
    return DataLoader(TensorDataset(x, y), batch_size=16)


class TinyClassifier(pl.LightningModule):
    """A linear classifier with a GradientDecayLoss; it records the β each training step sees."""

    def __init__(self, validation_returns_predictions=True):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Linear(8, 4)
        self.criterion = GradientDecayLoss()
        self.returns_predictions = validation_returns_predictions
        self.seen = []  # (global_step, beta)
        self.val_outputs = []

    def training_step(self, batch, batch_idx):
        self.seen.append((self.global_step, self.criterion.beta))
        x, y = batch
        return self.criterion(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        self.val_outputs.append((logits.detach(), y))
        return {"logits": logits, "target": y} if self.returns_predictions else logits.sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def trainer(tmp_path, **kwargs):
    options = {"accelerator": "cpu", "devices": 1, "logger": False, "enable_checkpointing": False,
               "enable_progress_bar": False, "enable_model_summary": False, "num_sanity_val_steps": 0,
               "default_root_dir": str(tmp_path)}
    return pl.Trainer(**(options | kwargs))


WARMUP = {"kind": "linear", "start": 0.1, "end": 1.0, "steps": 10}


def test_beta_follows_the_warmup_step_by_step(tmp_path):
    model = TinyClassifier()
    trainer(tmp_path, max_steps=6, limit_val_batches=0, callbacks=[GradientDecayBeta(WARMUP)]).fit(model, loader())
    assert [step for step, _ in model.seen] == list(range(6))
    for step, beta in model.seen:  # 0.1 → 1 over 10 steps: 0.09 per step
        assert beta == pytest.approx(0.1 + 0.09 * step, rel=1e-12)


def test_the_warmup_continues_after_a_checkpoint_resume(tmp_path):
    first = trainer(tmp_path, max_steps=4, limit_val_batches=0, callbacks=[GradientDecayBeta(WARMUP)])
    first.fit(TinyClassifier(), loader())
    first.save_checkpoint(tmp_path / "four.ckpt")
    model = TinyClassifier()
    second = trainer(tmp_path, max_steps=8, limit_val_batches=0, callbacks=[GradientDecayBeta(WARMUP)])
    second.fit(model, loader(), ckpt_path=tmp_path / "four.ckpt")
    assert [step for step, _ in model.seen] == [4, 5, 6, 7]
    assert [beta for _, beta in model.seen] == pytest.approx([0.1 + 0.09 * s for s in (4, 5, 6, 7)], rel=1e-12)


def _expected_after_one_epoch(model, kp, ki):
    """The controller's law by hand from the validation predictions the module saw: log β = kp e + ki e."""
    logits = torch.cat([lg for lg, _ in model.val_outputs]).double()
    target = torch.cat([y for _, y in model.val_outputs])
    probs = logits.softmax(1)
    gap = float(probs.max(1).values.mean() - (probs.argmax(1) == target).double().mean())
    beta = math.exp(kp * gap + ki * gap)
    p_true = probs.gather(1, target[:, None]).squeeze(1)
    return beta, 1.0 / float((1 / (1 + (beta - 1) * p_true)).mean())


def test_the_adaptive_controller_moves_beta_and_the_learning_rate(tmp_path):
    model = TinyClassifier()
    callback = GradientDecayBeta({"kind": "pid", "start": 1.0, "kp": 1.0, "ki": 2.0, "lr_compensation": True})
    fit = trainer(tmp_path, max_epochs=1, callbacks=[callback])
    fit.fit(model, loader(), loader(seed=1))
    beta, factor = _expected_after_one_epoch(model, 1.0, 2.0)
    assert model.criterion.beta == pytest.approx(beta, rel=1e-9)
    assert beta != pytest.approx(1.0)  # the test can fail: the gap moved it
    assert fit.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.1 * factor, rel=1e-9)
    # Lightning's checkpoint carries the controller: a fresh callback resumes from its state
    fit.save_checkpoint(tmp_path / "epoch1.ckpt")
    resumed = GradientDecayBeta(PIDController(start=1.0, kp=1.0, ki=2.0, lr_compensation=True))
    model2 = TinyClassifier()
    second = trainer(tmp_path, max_epochs=2, limit_val_batches=0, callbacks=[resumed])
    second.fit(model2, loader(), loader(seed=1), ckpt_path=tmp_path / "epoch1.ckpt")
    assert resumed.schedule.state["beta"] == pytest.approx(beta, rel=1e-12)
    assert resumed.lr_factor == pytest.approx(factor, rel=1e-12)
    assert [b for _, b in model2.seen] == pytest.approx([beta] * 4, rel=1e-12)  # epoch 2's four steps
    assert second.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.1 * factor, rel=1e-9)


def test_without_a_gradient_decay_loss_one_line_names_the_fix(tmp_path):
    model = TinyClassifier()
    model.criterion = nn.CrossEntropyLoss()
    with pytest.raises(ValueError, match=r"found 0 GradientDecayLoss modules in TinyClassifier: pass the one to "
                                         r"drive, GradientDecayBeta\(beta, loss=...\)"):
        trainer(tmp_path, max_steps=1, callbacks=[GradientDecayBeta(0.5)]).fit(model, loader())


def test_the_controller_needs_validation_predictions(tmp_path):
    model = TinyClassifier(validation_returns_predictions=False)
    with pytest.raises(ValueError, match=r"return \{'logits': logits, 'target': target\} from validation_step"):
        trainer(tmp_path, max_epochs=1, callbacks=[GradientDecayBeta({"kind": "pid"})]).fit(
            model, loader(), loader(seed=1))


def test_a_missing_lightning_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "lightning.pytorch.callbacks", None)
    monkeypatch.delitem(sys.modules, "gdsoftmax.integrations.lightning")
    with pytest.raises(ImportError, match=r"pip install 'gdsoftmax\[lightning\]'"):
        importlib.import_module("gdsoftmax.integrations.lightning")


def test_a_loss_without_beta_is_refused_in_one_line():
    with pytest.raises(TypeError, match=r"GradientDecayBeta drives a gdsoftmax\.loss\.GradientDecayLoss, got "
                                        r"CrossEntropyLoss"):
        GradientDecayBeta(0.5, loss=torch.nn.CrossEntropyLoss())
