"""Neural-collapse metrics (Papyan, Han & Donoho 2020) of features H and a classifier W.

* NC1 = tr(Sigma_W Sigma_B^+) / K: within-class variability relative to between-class.
* NC2 = || M M^T / ||M M^T||_F - (I - 11^T/K) / sqrt(K-1) ||_F for the centred class means M
  (rows mu_k - mu_G), and the same for the classifier rows: distance from a simplex ETF.
* NC3 = || W / ||W||_F - M / ||M||_F ||_F: alignment of the classifier with the class means.

All are 0 at an exact simplex equiangular tight frame with collapsed features and W = M.

>>> import torch
>>> means = simplex_etf(4, dim=6)
>>> labels = torch.arange(4).repeat(3)
>>> m = collapse_metrics(means[labels], labels, means)
>>> all(abs(m[k]) < 1e-6 for k in ("nc1", "nc2_features", "nc2_classifier", "nc3"))
True
"""

from __future__ import annotations

import math

import torch

__all__ = ["collapse_metrics", "simplex_etf"]


def simplex_etf(num_classes: int, dim: int, dtype=torch.float64) -> torch.Tensor:
    """K unit vectors in R^dim (dim >= K) with pairwise cosine -1/(K-1); (K, dim)."""
    if dim < num_classes:
        raise ValueError(f"a simplex ETF of {num_classes} vectors is embedded here in dim >= K, got dim={dim}")
    k = num_classes
    etf = math.sqrt(k / (k - 1)) * (torch.eye(k, dtype=dtype) - 1.0 / k)  # (K, K), rows of unit norm
    return torch.cat([etf, torch.zeros(k, dim - k, dtype=dtype)], dim=1)


def _etf_distance(rows: torch.Tensor) -> float:
    k = rows.shape[0]
    gram = rows @ rows.T
    target = (torch.eye(k, dtype=rows.dtype) - 1.0 / k) / math.sqrt(k - 1)
    return float(torch.linalg.norm(gram / torch.linalg.norm(gram) - target))


def collapse_metrics(features: torch.Tensor, labels: torch.Tensor, classifier: torch.Tensor) -> dict[str, float]:
    """features (N, d), labels (N,), classifier (K, d) -> NC1, NC2 (features, classifier), NC3."""
    h, w = features.double(), classifier.double()
    k = w.shape[0]
    means = torch.stack([h[labels == c].mean(0) for c in range(k)])  # (K, d)
    centred = means - means.mean(0)  # class means minus the global mean (balanced classes)
    within = h - means[labels]  # (N, d)
    sigma_w = within.T @ within / len(h)
    sigma_b = centred.T @ centred / k
    nc1 = float(torch.trace(sigma_w @ torch.linalg.pinv(sigma_b, hermitian=True)) / k)
    nc3 = float(torch.linalg.norm(w / torch.linalg.norm(w) - centred / torch.linalg.norm(centred)))
    return {"nc1": nc1, "nc2_features": _etf_distance(centred), "nc2_classifier": _etf_distance(w), "nc3": nc3}
