"""A small decoder-only transformer (GPT) for next-token prediction, registered as ``model.name = "gpt"``.

Pre-norm blocks of causal self-attention (``F.scaled_dot_product_attention``, which picks the fused
kernel the device has) and a 4x GELU MLP, learned positions, and an output layer that shares its
weight with the token embedding. The defaults are nanoGPT's CPU "baby GPT": 4 layers, 4 heads,
128 wide, no dropout, no biases. Weights start at N(0, 0.02), with the residual projections scaled by
1 / sqrt(2 * layers) as GPT-2 does.

``model(tokens)`` gives logits (B, T, V); ``model(tokens, return_features=True)`` gives ``(logits,
features)`` with the final normalised hidden states (B, T, D), which the fused linear β-loss takes
with ``model.classifier.weight`` instead of the logits.

>>> model = gpt((16,), 65)
>>> logits, features = model(torch.zeros(2, 16, dtype=torch.long), return_features=True)
>>> tuple(logits.shape), tuple(features.shape), sum(p.numel() for p in model.parameters())
((2, 16, 65), (2, 16, 128), 797952)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GPT", "gpt"]


class _CausalSelfAttention(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float, bias: bool):
        super().__init__()
        if width % heads:
            raise ValueError(f"n_embd = {width} is not divisible by n_head = {heads}")
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(width, 3 * width, bias=bias)
        self.proj = nn.Linear(width, width, bias=bias)
        self.out_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)  # each (B, H, T, d)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        return self.out_dropout(self.proj(y.transpose(1, 2).reshape(b, t, c)))


class _Block(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float, bias: bool):
        super().__init__()
        self.attention_norm = nn.LayerNorm(width, bias=bias)
        self.attention = _CausalSelfAttention(width, heads, dropout, bias)
        self.mlp_norm = nn.LayerNorm(width, bias=bias)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width, bias=bias), nn.GELU(),
                                 nn.Linear(4 * width, width, bias=bias), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x))
        return x + self.mlp(self.mlp_norm(x))


class GPT(nn.Module):
    """Token and position embeddings, ``n_layer`` blocks, a final norm and the tied output layer."""

    def __init__(self, vocab_size: int, block_size: int, n_layer: int = 4, n_head: int = 4, n_embd: int = 128,
                 dropout: float = 0.0, bias: bool = False):
        super().__init__()
        self.block_size = block_size
        self.token_embedding = nn.Embedding(vocab_size, n_embd)
        self.position_embedding = nn.Embedding(block_size, n_embd)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.Sequential(*(_Block(n_embd, n_head, dropout, bias) for _ in range(n_layer)))
        self.final_norm = nn.LayerNorm(n_embd, bias=bias)
        self.classifier = nn.Linear(n_embd, vocab_size, bias=False)
        self.classifier.weight = self.token_embedding.weight  # tied: one (V, D) matrix
        self.apply(_initialise)
        for name, parameter in self.named_parameters():
            if name.endswith("proj.weight") or name.endswith("mlp.2.weight"):  # the residual branch's outputs
                nn.init.normal_(parameter, 0.0, 0.02 / math.sqrt(2 * n_layer))

    def forward(self, tokens: torch.Tensor, return_features: bool = False):
        """tokens (B, T) int64 with T <= block_size -> logits (B, T, V) [, features (B, T, D)]."""
        features = self.hidden(tokens)
        logits = self.classifier(features)
        return (logits, features) if return_features else logits

    def hidden(self, tokens: torch.Tensor) -> torch.Tensor:
        """The final normalised hidden states (B, T, D): everything but the output layer."""
        t = tokens.shape[1]
        if t > self.block_size:
            raise ValueError(f"a window of {t} tokens is longer than the model's block_size {self.block_size}")
        positions = torch.arange(t, device=tokens.device)
        x = self.dropout(self.token_embedding(tokens) + self.position_embedding(positions))
        return self.final_norm(self.blocks(x))

    def optimizer_groups(self, weight_decay: float) -> list[dict]:
        """Weight decay on the matrices (and embeddings) only, not on norms and biases, as GPT recipes do."""
        decayed = [p for p in self.parameters() if p.dim() >= 2]
        plain = [p for p in self.parameters() if p.dim() < 2]
        return [{"params": decayed, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


def _initialise(module: nn.Module) -> None:
    if isinstance(module, nn.Linear | nn.Embedding):
        nn.init.normal_(module.weight, 0.0, 0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


def gpt(image_shape, num_classes, penultimate_dim=None, n_layer: int = 4, n_head: int = 4, n_embd: int = 128,
        dropout: float = 0.0, bias: bool = False, block_size: int | None = None) -> GPT:
    """The registry's builder: ``image_shape`` is ``(context,)``, ``num_classes`` the vocabulary size;
    ``block_size`` (the longest window the model takes) defaults to the context."""
    if penultimate_dim:
        raise ValueError("model.penultimate_dim is for classifiers of images; the gpt model has none")
    (context,) = image_shape
    return GPT(num_classes, block_size or context, n_layer, n_head, n_embd, dropout, bias)
