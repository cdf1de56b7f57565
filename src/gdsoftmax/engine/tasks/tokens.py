"""Next-token prediction, the :class:`~gdsoftmax.engine.tasks.base.Task` of language models, and their evaluation.

A text run (``data.dataset`` a corpus, :mod:`gdsoftmax.engine.data.text`) counts its training in
iterations: ``train.iterations`` steps, evaluated every ``train.eval_every`` of them. The loop's
"epoch" is one such round, so rows, checkpoints, resumption, trackers and reports work as for
images. Each step draws ``train.batch_size`` windows of ``data.context`` tokens at random offsets
from a generator saved in the checkpoint, so a resumed run ends bit-identical. The β-loss is taken
over every token: the objective sees logits (B * T, V) and targets (B * T,), or, with
``loss.fused_linear``, the hidden states and the output layer's weight, so the logits of a large
vocabulary are never held at once.

Evaluation covers the whole validation stream in consecutive windows of ``data.context`` tokens
(every token once, each predicted from the tokens before it in its window). The final predictions
keep, per validation token, the top-1 confidence, whether it was right and the log-probability of the
true token, and the same after temperature scaling fitted on the first half of the validation
tokens (reported on the second half), plus a text sampled at temperature 1.
"""

from __future__ import annotations

import torch
from torch import nn

from gdsoftmax.analysis.binned import binned_calibration_error
from gdsoftmax.analysis.scaling import fit_temperature
from gdsoftmax.engine.config.schema import ExperimentConfig
from gdsoftmax.engine.data.text import TextData, load_text
from gdsoftmax.engine.models.registry import build_model
from gdsoftmax.engine.recipe.objectives import Objective, build_objective
from gdsoftmax.engine.tasks.base import TaskModel
from gdsoftmax.loss.fused import fused_linear_gradient_decay_loss

__all__ = ["FlatTokens", "NextTokenPrediction", "sample_text", "text_predictions", "text_record", "text_scores"]

LOGITS_PER_CHUNK = 1 << 23  # evaluation holds at most this many logits (32 MB in float32) at once
RECORDED_WINDOWS = 256  # samples.npz follows p_true of the first 256 training windows' tokens
SAMPLE_CHARACTERS = 300


class FlatTokens(nn.Module):
    """A language model seen as a classifier of tokens: ``(B, T)`` windows in, logits ``(B * T, V)``
    out (and features ``(B * T, D)``), so every objective of the engine applies unchanged.
    ``hidden_only=True`` gives the features alone, without the output layer (the fused linear loss)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor, return_features: bool = False, hidden_only: bool = False):
        if hidden_only:
            return self.model.hidden(tokens).flatten(0, 1)
        logits, features = self.model(tokens, return_features=True)
        flat = logits.reshape(-1, logits.shape[-1])
        return (flat, features.flatten(0, 1)) if return_features else flat


class _FusedLinearObjective(Objective):
    """The β-loss of the output layer fused with it (:func:`fused_linear_gradient_decay_loss`): the
    training step never holds the (tokens × vocabulary) logits. No logits come back, so the round's
    training CE and accuracy are not counted (NaN in the row); evaluation measures them."""

    def __init__(self, schedule, tau: float, head: nn.Linear):
        self.schedule, self.tau, self.head = schedule, tau, head

    def beta_at(self, step: int) -> float:
        return self.schedule(step)

    def __call__(self, model, x, y, step):
        features = model(x, hidden_only=True).float()  # (B * T, D); the loss runs in float32
        return fused_linear_gradient_decay_loss(features, self.head.weight, y, self.schedule(step), tau=self.tau), None


def _objective(config: ExperimentConfig, model: FlatTokens, steps_per_round: int) -> Objective:
    loss = config.loss
    schedule = loss.beta.schedule(steps_per_round)
    if loss.fused_linear:
        return _FusedLinearObjective(schedule, loss.tau, model.model.classifier)
    return build_objective(loss.name, loss.options, model, beta=schedule, tau=loss.tau,
                           label_smoothing=loss.label_smoothing, backend=loss.backend, numerics=loss.numerics)


class NextTokenPrediction:
    """A language model trained on random windows of a token stream (``data.dataset`` a corpus); one of the
    loop's epochs is a round of ``train.eval_every`` steps."""

    name = "tokens"

    def load(self, config: ExperimentConfig) -> TextData:
        d = config.data
        return load_text(d.dataset, d.data_dir or None, context=d.context, download=d.download, val_size=d.val_size,
                         tokenizer=d.tokenizer, vocab_size=d.vocab_size)

    def prepare(self, data: TextData, config: ExperimentConfig) -> TextData:
        return data

    def steps_per_epoch(self, data: TextData, config: ExperimentConfig) -> int:
        return config.train.eval_every

    def build(self, data: TextData, config: ExperimentConfig, steps_per_epoch: int) -> TaskModel:
        """The GPT (checkpointed as itself), trained through :class:`FlatTokens`; the optimizer's groups keep
        weight decay off the biases and norms where the model says so."""
        model = build_model(config.model.name, data.image_shape, data.num_classes, None, **config.model.options)
        flat = FlatTokens(model)
        groups = model.optimizer_groups(config.train.weight_decay) if hasattr(model, "optimizer_groups") else None
        return TaskModel(model, flat, _objective(config, flat, steps_per_epoch), groups or model.parameters())

    def batches(self, data: TextData, config: ExperimentConfig, generator: torch.Generator, world, steps: int):
        """``train.batch_size`` windows of ``data.context`` tokens a step, at offsets drawn up front."""
        stream, context = data.train.tokens, config.data.context
        offsets = torch.randint(len(stream) - context, (steps, config.train.batch_size), generator=generator)
        window = torch.arange(context)
        for i in range(steps):
            mine = offsets[i][world.rank :: world.size]  # this process's share of the global batch
            index = (mine[:, None] + window).to(world.device)  # (b, T)
            yield stream[index], stream[index + 1].reshape(-1)

    def scores(self, model, data: TextData, config: ExperimentConfig, test: bool):
        return text_scores(model, data, config)

    def val_labels(self, data: TextData) -> None:
        return None  # a token stream has no labels an adaptive β could read

    def record(self, model, data: TextData, config: ExperimentConfig) -> dict:
        return text_record(model, data, config)

    def recorded_labels(self, data: TextData, config: ExperimentConfig) -> torch.Tensor:
        return _windows(data.train.tokens, config.data.context, RECORDED_WINDOWS)[1].reshape(-1)

    def predictions(self, model, data: TextData, config: ExperimentConfig) -> dict:
        return text_predictions(model, data, config)


# ---- evaluation ---------------------------------------------------------------------------------


def _windows(tokens: torch.Tensor, context: int, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Consecutive windows (n, T) of a stream and their next tokens (n, T); the last partial one is dropped."""
    n = (len(tokens) - 1) // context
    if limit is not None:
        n = min(n, limit)
    return tokens[: n * context].view(n, context), tokens[1 : n * context + 1].view(n, context)


@torch.inference_mode()
def _token_outputs(model, tokens: torch.Tensor, context: int, tau: float, vocab: int, keep_logits: int = 0,
                   limit: int | None = None):
    """Per token of the windows: top-1 confidence (softmax of logits / tau), correctness and log p of the
    true token under plain softmax, each (N,); and the logits (keep_logits, V) of the first tokens."""
    was_training = model.training
    model.eval()
    x, y = _windows(tokens, context, limit)
    rows = max(1, LOGITS_PER_CHUNK // (context * vocab))
    confidence, correct, label_logprob, kept = [], [], [], []
    for start in range(0, len(x), rows):
        logits = model(x[start : start + rows]).float().reshape(-1, vocab)
        labels = y[start : start + rows].reshape(-1)
        log_p = torch.log_softmax(logits, 1)
        label_logprob.append(log_p.gather(1, labels[:, None]).squeeze(1))
        scaled = log_p if tau == 1 else torch.log_softmax(logits / tau, 1)
        top, prediction = scaled.max(1)
        confidence.append(top.exp())
        correct.append(prediction == labels)
        if sum(len(k) for k in kept) < keep_logits:
            kept.append(logits)
    model.train(was_training)
    logits = torch.cat(kept)[:keep_logits] if kept else None
    return torch.cat(confidence), torch.cat(correct), torch.cat(label_logprob), y.reshape(-1), logits


def text_scores(model, data: TextData, config: ExperimentConfig) -> tuple[dict, dict, None]:
    """The metric row's validation scores (CE in nats per token, accuracy, confidence, 15-bin ECE) over the
    whole validation stream; a corpus has no test split (NaN)."""
    confidence, correct, label_logprob, _, _ = _token_outputs(model, data.val.tokens, config.data.context,
                                                                      config.loss.tau, data.num_classes)
    val = {"acc": correct.double().mean().item(), "ce": -label_logprob.double().mean().item(),
           "conf": confidence.double().mean().item(),
           "ece": binned_calibration_error(confidence.cpu(), correct.cpu(), 15)}
    scores = {"val_ce": val["ce"], "val_acc": val["acc"], "test_ce": float("nan"), "test_acc": float("nan")}
    return scores, val, None


def text_record(model, data: TextData, config: ExperimentConfig) -> dict:
    """p_true and correctness of the tokens of the first training windows (samples.npz)."""
    _, correct, label_logprob, _, _ = _token_outputs(model, data.train.tokens, config.data.context,
                                                     config.loss.tau, data.num_classes, limit=RECORDED_WINDOWS)
    return {"p_true": label_logprob.exp().half().cpu(), "correct": correct.cpu()}


def text_predictions(model, data: TextData, config: ExperimentConfig) -> dict:
    """Per validation token: confidence, correctness, log p of the true token and the token itself; the
    temperature fitted on the first half of them, and the second half's confidence, correctness and log p
    under it; how many characters the predicted tokens spell (for nats per character); a sampled text."""
    vocab, context = data.num_classes, config.data.context
    windows = (len(data.val.tokens) - 1) // context
    half = windows // 2 * context  # tokens in the scaling half
    keep = min(half, max(context, (1 << 27) // vocab))  # fit on at most 2**27 logits (512 MB)
    confidence, correct, label_logprob, labels, logits = _token_outputs(model, data.val.tokens, context,
                                                                        config.loss.tau, vocab, keep_logits=keep)
    temperature = fit_temperature(logits, labels[:keep])  # replaces tau: confidence is softmax(z / T)
    s_conf, s_correct, s_logprob, _, _ = _token_outputs(_Scaled(model, temperature), data.val.tokens[half:],
                                                        context, 1.0, vocab)
    text = sample_text(model, data, config)
    return {"val_confidence": confidence.cpu().numpy(), "val_correct": correct.cpu().numpy(),
            "val_label_logprob": label_logprob.cpu().numpy(), "val_labels": labels.cpu().numpy().astype("int32"),
            "scaling_tokens": half, "temperature": temperature, "scaled_confidence": s_conf.cpu().numpy(),
            "scaled_correct": s_correct.cpu().numpy(), "scaled_label_logprob": s_logprob.cpu().numpy(),
            "val_characters": len(data.decode(labels.tolist())), "sample_text": text,
            "parameters": sum(p.numel() for n, p in model.named_parameters() if "position_embedding" not in n)}


class _Scaled(nn.Module):
    def __init__(self, model, temperature: float):
        super().__init__()
        self.model, self.temperature = model, temperature

    def forward(self, tokens):
        return self.model(tokens) / self.temperature


@torch.inference_mode()
def sample_text(model, data: TextData, config: ExperimentConfig, characters: int = SAMPLE_CHARACTERS,
                seed: int | None = None) -> str:
    """``characters`` characters sampled at temperature 1 after a newline (after the validation split's
    first token where the vocabulary has no newline), from a generator seeded with the run's seed (the
    same model gives the same text)."""
    was_training = model.training
    model.eval()
    device = data.val.tokens.device
    generator = torch.Generator().manual_seed(config.seed if seed is None else seed)
    tokens = torch.tensor([_start_token(data)], device=device)
    text = ""
    while len(text) < characters:
        logits = model(tokens[:, -config.data.context :])[0, -1].float().cpu()
        following = torch.multinomial(torch.softmax(logits, 0), 1, generator=generator)
        tokens = torch.cat([tokens, following.to(device)[None]], 1)
        text = data.decode(tokens[0, 1:].tolist())
    model.train(was_training)
    return text[:characters]


def _start_token(data: TextData) -> list[int]:
    """The token a sample starts from: a newline where the tokenizer has one, else the validation split's first."""
    try:
        newline = data.tokenizer.encode("\n")[:1]
    except Exception:  # KeyError: a character tokenizer without "\n", a tokenizer.json that cannot encode it
        newline = []
    return newline or [int(data.val.tokens[0])]
