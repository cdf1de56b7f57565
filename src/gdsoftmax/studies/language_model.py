"""``gdsoftmax study lm``: what β does to a language model (issue 28), read from a sweep of text runs.

Per run it reads the engine's per-token validation arrays (:mod:`gdsoftmax.engine.tasks.tokens`) and
measures, on the whole validation split: the loss under plain cross-entropy (never the β-loss's value)
in nats per token and per character, perplexity, next-token accuracy, the top-1 ECE at 15 bins,
smECE and confidence − accuracy; and, on the half of the split that temperature scaling did not see,
ECE and NLL before and after it. Every setting is compared with β = 1 seed by seed (paired t-tests),
Holm-corrected within each metric's family (every setting against β = 1 on that metric). The same
values go to ``runs.csv`` (the "test" columns hold the unseen half), so the registered claims' verdicts
(``claims.csv``) are recomputed from it as for every report; a corpus is none of the data sets the
paper's claims are made on, so the ledger lists them as outside the claims' scope.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from gdsoftmax.analysis import plots
from gdsoftmax.analysis.binned import ECE_BINS, bin_sums
from gdsoftmax.analysis.estimators import binned_ece, smooth_ece
from gdsoftmax.analysis.files import write_text_atomically
from gdsoftmax.analysis.metrics import BinStats
from gdsoftmax.analysis.run_metrics import RunMetrics
from gdsoftmax.analysis.stats import format_mean_std, format_p
from gdsoftmax.engine.rundir.view import RunView
from gdsoftmax.studies.bottom_line import claims_verdict
from gdsoftmax.studies.claims import Families, group_rows, verdicts_from_runs_csv
from gdsoftmax.studies.markdown import markdown_table
from gdsoftmax.studies.run_table import RunRow, read_runs_csv, write_runs_csv
from gdsoftmax.studies.runs import Run, load_runs
from gdsoftmax.studies.verdicts import write_verdicts

__all__ = ["NANOGPT_VAL_LOSS", "build_lm_study", "lm_row", "lm_values"]

# nanoGPT's README: the character-level baby GPT on a CPU (4 layers, 4 heads, 128 wide, context 64, batch 12,
# 2,000 iterations, no dropout) reaches a validation loss of about 1.88; the anchor asks for it within 0.05
NANOGPT_VAL_LOSS, ANCHOR_TOLERANCE = 1.88, 0.05
N_BINS = ECE_BINS
# (runs.csv column, table header, scale, digits): the whole validation split, then the unseen half
SPLIT_COLUMNS = [("val loss", "val loss (nats/token)", 1, 4), ("nats per character", "nats/char", 1, 4),
                 ("val accuracy", "accuracy %", 100, 2), ("val ece", "ECE %", 100, 2), ("val smece", "smECE %", 100, 2),
                 ("val overconfidence", "conf − acc (points)", 100, 2)]
SCALING_COLUMNS = [("test ece", "ECE % (unseen half)", 100, 2), ("temperature ece", "ECE % after TS", 100, 2),
                   ("test nll", "NLL (unseen half)", 1, 4), ("temperature nll", "NLL after TS", 1, 4),
                   ("T", "T", 1, 3)]
VERDICT_METRICS = [("val loss", "val loss", -1, 1), ("val accuracy", "accuracy", 1, 100), ("val ece", "ECE", -1, 100),
                   ("temperature ece", "ECE after TS", -1, 100)]


def lm_values(predictions: dict) -> dict[str, float]:
    """The per-run values of a text run's predictions.npz (see the module docstring).

    >>> p = {"val_confidence": np.array([0.9, 0.6]), "val_correct": np.array([True, False]),
    ...      "val_label_logprob": np.log([0.9, 0.2]), "val_characters": 2, "scaling_tokens": 1,
    ...      "scaled_confidence": np.array([0.5]), "scaled_correct": np.array([False]),
    ...      "scaled_label_logprob": np.log([0.3]), "temperature": 1.5}
    >>> v = lm_values(p)
    >>> round(v["val loss"], 4), v["val accuracy"], round(v["test ece"], 2), round(v["temperature ece"], 2)
    (0.8574, 0.5, 0.6, 0.5)
    """
    conf, correct = (torch.as_tensor(np.asarray(predictions[k])).double() for k in ("val_confidence", "val_correct"))
    logprob = torch.as_tensor(np.asarray(predictions["val_label_logprob"])).double()
    half = int(predictions["scaling_tokens"])
    s_conf, s_correct = (torch.as_tensor(np.asarray(predictions[k])).double()
                         for k in ("scaled_confidence", "scaled_correct"))
    s_logprob = torch.as_tensor(np.asarray(predictions["scaled_label_logprob"])).double()
    whole = {"val loss": float(-logprob.mean()),
             # runs from before the engine recorded val_characters are character-level: a token per character
             "nats per character": float(-logprob.sum()) / int(predictions.get("val_characters", len(logprob))),
             "val accuracy": float(correct.mean()), "val ece": binned_ece(conf, correct, N_BINS),
             "val smece": smooth_ece(conf, correct) if len(conf) > 2 else math.nan,
             "val overconfidence": float(conf.mean() - correct.mean())}
    conf, correct, logprob = conf[half:], correct[half:], logprob[half:]  # the half scaling did not see
    unseen = {"test accuracy": float(correct.mean()), "test ece": binned_ece(conf, correct, N_BINS),
              "test nll": float(-logprob.mean()), "overconfidence": float(conf.mean() - correct.mean()),
              "temperature ece": binned_ece(s_conf, s_correct, N_BINS), "temperature nll": float(-s_logprob.mean()),
              "T": float(predictions["temperature"])}
    return {**whole, **unseen}


def _label(run: Run) -> tuple[str, float | None]:
    """How tables name the run's setting, and its constant β (None for label smoothing, which is no β)."""
    loss = run.config.loss
    if loss.label_smoothing:
        return f"label smoothing {loss.label_smoothing:g} ({loss.beta.describe()})", None
    return run.label + (" (fused linear)" if loss.fused_linear else ""), run.constant_beta


def lm_row(run: Run) -> RunRow:
    """The runs.csv row of a measured text run."""
    label, beta = _label(run)
    final = run.rows[-1]
    metrics = replace(run.metrics, train_accuracy=final.train_acc)
    return RunRow(run.path.name, label, label, beta, run.is_warmup, run.config.seed, metrics, run.config.data.dataset,
                  run.config.model.name, run.config.train.iterations)


def build_lm_study(sweep_dir: str | Path, out_dir: str | Path, *, command: str = "") -> Path:
    """Measure every finished text run under ``sweep_dir``; write report.md, runs.csv, claims.csv and the
    figures into ``out_dir``; return the report's path."""
    runs = [r for r in load_runs(sweep_dir) if "val_confidence" in r.predictions]
    if not runs:
        raise ValueError(f"{sweep_dir} has no finished language-model runs (data.dataset a text corpus)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for run in runs:
        run.metrics = RunMetrics.of(lm_values(run.predictions))
    runs.sort(key=lambda r: (_label(r)[1] is None, _label(r)[1] or 0.0, r.config.seed))
    rows = [lm_row(r) for r in runs]
    write_runs_csv(out / "runs.csv", rows)
    rows = read_runs_csv(out / "runs.csv")  # the report prints what the file holds
    verdicts = verdicts_from_runs_csv(out / "runs.csv")
    write_verdicts(out / "claims.csv", verdicts)
    groups, baseline = group_rows(rows)
    families = Families(groups, baseline)
    figures = _figures(runs, out)
    header = _header(runs, command)
    lines = [*header[:2], "## Verdict", "", *claims_verdict(verdicts), "", *header[2:],
             *_anchor(groups, baseline, runs), *_tables(groups, families),
             *_verdict_table(groups, families), *_claims(verdicts), *figures, *_samples(runs),
             *_compute(runs)]
    return write_text_atomically(out / "report.md", "\n".join(lines) + "\n")


def _header(runs: list[Run], command: str) -> list[str]:
    c = runs[0].config
    params = _parameters(runs[0])
    tokenizer = "characters" if c.data.tokenizer == "char" else (
        f"byte-level BPE of {c.data.vocab_size} tokens trained on the training split" if c.data.tokenizer == "bpe"
        else f"the tokenizer {c.data.tokenizer}")
    options = c.model.options
    return [f"# β on language modelling: {c.data.dataset}, {tokenizer}", "",
            *([f"Made by `{command}`.", ""] if command else []),
            f"A GPT of {options.get('n_layer', 4)} layers, {options.get('n_head', 4)} heads, width "
            f"{options.get('n_embd', 128)} ({params / 1e6:.2f} M parameters without the position embedding), context "
            f"{c.data.context}, batch {c.train.batch_size}, {c.train.iterations:,} iterations of "
            f"{c.train.optimizer_text()} at lr {c.train.lr:g} ({c.train.schedule_text()}), weight decay "
            f"{c.train.weight_decay:g} on matrices, gradient clipping at {c.train.grad_clip:g}. The validation split "
            f"is the last {100 * c.data.val_size:g} % of the text; every token of it is predicted once, from the "
            f"tokens before it in consecutive windows of {c.data.context}. Losses are plain cross-entropy in nats, "
            "never the β-loss's value; confidence is the top-1 softmax probability. Mean ± std over seeds.", ""]


def _parameters(run: Run) -> int:
    """The model's parameters without the position embedding (as nanoGPT counts them): recorded by the
    engine, or counted in the run's checkpoint for runs from before it recorded them."""
    if "parameters" in run.predictions:
        return int(run.predictions["parameters"])
    model = RunView(run.path).checkpoint().model
    return sum(v.numel() for k, v in model.items() if "position_embedding" not in k)


def _anchor(groups, baseline: str | None, runs: list[Run]) -> list[str]:
    if baseline is None:
        return []
    ones = [r.metrics["val loss"] for r in groups[baseline]]
    mean = sum(ones) / len(ones)
    c = runs[0].config
    nanogpt_settings = (c.data.tokenizer == "char" and c.data.context == 64 and c.train.batch_size == 12
                        and c.train.iterations == 2000 and c.model.options.get("n_embd", 128) == 128)
    if not nanogpt_settings:
        return []
    met = abs(mean - NANOGPT_VAL_LOSS) <= ANCHOR_TOLERANCE
    return ["## The anchor: nanoGPT's baby GPT", "",
            f"At β = 1 the validation loss is **{format_mean_std(ones, digits=4)}** nats per character over "
            f"{len(ones)} seed(s) (the whole validation split); nanoGPT reports about {NANOGPT_VAL_LOSS} at the same "
            f"settings (its README; 20 random batches of the validation split). The anchor asks for "
            f"{NANOGPT_VAL_LOSS} ± {ANCHOR_TOLERANCE}: **{'met' if met else 'not met'}** "
            f"({mean - NANOGPT_VAL_LOSS:+.3f}).", ""]


def _tables(groups, families: Families) -> list[str]:
    def table(columns):
        return markdown_table(["setting", "seeds", *(h for _, h, _, _ in columns)],
                              [[name, str(len(g)), *(format_mean_std([r.metrics[k] for r in g if k in r.metrics],
                                                                     scale, digits) for k, _, scale, digits in columns)]
                               for name, g in groups.items()])

    perplexity = markdown_table(["setting", "perplexity (per token)"],
                                [[name, format_mean_std([math.exp(r.metrics["val loss"]) for r in g], digits=3)]
                                 for name, g in groups.items()])
    return ["## The whole validation split", "", table(SPLIT_COLUMNS), "", perplexity, "",
            "## Temperature scaling", "",
            "T is fitted (NLL, LBFGS) on the first half of the validation tokens; the columns are the second half, "
            "before and after dividing the logits by T.", "", table(SCALING_COLUMNS), ""]


def _verdict_table(groups, families: Families) -> list[str]:
    rows = []
    for metric, name, direction, scale in VERDICT_METRICS:
        for setting, tested in families.family(metric).items():
            c = tested.comparison
            better = "lower" if direction < 0 else "higher"
            if c.undecided:
                word = f"undecided: {c.undecided}"
            elif tested.adjusted < 0.05:
                word = f"{'better' if math.copysign(1, c.difference) == direction else 'worse'} ({better} is better)"
            else:
                word = f"not significant at n = {c.n}"
            rows.append([name, setting, str(c.n), f"{scale * tested.treatment:.4g}", f"{scale * tested.baseline:.4g}",
                         f"{scale * c.difference:+.3g} [{scale * c.ci_low:+.3g}, {scale * c.ci_high:+.3g}]",
                         format_p(c.p_value), format_p(tested.adjusted), word])
    return ["## Each setting against β = 1", "",
            markdown_table(["metric", "setting", "seeds", "its value", "β = 1's", "difference [95 % CI]", "p",
                            "Holm p", "verdict"], rows), "",
            "Paired by seed (t-test). " + families.note() + " Accuracy and ECE in %.", ""]


def _claims(verdicts) -> list[str]:
    if not verdicts:
        return []
    header = ["claim", "setting", "setting's value", "β = 1", "difference [95 % CI]", "d_z", "p", "Holm p", "family",
              "verdict"]
    return ["## Claims", "",
            "The registered claims whose metric these runs have, tested as every report tests them (the \"test\" "
            "values are the unseen half of the validation split). The paper makes none of them on language models: "
            "the ledger lists these rows and does not count them.", "",
            markdown_table(header, [v.cells() for v in verdicts]), "",
            "Each row's Holm family is in its family column: every setting (label smoothing too) against β = 1 on "
            "that metric; the slopes over log10 β form one more family. A slope is a straight line through "
            "whatever shape the values have: read it beside the tables above.", ""]


def _pooled_bins(runs: list[Run]) -> tuple[BinStats, float]:
    conf = torch.cat([torch.as_tensor(np.asarray(r.predictions["val_confidence"])).double() for r in runs])
    correct = torch.cat([torch.as_tensor(np.asarray(r.predictions["val_correct"])).double() for r in runs])
    counts, conf_sums, hit_sums = bin_sums(conf, correct, N_BINS)
    occupied = counts.clamp_min(1)
    nan = torch.full_like(counts, math.nan)
    bins = BinStats(torch.linspace(0, 1, N_BINS + 1), counts, torch.where(counts > 0, conf_sums / occupied, nan),
                    torch.where(counts > 0, hit_sums / occupied, nan))
    return bins, binned_ece(conf, correct, N_BINS)


def _figures(runs: list[Run], out: Path) -> list[str]:
    by_label: dict[str, list[Run]] = {}
    for run in runs:
        by_label.setdefault(_label(run)[0], []).append(run)
    panels = []
    for label, group in by_label.items():
        bins, ece = _pooled_bins(group)
        gaps = (bins.mean_confidence - bins.accuracy).abs().nan_to_num()
        panels.append((label, bins, ece, float(gaps[bins.counts > 0].max())))
    plots.reliability_diagrams(panels, out / "reliability.png",
                               "Next-token reliability (validation split, every seed's tokens pooled)")
    curves = []
    for label, group in by_label.items():
        steps = [r.step for r in group[0].rows]
        losses = np.array([[r.val_ce for r in run.rows] for run in group if len(run.rows) == len(steps)])
        curves.append((label, steps, losses))
    _loss_curves(curves, out / "val_loss.png")
    return ["## Figures", "", "![Reliability diagrams](reliability.png)", "",
            "![Validation loss during training](val_loss.png)", ""]


def _loss_curves(curves, path: Path) -> None:
    plt = plots.pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (label, steps, losses), color in zip(curves, plots.palette(len(curves)), strict=True):
        mean, std = losses.mean(0), losses.std(0)
        ax.plot(steps, mean, color=color, label=label, marker="o", ms=3)
        ax.fill_between(steps, mean - std, mean + std, color=color, alpha=0.2)
    ax.axhline(NANOGPT_VAL_LOSS, color="gray", ls=":", lw=1, label=f"nanoGPT's {NANOGPT_VAL_LOSS} (chars)")
    ax.set(xlabel="iteration", ylabel="validation loss (plain CE, nats per token)",
           title="Validation loss during training (mean ± std over seeds)")
    ax.legend(fontsize=7)
    plots.save_figure(fig, path)


def _samples(runs: list[Run]) -> list[str]:
    lines = ["## Samples", "", "300 characters per setting at temperature 1, after a newline, from its first seed.",
             ""]
    seen = set()
    for run in runs:
        label = _label(run)[0]
        if label in seen or "sample_text" not in run.predictions:
            continue
        seen.add(label)
        text = str(run.predictions["sample_text"]).replace("```", "'''")
        lines += [f"**{label}** (seed {run.config.seed}):", "", "```text", text, "```", ""]
    return lines


def _compute(runs: list[Run]) -> list[str]:
    seconds = sum(r.rows[-1].wall_time for r in runs)
    return ["## Compute", "", f"{len(runs)} runs, {seconds / 60:.1f} minutes of training and evaluation in all "
            f"(wall time recorded by the runs; {seconds / len(runs):.0f} s per run).", ""]
