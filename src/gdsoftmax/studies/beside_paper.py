"""The paper's printed numbers beside ours: for every setting of a sweep that the paper has a number
for (same data set; same model, or every model it ran when ours is not one of them), with the
version and table it comes from, and the ways our setup differs.
"""

from __future__ import annotations

from gdsoftmax.analysis import plots
from gdsoftmax.analysis.paper import has_model, lookup, setting_key
from gdsoftmax.analysis.stats import format_mean_std
from gdsoftmax.engine.config.schema import ExperimentConfig
from gdsoftmax.engine.rundir.view import RunView
from gdsoftmax.studies.markdown import markdown_table

__all__ = ["beside_the_paper"]


PAPER_METRICS = [("top-1 accuracy %", "test accuracy", 100.0, "{:.2f}"), ("ECE (10 bins)", "test ece", 1.0, "{:.3f}"),
                 ("MCE (10 bins)", "test mce", 1.0, "{:.3f}")]


# The warm-up range (β_initial, β_end) each version states for a data set's warm-up column; a column whose
# range is not stated (arXiv v1's CIFAR-10 and SVHN tables) is set beside no warm-up of ours.
WARMUP_RANGES = {("arXiv v1", "mnist"): (0.001, 0.01),  # v1 line 231
                 ("arXiv v1", "cifar100"): (1.0, 5.0),  # v1 line 286
                 ("ICLR 2024 submission", "mnist"): (0.01, 0.1),  # ICLR line 758
                 **{("ICLR 2024 submission", d): (0.1, 1.0)  # ICLR lines 766-767, the deep models
                    for d in ("cifar10", "cifar100", "svhn", "tiny_imagenet")}}


def _same_warmup(number, ours: tuple[float, float] | None) -> bool:
    """Whether a paper number of a warm-up column is for the range our warm-up runs."""
    return ours is not None and WARMUP_RANGES.get((number.version, number.dataset)) == ours


# The recipe each data set's paragraph states (ICLR Appendix A.1, lines 756-767; arXiv v1 §4.1, lines
# 231-233), for the recipe table; "not stated" where neither version says.
_DEEP = {"epochs": "200", "batch": "100", "lr": "0.01 (÷10 at 50 %, 75 %)", "momentum": "0.9",
         "weight decay": "0.0001", "gradient clipping": "norm 3", "augmentation": "not stated",
         "precision": "not stated", "warm-up length": "not stated"}
PAPER_RECIPES = {
    "mnist": {**_DEEP, "epochs": "100", "lr": "0.001 (schedule not stated)", "gradient clipping": "not stated"},
    "cifar10": _DEEP, "cifar100": _DEEP, "svhn": {**_DEEP, "epochs": "100"},
    "tiny_imagenet": {**_DEEP, "batch": "256", "lr": "0.05 (÷10 at 40 %, 80 %)",
                      "gradient clipping": "\"weight clipping\" at norm 3"},
}


def recipe_table(config: ExperimentConfig, warmup_epochs: list[int], used_precisions: list[str] = ()) -> list[str]:
    """Our recipe beside the one the paper states for the same data set, every row, differences marked. The
    precision row says what the runs *used* (``used_precisions``, from their run directories: "auto" resolves to
    bf16 or fp32 by the device), and falls back to the requested one for runs that did not record it."""
    paper = PAPER_RECIPES.get(config.data.dataset)
    if paper is None:
        return []
    t = config.train
    plain_step = t.lr_schedule == "step" and not (t.warmup_epochs or t.warmup_steps)
    steps = ((f" (÷{1 / t.lr_gamma:g} at {', '.join(f'{m * 100:g} %' for m in t.lr_milestones)})"
              if t.lr_milestones else " (constant)") if plain_step else f" ({t.schedule_text()})")
    ours = {"epochs": str(t.epochs), "batch": str(t.batch_size), "lr": f"{t.lr:g}{steps}",
            "momentum": f"{t.momentum:g}" if t.optimizer == "sgd" else f"none ({t.optimizer_text()})",
            "weight decay": f"{t.weight_decay:g}",
            "gradient clipping": f"norm {t.grad_clip:g}" if t.grad_clip else "none",
            "augmentation": "random crop + flip" if config.data.augment else "none",
            "precision": (", ".join(sorted(set(used_precisions))) + f" (requested: {t.precision})"
                          if used_precisions else t.precision if t.precision != "auto"
                          else "auto (bf16 where the CPU has bf16 units)"),
            "warm-up length": ", ".join(f"{e} epochs" for e in sorted(set(warmup_epochs))) or "no warm-up run"}
    rows = [[key, ours[key], value,
             "" if ours[key] == value else "paper silent" if "not stated" in value else "differs"]
            for key, value in paper.items()]
    return ["The recipe beside the one the paper states for this data set (ICLR Appendix A.1; arXiv v1 §4.1):", "",
            markdown_table(["setting", "ours", "paper", ""], rows), ""]


POST_HOC_METRICS = [("ECE (10 bins)", "ece", "{:.3f}"), ("MCE (10 bins)", "mce", "{:.3f}")]


def beside_the_paper(groups: dict[str, list], config: ExperimentConfig, n_bins: int) -> list[str]:
    """Our numbers beside the paper's for every setting the paper has a number for, with its version,
    table and model, and what in our setup differs from a paper run. A warm-up stands beside a paper's
    warm-up column only where that version states the same range for that data set. For a model the paper did not
    run, the paper's numbers for every model it ran on the same data set stand beside ours."""
    dataset, model = config.data.dataset, config.model.name
    same_model = has_model(dataset, model)
    paper_model = model if same_model else None
    rows = []

    def add(label, metric, ours, scale, fmt, setting, warmup=None):
        digits = {"{:.3f}": 3, "{:.2f}": 2}.get(fmt, 0)
        by_value: dict[tuple, list[str]] = {}  # both versions print some tables alike: one row each value
        for number in lookup(dataset, paper_model, metric, setting):
            if setting == "warm-up" and not _same_warmup(number, warmup):
                continue
            by_value.setdefault((number.model, number.value), []).append(number.citation)
        rows.extend([label, metric, format_mean_std(ours, scale, digits), their_model, fmt.format(value),
                     "; ".join(sources)] for (their_model, value), sources in by_value.items())

    for group in groups.values():
        beta = group[0].constant_beta
        setting = setting_key(beta) if beta is not None else ("warm-up" if group[0].is_warmup else None)
        if setting is None:
            continue
        wanted = [(metric, key, scale, fmt) for metric, key, scale, fmt in PAPER_METRICS
                  if n_bins == 10 or not metric.startswith(("ECE", "MCE"))]
        wanted += [(f"training samples with p_c in the interval ({a:g}, {b:g}]", ("intervals", i), 1.0, "{:.0f}")
                   for i, (a, b) in enumerate(plots.INTERVALS)]
        raw = group[0].config.loss.beta.raw
        warmup = (float(raw["start"]), float(raw["end"])) if group[0].is_warmup else None
        for metric, key, scale, fmt in wanted:
            ours = [r.measures.intervals[key[1]] if isinstance(key, tuple) else r.metrics[key] for r in group]
            add(group[0].label, metric, ours, scale, fmt, setting, warmup)
        # the paper does not say which beta its post-hoc columns started from; without a validation split
        # there is nothing to fit them on
        if beta == 1.0 and n_bins == 10 and "T" in group[0].metrics:
            for method in ("temperature", "vector"):
                for metric, key, fmt in POST_HOC_METRICS:
                    add(f"β = 1, then {method} scaling", metric, [r.metrics[f"{method} {key}"] for r in group],
                        1.0, fmt, f"{method} scaling")
    lines = ["## Beside the paper", ""]
    if n_bins != 10:  # the paper's ECE and MCE are of 10 bins: ours of another count do not stand beside them
        lines += [f"The paper's ECE and MCE use 10 bins and ours here {n_bins}, so they are left out of this "
                  "section: `gdsoftmax report --bins 10` sets them side by side.", ""]
    if not rows:
        return [*lines, f"The paper reports no numbers for {dataset} with {model}.", ""]
    train_size = len(next(iter(groups.values()))[0].samples["labels"])
    lines += [f"Ours: mean ± std over seeds. Our setup: {config.train.epochs} epochs, batch "
              f"{config.train.batch_size}, lr {config.train.lr:g}, a validation split of {config.data.val_size} "
              f"held out of the training set (so Table 1 counts {train_size} training samples, not the whole "
              f"set), inputs standardised per channel, model {model}"
              f"{' ' + str(config.model.options) if config.model.options else ''}"
              f"{'' if same_model else ', which the paper did not run: its rows are its own models'}. Where the "
              "paper's setup differs, its numbers are context, not a replication target.", "",
              markdown_table(["setting", "metric", "ours", "paper model", "paper", "source"], rows), ""]
    warmups = [g[0].config.loss.beta.raw.get("epochs", config.train.epochs) for g in groups.values() if g[0].is_warmup]
    used = [p for g in groups.values() for r in g if (p := RunView(r.path).recorded_precision())]
    return lines + recipe_table(config, warmups, used)
