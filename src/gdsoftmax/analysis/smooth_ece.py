"""smECE (Błasiok & Nakkiran 2024) of many sets of predictions at once: relplot's estimator, batched.

relplot computes one smECE at a time: a bisection over the kernel width σ (eleven smoothings, each two direct
convolutions of a reflected grid with a Gaussian), about 12 ms for a few hundred samples. A report's bootstrap
asks for hundreds, so this module runs the same bisection in lockstep over a batch of resamples and does each
step's convolutions as one FFT. It follows relplot's arithmetic step by step (grid of ``max(2000, 20/σ) // 2 + 1``
points, linear splitting of each sample between two grid points, reflection at 0 and 1, evaluation on
``max(10/σ, 200)`` points, density floor 1e-4, bisection from σ = 1 with ten halvings, stop below 0.001) with
relplot's default reflected Gaussian kernel; the tests hold it to relplot's own ``smECE`` within 1e-9.

>>> import numpy as np
>>> confidence = np.array([0.9, 0.8, 0.95, 0.6, 0.7, 0.99])
>>> correct = np.array([1.0, 1.0, 1.0, 0.0, 1.0, 1.0])
>>> smooth_ece_batch(confidence[None], correct[None]).shape
(1,)
"""

from __future__ import annotations

import numpy as np
import scipy.fft

__all__ = ["regressions_at", "smooth_ece_batch", "smooth_reliability_curve"]

_MESH_POINTS = 200  # relplot.config.smECE_mesh_pts
_PLOT_MESH_POINTS = 200  # relplot.config.plot_mesh_pts
_DENSITY_FLOOR = 1e-4  # relplot's BaseKernelMixin.smooth
_REFINE, _SMALLEST = 10, 0.001  # relplot.metrics.smECE: bisection steps, and the width below which it stops


def _grid_size(sigma: float) -> int:
    return max(2000, round(20 / sigma)) // 2 + 1


def _on_grid(f: np.ndarray, weights: np.ndarray, size: int) -> np.ndarray:
    """Each row's weights split linearly between the two grid points around its f (rows, size)."""
    rows = f.shape[0]
    bins = (f * (size - 1)).astype(int).clip(0, size - 2)
    frac = f * (size - 1) - bins
    offset = (np.arange(rows) * size)[:, None]
    # bincount adds in input order, as np.add.at does: the same sums
    low = np.bincount((bins + offset).ravel(), ((1 - frac) * weights).ravel(), minlength=rows * size)
    high = np.bincount((bins + 1 + offset).ravel(), (frac * weights).ravel(), minlength=rows * size)
    return (low + high).reshape(rows, size)


def _smoothed(grid: np.ndarray, sigma: float, size: int) -> np.ndarray:
    """Each row of ``grid`` reflected at both ends and convolved with a Gaussian of width ``sigma``, on the grid."""
    t = np.linspace(0, 1, size)
    kernel = np.exp(-(t - 0.5) * (t - 0.5) / (2 * sigma**2)) / (np.sqrt(2 * np.pi) * sigma)
    flipped = grid[:, ::-1]
    reflected = np.concatenate([flipped[:, :-1], grid, flipped[:, 1:]], axis=1)
    n_fft = scipy.fft.next_fast_len(reflected.shape[1] + size - 1, real=True)
    full = scipy.fft.irfft(scipy.fft.rfft(reflected, n_fft) * scipy.fft.rfft(kernel, n_fft), n_fft)
    start = size - 1 + size // 2  # 'valid' starts at size - 1; relplot keeps size points from size // 2 on
    return full[:, start:start + size]


def _interpolate(t: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Each row of ``values`` (on an even grid over [0, 1]) linearly interpolated at ``t``."""
    inds = (t * (values.shape[1] - 1)).astype(int).clip(0, values.shape[1] - 2)
    step = 1 / (values.shape[1] - 1)
    residual = (t - inds * step) / step
    return values[:, inds] * (1 - residual) + values[:, inds + 1] * residual


def _smooth_ece_at(f: np.ndarray, residual: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """smECE of each row at its own kernel width (the rows of one bisection step share a few widths)."""
    out = np.empty(len(f))
    for sigma in np.unique(sigmas):
        rows = np.flatnonzero(sigmas == sigma)
        t = np.linspace(0, 1, max(round(10 / sigma), _MESH_POINTS))
        smoothed = _smoothed_at(f[rows], residual[rows], sigma, t)
        density = _smoothed_at(f[rows], np.ones_like(f[rows]), sigma, t) + _DENSITY_FLOOR
        out[rows] = np.sum(np.abs(smoothed / density) * density, axis=1) / np.sum(density, axis=1)
    return out


def _smece_and_width(f: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    residual = f - y

    def holds(rows: np.ndarray, alphas: np.ndarray) -> np.ndarray:  # relplot's check_smooth_ece, row by row
        ok = alphas < _SMALLEST
        wide = rows[~ok]
        ok[~ok] = alphas[~ok] < _smooth_ece_at(f[wide], residual[wide], alphas[~ok])
        return ok

    everyone = np.arange(len(f))
    searching = everyone[~holds(everyone, np.ones(len(f)))]  # the rest keep sigma = 1, as relplot's search does
    start, end = np.ones(len(f)), np.zeros(len(f))
    for _ in range(_REFINE):
        mid = (start[searching] + end[searching]) / 2
        ok = holds(searching, mid)
        end[searching[ok]], start[searching[~ok]] = mid[ok], mid[~ok]
    sigma = np.ones(len(f))
    sigma[searching] = start[searching]
    return _smooth_ece_at(f, residual, sigma), sigma


def _rows(confidence: np.ndarray, correct: np.ndarray, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    f, y = np.asarray(confidence, dtype=np.float64), np.asarray(correct, dtype=np.float64)
    shape = "(B, N)" if ndim == 2 else "(N,)"
    if f.ndim != ndim or f.shape != y.shape or f.shape[-1] == 0:
        raise ValueError(f"confidence and correct must both be {shape} with N >= 1, got {f.shape} and {y.shape}")
    return f, y


def smooth_ece_batch(confidence: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """smECE with its automatic kernel width for each row of ``confidence`` and ``correct`` (B, N): the width σ
    bisected to where smECE at σ equals σ, as relplot's ``smECE``; returns (B,)."""
    return _smece_and_width(*_rows(confidence, correct, 2))[0]


def _smoothed_at(f: np.ndarray, weights: np.ndarray, sigma: float, t: np.ndarray) -> np.ndarray:
    """relplot's kernel ``apply`` for every row at one width, evaluated at ``t`` (rows, len(t))."""
    size = _grid_size(sigma)
    return _interpolate(t, _smoothed(_on_grid(f, weights, size), sigma, size))


def smooth_reliability_curve(confidence: np.ndarray, correct: np.ndarray, n_bootstrap: int = 50,
                             seed: int = 0) -> dict[str, np.ndarray | float]:
    """The data of a smoothed reliability diagram, as relplot's ``prepare_rel_diagram`` computes it, from one
    seeded draw: ``mesh`` (200 points), ``mu`` (the mean of ``n_bootstrap`` kernel regressions of correctness on
    confidence, each on a bootstrap resample, at smECE's width), ``lower`` and ``upper`` (their 2.5 and 97.5 %
    quantiles), ``fits`` (those regressions), ``density`` of the confidences, ``ce`` (smECE) and ``sigma`` (its
    width). relplot draws its resamples from an unseeded generator, so its band moves from one call to the next;
    this one does not.

    >>> curve = smooth_reliability_curve(np.array([0.6, 0.9, 0.95, 0.99]), np.array([1.0, 0.0, 1.0, 1.0]))
    >>> curve["mu"].shape, bool((curve["lower"] <= curve["upper"]).all())
    ((200,), True)
    """
    f, y = _rows(confidence, correct, 1)
    if n_bootstrap < 2:
        raise ValueError(f"n_bootstrap must be >= 2, got {n_bootstrap}")
    picks = np.random.default_rng(seed).integers(len(f), size=(n_bootstrap, len(f)))
    ce, sigma = (float(v[0]) for v in _smece_and_width(f[None], y[None]))
    mesh = np.linspace(0, 1, _PLOT_MESH_POINTS)
    fits = regressions_at(f[picks], y[picks], sigma, mesh)
    return {"mesh": mesh, "mu": fits.mean(0), "lower": np.quantile(fits, 0.025, axis=0),
            "upper": np.quantile(fits, 0.975, axis=0), "ce": ce, "sigma": sigma, "fits": fits,
            "density": _smoothed_at(f[None], np.full((1, len(f)), 1 / len(f)), sigma, mesh)[0]}


def regressions_at(f: np.ndarray, y: np.ndarray, sigma: float, t: np.ndarray) -> np.ndarray:
    """Each row's kernel regression of y on f at width ``sigma``, evaluated at ``t`` (relplot's KernelSmoother)."""
    return _smoothed_at(f, y, sigma, t) / (_smoothed_at(f, np.ones_like(f), sigma, t) + _DENSITY_FLOOR)
