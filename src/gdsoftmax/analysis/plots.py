"""The paper's figures as PNGs. matplotlib is imported only here, with the Agg backend."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from gdsoftmax.analysis.files import atomic_write_bytes
from gdsoftmax.loss import theory
from gdsoftmax.loss.schedules import describe_beta

__all__ = ["band", "calibration_trend", "confidence_dynamics", "feature_scatter", "gradient_curves", "interval_bars",
           "learning_curves", "low_confidence_curves", "reliability_diagrams"]


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> Path:
    """Save as PNG and close. A figure laid out by matplotlib's constrained layout already fits its canvas; any
    other is cropped to what it draws (``bbox_inches="tight"``, which draws it twice)."""
    from matplotlib.layout_engine import ConstrainedLayoutEngine

    path = Path(path)
    fitted = isinstance(fig.get_layout_engine(), ConstrainedLayoutEngine)
    image = io.BytesIO()  # drawn whole, then written whole: an interrupted report leaves no half a PNG
    fig.savefig(image, format="png", dpi=110, bbox_inches=None if fitted else "tight")
    pyplot().close(fig)
    return atomic_write_bytes(path, image.getvalue())


def palette(n):
    return pyplot().cm.viridis(np.linspace(0, 0.9, max(n, 1)))


def reliability_diagrams(panels, path, suptitle="Reliability diagrams (test set)"):
    """Fig. 6 style. ``panels``: list of (label, BinStats, ece, mce); one column per label."""
    plt = pyplot()
    fig, axes = plt.subplots(2, len(panels), figsize=(3.2 * len(panels), 5.6), squeeze=False,
                             gridspec_kw={"height_ratios": [3, 1]}, sharex=True, layout="constrained")
    for col, (label, bins, ece, mce) in enumerate(panels):
        edges = bins.edges.numpy()
        centers, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
        occupied = bins.counts.numpy() > 0  # empty bins draw nothing
        accuracy = np.where(occupied, np.nan_to_num(bins.accuracy.numpy()), 0.0)
        confidence = np.where(occupied, np.nan_to_num(bins.mean_confidence.numpy()), 0.0)
        top, bottom = axes[0, col], axes[1, col]
        top.bar(centers, accuracy, width, edgecolor="black", color="tab:blue", label="accuracy")
        top.bar(centers, confidence - accuracy, width, bottom=accuracy, color="tab:red", alpha=0.35,
                edgecolor="tab:red", hatch="//", label="gap to confidence")
        top.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
        top.set(title=f"{label}\nECE {100 * ece:.2f} %, MCE {100 * mce:.2f} %", ylim=(0, 1), xlim=(0, 1))
        counts = bins.counts.numpy()
        bottom.bar(centers, counts / max(counts.sum(), 1), width, color="gray", edgecolor="black")
        bottom.set(xlabel="confidence", ylim=(0, 1))
        if col == 0:
            top.set_ylabel("accuracy")
            bottom.set_ylabel("fraction of samples")
            top.legend(loc="upper left", fontsize=7)
    fig.suptitle(suptitle)
    return save_figure(fig, path)


def confidence_dynamics(panels, path, n_trajectories=12, seed=0, samples=None):
    """Fig. 3. ``panels``: list of (label, epochs (E,), p_true (E, N)); one row per label.

    Left: p_c of training samples over epochs: ``samples`` (indices, the same in every row; say how
    they were chosen in the caption), or else ``n_trajectories`` drawn at random per row. Right: mean
    p_c of five groups of samples split by their final p_c, from hard (lowest) to easy (highest);
    see :func:`hardness_order`.
    """
    plt = pyplot()
    fig, axes = plt.subplots(len(panels), 2, figsize=(10, 2.6 * len(panels)), squeeze=False, sharex=True,
                             layout="constrained")
    rng = np.random.default_rng(seed)
    for row, (label, epochs, p_true) in enumerate(panels):
        p_true = p_true.astype(np.float32)
        chosen = samples if samples is not None else \
            rng.choice(p_true.shape[1], size=min(n_trajectories, p_true.shape[1]), replace=False)
        left, right = axes[row]
        for i, sample in enumerate(chosen):
            left.plot(epochs, p_true[:, sample], lw=1, color=palette(len(chosen))[i])
        left.set(title=f"{label}: {len(chosen)} training samples", ylabel="true-class probability p_c", ylim=(0, 1.02))
        groups = np.array_split(hardness_order(p_true), 5)
        for i, (group, color) in enumerate(zip(groups, palette(5), strict=True)):
            name = ["hardest 20 %", "hard", "middle", "easy", "easiest 20 %"][i]
            right.plot(epochs, p_true[:, group].mean(1), color=color, label=name, lw=2)
        right.set(title=f"{label}: mean p_c, 5 groups by final p_c", ylim=(0, 1.02))
        right.legend(fontsize=7, loc="lower right")
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
        ax.set_xscale("log")
    fig.suptitle("Training dynamics: when do hard and easy samples become confident?")
    return save_figure(fig, path)


def hardness_order(p_true: np.ndarray) -> np.ndarray:
    """Training samples from hardest to easiest: by final p_c, ties by mean p_c over the recorded epochs.

    At small beta most final p_c round to exactly 1 in the float16 record, so the final value
    alone leaves most samples tied; the mean over epochs ranks those by how early they got there.
    """
    p_true = p_true.astype(np.float32)
    return np.lexsort((p_true.mean(0), p_true[-1]))


INTERVALS = [(0.0, 0.2), (0.2, 0.4), (0.4, 0.6), (0.6, 0.8), (0.8, 1.0)]


def interval_counts(p_true: np.ndarray) -> list[int]:
    """Table 1: how many samples have p_c in (0, .2], (.2, .4], (.4, .6], (.6, .8], (.8, 1]."""
    edges = np.array([0.2, 0.4, 0.6, 0.8])
    index = np.searchsorted(edges, p_true.astype(np.float64), side="left")  # (a, b] intervals, 0 -> first
    return np.bincount(index, minlength=5).tolist()


def interval_bars(rows, path, title):
    """``rows``: list of (label, counts of the five intervals)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.6), layout="constrained")
    width = 0.8 / len(rows)
    x = np.arange(5)
    for i, ((label, counts), color) in enumerate(zip(rows, palette(len(rows)), strict=True)):
        ax.bar(x + i * width, counts, width, label=label, color=color)
    ax.set_xticks(x + 0.4 - width / 2, [f"({a:g}, {b:g}]" for a, b in INTERVALS])
    ax.set(yscale="log", xlabel="true-class probability p_c", ylabel="training samples", title=title)
    ax.legend(fontsize=7, ncol=2)
    return save_figure(fig, path)


def feature_scatter(panels, path, max_points=3000, seed=0):
    """Fig. 1. ``panels``: list of (label, features (N, 2), labels (N,))."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.6), squeeze=False)
    rng = np.random.default_rng(seed)
    for ax, (label, features, labels) in zip(axes[0], panels, strict=True):
        keep = rng.choice(len(labels), size=min(max_points, len(labels)), replace=False)
        scatter = ax.scatter(features[keep, 0], features[keep, 1], c=labels[keep], cmap="tab10", s=3, vmin=0, vmax=9)
        ax.set(title=label, xlabel="feature 1", ylabel="feature 2")
    handles, _names = scatter.legend_elements()
    fig.legend(handles, [f"class {n}" for n in range(len(handles))], loc="center right", fontsize=7)
    fig.suptitle("2-D penultimate features of test samples, coloured by class")
    fig.tight_layout(rect=(0, 0, 0.92, 1))
    return save_figure(fig, path)


def learning_curves(curves, path, title):
    """Figs 4/5/8. ``curves``: list of (label, epochs, train_ce (S, E), test_acc (S, E)); mean +- std over seeds."""
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    lows = []
    for (label, epochs, train_ce, test_acc), color in zip(curves, palette(len(curves)), strict=True):
        # the loss spans decades: its band is mean +- std of log10, drawn on a log axis
        logs = np.log10(np.clip(np.asarray(train_ce, dtype=np.float64), 1e-12, None))
        mean, std = logs.mean(0), logs.std(0)
        left.plot(epochs, 10**mean, color=color, label=label)
        left.fill_between(epochs, 10 ** (mean - std), 10 ** (mean + std), color=color, alpha=0.2)
        acc = 100 * np.asarray(test_acc)
        mean, std = acc.mean(0), acc.std(0)
        right.plot(epochs, mean, color=color, label=label)
        right.fill_between(epochs, mean - std, mean + std, color=color, alpha=0.2)
        lows.append(np.percentile(mean, 10))
    left.set(yscale="log", xlabel="epoch", ylabel="plain cross-entropy on train (geometric mean)",
             title="Training loss (CE)")
    right.set(xlabel="epoch", ylabel="test accuracy (%)", title="Test accuracy (y axis from the 10th percentile)")
    right.set_ylim(max(0, min(lows) - 1), min(100, right.get_ylim()[1]))
    left.legend(fontsize=7)
    fig.suptitle(title)
    return save_figure(fig, path)


def gradient_curves(betas, path, num_classes=10):
    """Figs 2 and 7: the gradient magnitude G against p_c and against z_c (other logits 0)."""
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    p = np.linspace(0, 1, 501)
    z = np.linspace(-5, 20, 501)
    for beta, color in zip(betas, palette(len(betas)), strict=True):
        left.plot(p, theory.gradient_magnitude(p, beta), color=color, label=describe_beta(beta))
        left.axvline(theory.inflection_point(beta), color=color, ls=":", lw=1)
        _, g = theory.equal_logits_profile(z, num_classes, beta)
        right.plot(z, g.numpy(), color=color, label=describe_beta(beta))
    left.set(xlabel="true-class probability p_c", ylabel="gradient magnitude G = -∂J/∂z_c",
             title="G against p_c (dotted: inflection 1/(1+β))")
    right.set(xlabel=f"true logit z_c ({num_classes} classes, other logits 0)", ylabel="G",
              title="G against z_c")
    left.legend(fontsize=7)
    fig.suptitle("Probability-dependent gradient decay")
    return save_figure(fig, path)


def calibration_trend(rows, path, title):
    """ECE and MCE against beta. ``rows``: list of (beta, {series: (mean, std)}) for ECE and MCE."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    betas = [b for b, _ in rows]
    for ax, metric in zip(axes, ("ECE", "MCE"), strict=True):
        for series, marker in (("raw", "o"), ("temperature scaling", "s"), ("vector scaling", "^")):
            means = [100 * r[f"{metric} {series}"][0] for _, r in rows]
            stds = [100 * r[f"{metric} {series}"][1] for _, r in rows]
            ax.errorbar(betas, means, yerr=stds, marker=marker, capsize=3, label=series)
        ax.set(xscale="log", xlabel="β", ylabel=f"{metric} (%)", title=f"{metric} against β (mean ± std over seeds)")
        ax.legend(fontsize=7)
    fig.suptitle(title)
    return save_figure(fig, path)


def band(ax, x, values, color, label, scale="linear"):
    """The mean over seeds as a line, and their min–max as a shaded band."""
    values = np.asarray(values, dtype=np.float64)
    ax.plot(x, values.mean(0), color=color, label=label)
    ax.fill_between(x, values.min(0), values.max(0), color=color, alpha=0.15)
    ax.set_yscale(scale)


def smooth_reliability_diagrams(panels, path, suptitle="Smoothed reliability diagrams (test set)"):
    """smECE's reliability curves (Błasiok & Nakkiran 2024). ``panels``: list of (label, curve) with
    ``curve`` from :func:`gdsoftmax.analysis.estimators.smooth_reliability`; one column per label."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6), squeeze=False, sharey=True,
                             layout="constrained")
    for ax, (label, curve) in zip(axes[0], panels, strict=True):
        mesh, mu = np.asarray(curve["mesh"]), np.asarray(curve["mu"])
        ax.fill_between(mesh, curve["lower"], curve["upper"], color="tab:blue", alpha=0.2, label="bootstrap band")
        ax.plot(mesh, mu, color="tab:blue", label="smoothed accuracy")
        ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
        density = np.asarray(curve["density"], dtype=np.float64)
        ax.fill_between(mesh, 0, 0.3 * density / max(density.max(), 1e-12), color="gray", alpha=0.3,
                        label="density of confidences")
        ax.set(title=f"{label}\nsmECE {100 * curve['ce']:.2f} %", xlim=(0, 1), ylim=(0, 1), xlabel="confidence")
    axes[0, 0].set_ylabel("accuracy")
    axes[0, 0].legend(loc="upper left", fontsize=7)
    fig.suptitle(suptitle)
    return save_figure(fig, path)


def low_confidence_curves(curves, paper, path, title):
    """Table 1's first row along training. ``curves``: list of (label, epochs, counts (S, E)) drawn as
    mean and min–max over seeds; ``paper``: list of (label, count) drawn as markers right of the last
    epoch (the paper does not say when it counted)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.2))
    colors = palette(len(curves))
    last = max(max(epochs) for _, epochs, _ in curves)
    for (label, epochs, counts), color in zip(curves, colors, strict=True):
        band(ax, epochs, counts, color, f"{label} (ours)", scale="log")
    for (label, count), color in zip(paper, colors, strict=False):
        ax.scatter([last * 1.6], [count], marker="D", color=color, edgecolor="black", zorder=3,
                   label=f"{label} (paper, epoch not stated)")
    ax.set(xscale="log", xlabel="epoch", ylabel="training samples with p_c <= 0.2", title=title)
    ax.legend(fontsize=7, ncol=2)
    return save_figure(fig, path)
