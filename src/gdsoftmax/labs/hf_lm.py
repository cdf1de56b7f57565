"""One cell of the language-model study trained again with the Hugging Face ``Trainer`` (issue 28).

``gdsoftmax lab hf-lm CONFIG`` reads the same config as ``gdsoftmax train`` (a text corpus and the
gpt model) and trains a GPT-2 built from a ``GPT2Config`` of the same size (no download; GPT-2 keeps
its biases and tanh GELU, the one architectural difference) with ``transformers.Trainer``:

* the loss is :class:`~gdsoftmax.integrations.hf.BetaLossForTrainer` (``compute_loss_func``), or with
  ``--fused`` the fused linear β-loss (:class:`~gdsoftmax.integrations.hf_trainer.FusedBetaLossTrainer`);
* β follows ``loss.beta`` through :class:`~gdsoftmax.integrations.hf_trainer.GradientDecayBetaCallback`
  (a constant, the warm-up or the adaptive controller, evaluated every ``train.eval_every`` steps);
* the recipe is the config's: AdamW with its betas and weight decay (the Trainer keeps biases and norms
  out of it, as the engine does), the linear warm-up and cosine to ``train.min_lr``, clipping, batch and
  ``train.iterations`` steps on random windows of ``data.context`` + 1 tokens drawn from the run's seed.

At the end the whole validation split is evaluated exactly as the engine evaluates it (every token
once, from the tokens before it in consecutive windows of ``data.context``), and ``result.json`` is
written beside the Trainer's folder in ``OUT/NAME-hf/``.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch

from gdsoftmax.analysis.estimators import binned_ece
from gdsoftmax.analysis.files import write_text_atomically
from gdsoftmax.engine.config.schema import ExperimentConfig
from gdsoftmax.engine.data.text import TextData
from gdsoftmax.engine.tasks.registry import TASKS, task_name
from gdsoftmax.integrations.hf import BetaLossForTrainer
from gdsoftmax.integrations.hf_trainer import FusedBetaLossTrainer, GradientDecayBetaCallback

__all__ = ["gpt2_like", "run_hf_lm", "validation_metrics"]


class _RandomWindows(torch.utils.data.Dataset):
    """``count`` windows of ``length`` tokens at offsets drawn once from ``seed``; labels are the inputs
    (the model shifts them)."""

    def __init__(self, tokens: torch.Tensor, length: int, count: int, seed: int):
        self.tokens, self.length = tokens, length
        self.offsets = torch.randint(len(tokens) - length, (count,), generator=torch.Generator().manual_seed(seed))

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, i: int) -> dict:
        window = self.tokens[self.offsets[i] : self.offsets[i] + self.length]
        return {"input_ids": window, "labels": window}


def gpt2_like(config: ExperimentConfig, vocab_size: int):
    """A GPT2LMHeadModel of the config's gpt size, from a GPT2Config (no download)."""
    import transformers

    options = config.model.options
    dropout = float(options.get("dropout", 0.0))
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=vocab_size, n_positions=config.data.context + 1, n_embd=options.get("n_embd", 128),
        n_layer=options.get("n_layer", 4), n_head=options.get("n_head", 4), resid_pdrop=dropout,
        embd_pdrop=dropout, attn_pdrop=dropout, tie_word_embeddings=True, bos_token_id=None, eos_token_id=None))


@torch.inference_mode()
def validation_metrics(model, data: TextData, context: int, batch: int = 64) -> dict[str, float]:
    """Validation loss (nats per token), accuracy and ECE (15 bins) over consecutive windows, as the engine."""
    model.eval()
    tokens = data.val.tokens
    n = (len(tokens) - 1) // context
    logprobs, confidence, correct = [], [], []
    for start in range(0, n, batch):
        rows = range(start, min(n, start + batch))
        x = torch.stack([tokens[i * context : (i + 1) * context] for i in rows])
        y = torch.stack([tokens[i * context + 1 : (i + 1) * context + 1] for i in rows]).reshape(-1)
        log_p = torch.log_softmax(model(input_ids=x).logits.float(), -1).reshape(-1, data.num_classes)
        logprobs.append(log_p.gather(1, y[:, None]).squeeze(1))
        top, prediction = log_p.max(1)
        confidence.append(top.exp())
        correct.append((prediction == y).double())
    conf, hits = torch.cat(confidence).double(), torch.cat(correct)
    return {"val_loss": float(-torch.cat(logprobs).double().mean()), "val_accuracy": float(hits.mean()),
            "val_ece": binned_ece(conf, hits, 15), "tokens": len(hits)}


def _arguments(config: ExperimentConfig, folder: Path, progress: bool):
    import transformers

    t = config.train
    betas = t.optimizer_options.get("betas", [0.9, 0.999])
    if t.optimizer != "adamw" or t.lr_schedule != "cosine":
        raise ValueError(f"the Trainer lab follows AdamW with a cosine schedule; the config has train.optimizer = "
                         f"{t.optimizer!r} and train.lr_schedule = {t.lr_schedule!r}")
    return transformers.TrainingArguments(
        output_dir=str(folder / "trainer"), max_steps=t.iterations, per_device_train_batch_size=t.batch_size,
        learning_rate=t.lr, weight_decay=t.weight_decay, adam_beta1=betas[0], adam_beta2=betas[1],
        lr_scheduler_type="cosine_with_min_lr", lr_scheduler_kwargs={"min_lr": t.min_lr},
        warmup_steps=t.warmup_steps, max_grad_norm=t.grad_clip, logging_steps=t.eval_every, save_strategy="no",
        report_to=[], seed=config.seed, data_seed=config.seed, use_cpu=not torch.cuda.is_available(),
        disable_tqdm=not progress, dataloader_num_workers=0)


def run_hf_lm(config: ExperimentConfig, out_dir: str | Path, *, fused: bool = False, progress: bool = True) -> Path:
    """Train ``config`` with the Trainer; write and return ``OUT/NAME-hf/result.json``."""
    import transformers

    if task_name(config) != "tokens":
        raise ValueError(f"the hf-lm lab trains a language model: data.dataset must be a text corpus "
                         f"(tinyshakespeare or text:PATH), got {config.data.dataset!r}; e.g. "
                         "configs/shakespeare_char.toml")
    data = TASKS["tokens"].load(config)
    folder = Path(out_dir) / f"{config.name}-hf{'-fused' if fused else ''}"
    transformers.set_seed(config.seed)
    model = gpt2_like(config, data.num_classes)
    context = config.data.context
    windows = _RandomWindows(data.train.tokens, context + 1, config.train.iterations * config.train.batch_size,
                             config.seed)
    loss = BetaLossForTrainer(tau=config.loss.tau, label_smoothing=config.loss.label_smoothing)
    callback = GradientDecayBetaCallback(config.loss.beta.raw, loss)
    common = {"model": model, "args": _arguments(config, folder, progress), "train_dataset": windows,
              "callbacks": [callback]}
    trainer = (FusedBetaLossTrainer(**common, beta_loss=loss) if fused
               else transformers.Trainer(**common, compute_loss_func=loss))
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    result = {"name": config.name, "seed": config.seed, "beta": config.loss.beta.raw, "fused": fused,
              "iterations": config.train.iterations, "train_seconds": seconds,
              "parameters": sum(p.numel() for p in model.parameters()),
              **validation_metrics(model, data, context)}
    result["perplexity"] = math.exp(result["val_loss"])
    return write_text_atomically(folder / "result.json", json.dumps(result, indent=1))
