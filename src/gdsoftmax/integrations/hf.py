"""The β-loss for Hugging Face causal language models.

transformers computes a causal LM's loss by shifting the labels one position left (the token at
t is predicted from the positions before it), ignoring -100, and, under gradient accumulation,
summing and dividing by ``num_items_in_batch`` (the number of predicted tokens in the whole
accumulated batch) instead of averaging per micro-batch. These functions do the same with the
β-loss, so at beta = 1 they equal the model's own loss:

* :func:`causal_lm_loss` (logits, labels): usable as ``Trainer(compute_loss_func=BetaLossForTrainer(beta))``;
* :func:`causal_lm_fused_loss` (hidden states, LM head weight, labels): the fused linear β-loss,
  the (tokens, vocabulary) logits never materialised whole; :func:`fused_lm_loss` runs a model's
  backbone and head that way.

>>> import torch
>>> logits, labels = torch.randn(2, 5, 11), torch.randint(11, (2, 5))
>>> loss = causal_lm_loss(logits, labels, beta=0.5)
>>> loss.shape
torch.Size([])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gdsoftmax.loss.functional import gradient_decay_loss
from gdsoftmax.loss.fused import fused_linear_gradient_decay_loss
from gdsoftmax.loss.triton_beta import available as triton_available
from gdsoftmax.loss.triton_beta import interpreted
from gdsoftmax.loss.triton_linear import triton_fused_linear_loss

__all__ = ["BetaLossForTrainer", "causal_lm_fused_loss", "causal_lm_loss", "fused_lm_loss", "shift_labels"]


def shift_labels(labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """(B, T) labels -> (B * T,) targets: position t's target is the label at t + 1, the last ignored."""
    return F.pad(labels, (0, 1), value=ignore_index)[..., 1:].reshape(-1)


def _reduction(num_items_in_batch) -> str:
    return "sum" if num_items_in_batch is not None else "mean"


def _divide(loss: torch.Tensor, num_items_in_batch) -> torch.Tensor:
    if num_items_in_batch is None:
        return loss
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(loss.device)
    return loss / num_items_in_batch


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor, *, beta: float = 1.0, tau: float = 1.0,
                   num_items_in_batch: int | torch.Tensor | None = None, ignore_index: int = -100,
                   label_smoothing: float = 0.0, backend: str = "auto") -> torch.Tensor:
    """The β-loss of a causal LM: logits (B, T, V), labels (B, T) unshifted, as transformers' loss.

    The logits are read in float32 (as transformers upcasts them); with ``num_items_in_batch`` the
    per-token losses are summed and divided by it (gradient accumulation), else averaged.
    """
    targets = shift_labels(labels.to(logits.device), ignore_index)
    loss = gradient_decay_loss(logits.reshape(-1, logits.shape[-1]).float(), targets, beta, tau=tau,
                               ignore_index=ignore_index, reduction=_reduction(num_items_in_batch),
                               label_smoothing=label_smoothing, backend=backend)
    return _divide(loss, num_items_in_batch)


def _logits(outputs) -> torch.Tensor:
    """The logits of a model's outputs: a ModelOutput or dict, or the tuple of ``return_dict=False``
    (the logits first, after the loss when the model computed one)."""
    if isinstance(outputs, dict):
        return outputs["logits"]
    if isinstance(outputs, tuple | list):
        first = outputs[0]
        return outputs[1] if first.dim() == 0 and len(outputs) > 1 else first
    return outputs.logits


class BetaLossForTrainer:
    """``Trainer(compute_loss_func=BetaLossForTrainer(beta=0.5))``: the Trainer passes the model's
    outputs, the labels and ``num_items_in_batch``; this returns the β-loss."""

    def __init__(self, beta: float = 1.0, *, tau: float = 1.0, label_smoothing: float = 0.0, backend: str = "auto"):
        self.beta, self.tau, self.label_smoothing, self.backend = beta, tau, label_smoothing, backend

    def __call__(self, outputs, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
        return causal_lm_loss(_logits(outputs), labels, beta=self.beta, tau=self.tau,
                              num_items_in_batch=num_items_in_batch,
                              label_smoothing=self.label_smoothing, backend=self.backend)

    def __repr__(self) -> str:
        return f"BetaLossForTrainer(beta={self.beta}, tau={self.tau}, label_smoothing={self.label_smoothing})"


def causal_lm_fused_loss(hidden_states: torch.Tensor, head_weight: torch.Tensor, labels: torch.Tensor, *,
                         beta: float = 1.0, head_bias: torch.Tensor | None = None, tau: float = 1.0,
                         num_items_in_batch: int | torch.Tensor | None = None, ignore_index: int = -100,
                         label_smoothing: float = 0.0, chunk_rows: int | None = None) -> torch.Tensor:
    """The β-loss of ``hidden_states @ head_weight.T (+ head_bias)`` for a causal LM, without the
    logits: hidden states (B, T, H), head weight (V, H), labels (B, T) unshifted. On the Triton
    kernel for CUDA tensors (and under TRITON_INTERPRET=1); otherwise the chunked PyTorch kernel,
    which takes no label smoothing."""
    targets = shift_labels(labels.to(hidden_states.device), ignore_index)
    hidden = hidden_states.reshape(-1, hidden_states.shape[-1])  # (B * T, H)
    reduction = _reduction(num_items_in_batch)
    if triton_available() and (hidden.is_cuda or interpreted()):
        loss = triton_fused_linear_loss(hidden, head_weight, targets, beta, bias=head_bias, tau=tau,
                                        ignore_index=ignore_index, reduction=reduction,
                                        label_smoothing=label_smoothing, chunk_rows=chunk_rows)
    else:
        if label_smoothing:
            raise ValueError("label smoothing on the fused path needs the Triton kernel (a CUDA tensor, or "
                             "TRITON_INTERPRET=1); use causal_lm_loss on the logits instead")
        loss = fused_linear_gradient_decay_loss(hidden, head_weight, targets, beta, bias=head_bias, tau=tau,
                                                ignore_index=ignore_index, reduction=reduction,
                                                chunk_rows=chunk_rows)
    return _divide(loss, num_items_in_batch)


def fused_lm_loss(model, input_ids: torch.Tensor, labels: torch.Tensor, *, beta: float = 1.0,
                  attention_mask: torch.Tensor | None = None, num_items_in_batch=None, **options) -> torch.Tensor:
    """Run a transformers causal LM's backbone and take the fused β-loss on its LM head: the same
    value as ``causal_lm_loss(model(input_ids).logits, labels)``, without the logits."""
    backbone = getattr(model, model.base_model_prefix)
    head = model.get_output_embeddings()
    hidden = backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)
    return causal_lm_fused_loss(hidden, head.weight, labels, beta=beta, head_bias=head.bias,
                                num_items_in_batch=num_items_in_batch, **options)
