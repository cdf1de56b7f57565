"""The β-loss in real Hugging Face Trainer runs: the callback's schedules and adaptive controller, the
next-token metrics, the fused trainer, and a short cell of the language-model study trained both by the
engine and by the Trainer (gdsoftmax lab hf-lm), whose validation losses must agree within seed noise."""

from __future__ import annotations

import json
import statistics

import pytest
import torch

transformers = pytest.importorskip("transformers")

from gdsoftmax.engine.config.schema import parse_config  # noqa: E402
from gdsoftmax.engine.loop.trainer import run_experiment  # noqa: E402
from gdsoftmax.integrations.hf import BetaLossForTrainer  # noqa: E402
from gdsoftmax.integrations.hf_trainer import (  # noqa: E402
    FusedBetaLossTrainer,
    GradientDecayBetaCallback,
    next_token_metrics,
    top1_of_logits,
)
from gdsoftmax.labs.hf_lm import run_hf_lm  # noqa: E402
from gdsoftmax.loss.adaptive import controller_from_table  # noqa: E402

PID = {"kind": "pid", "start": 1.0, "target": 0.0, "kp": 2.0, "ki": 0.0, "kd": 0.0}


class Windows(torch.utils.data.Dataset):
    def __init__(self, n: int = 16, vocab: int = 20, length: int = 9):
        self.x = torch.randint(vocab, (n, length), generator=torch.Generator().manual_seed(0))

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"input_ids": self.x[i], "labels": self.x[i]}


def tiny_gpt2():
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=20, n_positions=9, n_embd=16, n_layer=1,
                                                                n_head=2, bos_token_id=None, eos_token_id=None))


def arguments(tmp_path, **extra):
    extra = {"save_strategy": "no", **extra}
    return transformers.TrainingArguments(output_dir=str(tmp_path / "t"), per_device_train_batch_size=4,
                                          learning_rate=1e-3, report_to=[], use_cpu=True, disable_tqdm=True, **extra)


class Recording(BetaLossForTrainer):
    def __init__(self):
        super().__init__()
        self.seen = []

    def __call__(self, outputs, labels, num_items_in_batch=None):
        self.seen.append(self.beta)
        return super().__call__(outputs, labels, num_items_in_batch)


def test_the_callback_sets_beta_from_the_warm_up_at_every_step(tmp_path):
    loss = Recording()
    warmup = {"kind": "linear", "start": 0.1, "end": 1.0, "steps": 6}
    trainer = transformers.Trainer(model=tiny_gpt2(), args=arguments(tmp_path, max_steps=8),
                                   train_dataset=Windows(), compute_loss_func=loss,
                                   callbacks=[GradientDecayBetaCallback(warmup, loss)])
    trainer.train()
    expected = [0.1 + 0.9 * min(step, 6) / 6 for step in range(8)]  # the linear ramp written out
    assert loss.seen == pytest.approx(expected)


def test_the_adaptive_controller_moves_beta_after_each_evaluation(tmp_path):
    loss = BetaLossForTrainer()
    callback = GradientDecayBetaCallback(PID, loss)
    trainer = transformers.Trainer(model=tiny_gpt2(), args=arguments(tmp_path, max_steps=4, eval_strategy="steps",
                                                                     eval_steps=2),
                                   train_dataset=Windows(), eval_dataset=Windows(8), compute_loss_func=loss,
                                   compute_metrics=next_token_metrics, preprocess_logits_for_metrics=top1_of_logits,
                                   callbacks=[callback])
    trainer.train()
    gaps = [h["eval_confidence"] - h["eval_accuracy"] for h in trainer.state.log_history if "eval_confidence" in h]
    reference = controller_from_table(PID)
    for gap in gaps:
        reference.update(gap)
    assert len(gaps) == 2
    assert loss.beta == pytest.approx(reference(0))
    assert loss.beta != 1.0
    assert callback.state()["attributes"]["controller"] == reference.state_dict()


def test_the_adaptive_controller_names_the_metrics_it_needs(tmp_path):
    callback = GradientDecayBetaCallback(PID)
    with pytest.raises(ValueError, match=r"needs \['eval_confidence', 'eval_accuracy'\] .* "
                                         "compute_metrics=next_token_metrics"):
        callback.on_evaluate(None, transformers.TrainerState(), None, metrics={"eval_loss": 1.0})
    with pytest.raises(ValueError, match="lr_compensation needs every evaluation token"):
        GradientDecayBetaCallback({**PID, "lr_compensation": True})


def test_the_fused_trainer_computes_the_same_loss_without_the_logits(tmp_path):
    batch = {k: torch.stack([Windows()[i][k] for i in range(4)]) for k in ("input_ids", "labels")}
    losses = []
    for fused in (False, True):
        loss = BetaLossForTrainer(beta=0.3)
        common = {"model": tiny_gpt2(), "args": arguments(tmp_path, max_steps=3), "train_dataset": Windows()}
        trainer = (FusedBetaLossTrainer(**common, beta_loss=loss) if fused
                   else transformers.Trainer(**common, compute_loss_func=loss))
        losses.append(trainer.compute_loss(trainer.model, dict(batch)))  # the Trainer pops labels
        trainer.train()
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-6)


# ---- one cell, engine and Trainer ------------------------------------------------------------------


CORPUS = "".join(f"{who}: the {what} is {how}.\n" for who in ("ROMEO", "JULIET", "NURSE", "FRIAR")
                 for what in ("moon", "sun", "night", "day", "rose") for how in ("fair", "dark", "sweet", "gone")) * 3


@pytest.mark.slow  # three seeds each way (6 s); the callback's own tests stay in make test
def test_a_short_cell_lands_within_seed_noise_of_the_engine(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS, encoding="utf-8")
    raw = {"name": "cell", "data": {"dataset": f"text:{corpus}", "context": 16},
           "model": {"name": "gpt", "options": {"n_layer": 1, "n_head": 2, "n_embd": 32}},
           "loss": {"beta": 0.5},
           "train": {"iterations": 60, "eval_every": 60, "batch_size": 8, "optimizer": "adamw", "lr": 3e-3,
                     "optimizer_options": {"betas": [0.9, 0.99]}, "weight_decay": 0.1, "lr_schedule": "cosine",
                     "min_lr": 3e-4, "warmup_steps": 6, "grad_clip": 1.0, "record_epochs": [1]}}
    engine, hf = [], []
    for seed in range(3):
        config = parse_config({**raw, "seed": seed})
        run_experiment(config, tmp_path / f"engine{seed}", progress=False)
        engine.append(json.loads((tmp_path / f"engine{seed}" / "metrics.jsonl").read_text().splitlines()[-1])["val_ce"])
        path = run_hf_lm(config, tmp_path / f"hf{seed}", progress=False)
        hf.append(json.loads(path.read_text())["val_loss"])
    noise = max(statistics.stdev(engine), statistics.stdev(hf))
    assert abs(statistics.fmean(hf) - statistics.fmean(engine)) <= 3 * noise + 0.02, (engine, hf)


def test_the_lab_refuses_an_image_config_in_one_line(tmp_path, capsys):
    from gdsoftmax.cli import main

    assert main(["lab", "hf-lm", "configs/digits_sweep.toml", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("gdsoftmax lab: error: the hf-lm lab trains a language model: data.dataset must be a text corpus "
                   "(tinyshakespeare or text:PATH), got 'digits'; e.g. configs/shakespeare_char.toml")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("restore_states", [False, True])
def test_a_resumed_trainer_gets_its_controller_back(tmp_path, restore_states):
    def fit(resume=None):
        loss = Recording()
        callback = GradientDecayBetaCallback(PID, loss)
        args = arguments(tmp_path, max_steps=4, eval_strategy="steps", eval_steps=2, save_strategy="steps",
                         save_steps=2, restore_callback_states_from_checkpoint=restore_states)
        trainer = transformers.Trainer(model=tiny_gpt2(), args=args, train_dataset=Windows(),
                                       eval_dataset=Windows(8), compute_loss_func=loss,
                                       compute_metrics=next_token_metrics,
                                       preprocess_logits_for_metrics=top1_of_logits, callbacks=[callback])
        trainer.train(resume_from_checkpoint=resume)
        return loss.seen

    whole = fit()  # train 1, train 2, evaluate (β moves), train 3, train 4, evaluate
    resumed = fit(resume=str(tmp_path / "t" / "checkpoint-2"))  # train 3, train 4, evaluate
    assert whole[3] != 1.0
    assert resumed[0] == pytest.approx(whole[3], rel=1e-6)  # not the controller's start again


def test_a_classifiers_trainer_predictions_are_saved_for_compare(tmp_path):
    from gdsoftmax.analysis.predictions import load_predictions
    from gdsoftmax.integrations.hf_trainer import save_trainer_predictions

    class Classifier(torch.nn.Module):  # the Trainer's contract: keyword inputs, a dict with the loss and logits
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(4, 3)

        def forward(self, x, labels=None):
            logits = self.linear(x)
            loss = torch.nn.functional.cross_entropy(logits, labels) if labels is not None else None
            return {"loss": loss, "logits": logits}

    torch.manual_seed(0)
    model = Classifier()
    x, y = torch.randn(20, 4), torch.arange(20) % 3
    val = [{"x": x[i], "labels": y[i]} for i in range(12)]
    test = [{"x": x[i], "labels": y[i]} for i in range(12, 20)]
    args = transformers.TrainingArguments(output_dir=str(tmp_path / "t"), per_device_eval_batch_size=5,
                                          report_to=[], use_cpu=True)
    trainer = transformers.Trainer(model=model, args=args)
    path = save_trainer_predictions(trainer, tmp_path / "preds" / "beta=1" / "0.npz", val, test)
    saved = load_predictions(tmp_path / "preds")["beta=1"]["0"]
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(saved["val_logits"]), model(x[:12])["logits"])
        torch.testing.assert_close(torch.from_numpy(saved["test_logits"]), model(x[12:])["logits"])
    assert saved["test_labels"].tolist() == y[12:].tolist()
    assert path.name == "0.npz"
