"""The layer-peeled lab: neural collapse and margins of free features under each loss.

    gdsoftmax lab peeled configs/lab_peeled.toml     # NC metrics and margins against steps, per beta
"""

from __future__ import annotations

import json
import math
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from gdsoftmax.analysis import plots
from gdsoftmax.analysis.files import write_text_atomically
from gdsoftmax.engine.config.schema import RUN_NAME_RULE, ConfigError, build_dataclass, is_run_name
from gdsoftmax.labs.peeled import SETTINGS, PeeledRun, simulate
from gdsoftmax.loss.schedules import describe_beta

DIVERGENT_NORM = 1e6

__all__ = ["PeeledConfig", "load_peeled_config", "run_peeled_lab"]


@dataclass
class PeeledConfig:
    """A grid of layer-peeled runs: every loss in every setting, over seeds."""

    name: str = "layer_peeled"
    betas: list[float] = field(default_factory=lambda: [0.01, 0.1, 1.0, 10.0])
    asm: bool = True
    settings: list[str] = field(default_factory=lambda: list(SETTINGS))
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    run: PeeledRun = field(default_factory=PeeledRun)


def load_peeled_config(path: str | Path) -> PeeledConfig:
    try:
        raw = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"cannot read {path}: {error}") from error
    config = build_dataclass(PeeledConfig, raw)
    if not is_run_name(config.name):
        raise ConfigError(f"name {RUN_NAME_RULE} (it names the output folder), got {config.name!r}")
    bad = [s for s in config.settings if s not in SETTINGS]
    if bad:
        raise ConfigError(f"settings: {bad} are not among {list(SETTINGS)}")
    if any(b <= 0 for b in config.betas):
        raise ConfigError(f"betas must be > 0, got {config.betas}")
    _check_run(config.run)
    return config


def _check_run(run: PeeledRun) -> None:
    """Each [run] value in its range, named in one line (a bad one would fail deep in the simulation)."""
    least = {"num_classes": 2, "per_class": 1, "dim": 1, "steps": 1, "record_every": 1}
    for key, low in least.items():
        if getattr(run, key) < low:
            raise ConfigError(f"run.{key} must be >= {low}, got {getattr(run, key)}")
    for key in ("lr", "tau", "radius_features", "radius_classifier", "init_scale"):
        value = getattr(run, key)
        if not math.isfinite(value) or value <= 0:
            raise ConfigError(f"run.{key} must be a finite number > 0, got {value}")
    if not math.isfinite(run.weight_decay) or run.weight_decay < 0:
        raise ConfigError(f"run.weight_decay must be >= 0, got {run.weight_decay}")


def _label(run: PeeledRun) -> str:
    return "ASM" if run.loss == "asm" else ("CE (β = 1)" if run.beta == 1 else describe_beta(run.beta))


def run_peeled_lab(config: PeeledConfig, out_dir: str | Path) -> Path:
    """Simulate the grid, write metrics.json, one figure per setting and report.md."""
    out = Path(out_dir) / config.name
    out.mkdir(parents=True, exist_ok=True)
    losses = [("beta", b) for b in config.betas] + ([("asm", 1.0)] if config.asm else [])
    results = {}
    for setting in config.settings:
        for loss, beta in losses:
            runs = [PeeledRun(**{**asdict(config.run), "loss": loss, "beta": beta, "setting": setting, "seed": s})
                    for s in config.seeds]
            results[(setting, _label(runs[0]))] = [simulate(r) for r in runs]
    write_text_atomically(out / "metrics.json", json.dumps({f"{s} | {label}": h for (s, label), h in results.items()}))

    plt = plots.pyplot()
    panels = [("nc1", "NC1 (within / between)", "log"), ("nc2_features", "NC2 features (ETF distance)", "log"),
              ("nc3", "NC3 (W vs class means)", "log"), ("min_margin", "minimum sample margin", "linear")]
    r = config.run
    lines = [f"# Layer-peeled lab: {config.name}", "",
             f"K = {r.num_classes} classes × {r.per_class} samples, d = {r.dim}, {r.steps} steps of full-batch GD "
             f"(lr {r.lr}; weight decay {r.weight_decay} when regularized; radii {r.radius_features} / "
             f"{r.radius_classifier} when spherical), seeds {config.seeds}. Final values, mean ± std over seeds.", "",
             "| setting | loss | NC1 | NC2 features | NC2 classifier | NC3 | min margin | feature norm |",
             "|---|---|---|---|---|---|---|---|"]
    for setting in config.settings:
        fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6))
        labels = [label for (s, label) in results if s == setting]
        diverged = []
        for label, color in zip(labels, plots.palette(len(labels)), strict=True):
            histories = results[(setting, label)]
            # a loss that is unbounded below (ASM without a sphere) sends the norms to infinity:
            # tabulated, but kept out of the panels so that the other curves stay readable
            blew_up = any(h["feature_norm"][-1] > DIVERGENT_NORM for h in histories)
            if blew_up:
                diverged.append(label)
            else:
                length = min(len(h["step"]) for h in histories)
                for ax, (key, title, scale) in zip(axes, panels, strict=True):
                    values = [np.maximum(h[key][:length], 1e-12) if scale == "log" else h[key][:length]
                              for h in histories]
                    plots.band(ax, histories[0]["step"][:length], values, color, label, scale)
                    ax.set(title=title, xlabel="gradient step")
            finals = {key: [h[key][-1] for h in histories] for key in histories[0]}
            cells = [f"{np.mean(finals[k]):.3g} ± {np.std(finals[k], ddof=1) if len(finals[k]) > 1 else 0:.2g}"
                     for k in ("nc1", "nc2_features", "nc2_classifier", "nc3", "min_margin", "feature_norm")]
            lines.append(f"| {setting} | {label}{' (diverges)' if blew_up else ''} | " + " | ".join(cells) + " |")
        axes[0].legend(fontsize=7, title=f"not shown, diverges: {', '.join(diverged)}" if diverged else None,
                       title_fontsize=7)
        fig.suptitle(f"Layer-peeled model, {setting}: collapse and margin over training (band: min–max over seeds)")
        fig.tight_layout()
        plots.save_figure(fig, out / f"peeled_{setting}.png")
    lines += [""] + [f"![{s}](peeled_{s}.png)" for s in config.settings]
    return write_text_atomically(out / "report.md", "\n".join(lines) + "\n")
