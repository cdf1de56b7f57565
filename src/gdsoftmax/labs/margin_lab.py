"""The margin lab: the normalized margin of a homogeneous (bias-free) MLP under CE and β-losses.

    gdsoftmax lab margin configs/lab_margin.toml     # normalized margin of a homogeneous MLP, CE vs beta
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gdsoftmax.analysis import plots
from gdsoftmax.analysis.files import write_text_atomically
from gdsoftmax.engine.config.schema import load_config
from gdsoftmax.engine.sweeps.sweep import run_sweep, sweep_root
from gdsoftmax.studies.runs import load_runs

__all__ = ["run_margin_lab"]


def run_margin_lab(config_path: str | Path, out_dir: str | Path, overrides=(), progress: bool = True,
                   data_dir: str | Path | None = None) -> Path:
    """Run the margin sweep (train.track_margin on) and plot margins against epochs per beta."""
    config = load_config(config_path, [*overrides, "train.track_margin=true"])
    if data_dir:
        config.data.data_dir = str(data_dir)
    run_sweep(config, out_dir, progress=progress)
    root = sweep_root(out_dir, config)
    groups: dict[str, list] = {}
    runs = sorted(load_runs(root), key=lambda r: (r.constant_beta is None, -(r.constant_beta or 0), r.setting))
    for run in runs:
        groups.setdefault(run.label, []).append(run)
    plt = plots.pyplot()
    keys = [("train_normalized_margin", "normalized margin  min q / ‖θ‖^L (epochs ≥ 20)", "linear"),
            ("train_smoothed_margin", "smoothed margin (CE) (epochs ≥ 20)", "linear"),
            ("train_parameter_norm", "parameter norm ‖θ‖", "log"), ("train_ce", "train cross-entropy", "log")]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.4 * len(keys), 3.8))
    lines = [f"# Normalized-margin lab: {config.name}", "",
             f"{config.data.dataset}, {config.model.name} {config.model.options} (bias-free, homogeneous), "
             f"{config.train.epochs} epochs, lr {config.train.lr}, weight decay {config.train.weight_decay}, "
             f"seeds per setting: {max(len(g) for g in groups.values())}. Final epoch, mean ± std over seeds.", "",
             "| setting | train acc % | min margin | normalized margin | smoothed margin | ‖θ‖ |",
             "|---|---|---|---|---|---|"]
    late: dict[str, list[float]] = {key: [] for key, _, _ in keys}
    for (label, runs), color in zip(groups.items(), plots.palette(len(groups)), strict=True):
        epochs = [row["epoch"] for row in runs[0].rows]
        for ax, (key, title, scale) in zip(axes, keys, strict=True):
            plots.band(ax, epochs, [[row[key] for row in run.rows] for run in runs], color, label, scale)
            ax.set(title=title, xlabel="epoch", xscale="log")
            late[key] += [row[key] for run in runs for row in run.rows if row["epoch"] >= 20]
        final = [run.rows[-1] for run in runs]

        def cell(key, scale=1.0, final=final):
            values = [scale * f[key] for f in final]
            return f"{np.mean(values):.4g} ± {np.std(values, ddof=1) if len(values) > 1 else 0:.2g}"

        lines.append(f"| {label} | {cell('train_acc', 100)} | {cell('train_min_margin')} | "
                     f"{cell('train_normalized_margin')} | {cell('train_smoothed_margin')} | "
                     f"{cell('train_parameter_norm')} |")
    for ax, (key, _, scale) in zip(axes, keys, strict=True):
        if scale == "linear" and late[key]:  # margins matter once the data are separated
            low, high = min(late[key]), max(late[key])
            ax.set(xlim=(20, None), ylim=(low - 0.05 * (high - low), high + 0.05 * (high - low)))
    axes[0].legend(fontsize=7)
    fig.suptitle("Margins of a homogeneous network under CE and β-softmax (band: min–max over seeds)")
    fig.tight_layout()
    plots.save_figure(fig, root / "margins.png")
    lines += ["", "![margins](margins.png)"]
    return write_text_atomically(root / "report.md", "\n".join(lines) + "\n")
