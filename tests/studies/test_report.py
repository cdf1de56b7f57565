"""Reports and plots from a real (tiny) sweep: every table, figure and claim is produced."""

from __future__ import annotations

import math
from dataclasses import astuple
from pathlib import Path

import pytest

from gdsoftmax.analysis.stats import mean_std, paired_comparison, verdict
from gdsoftmax.cli import main
from gdsoftmax.studies.measures import measure
from gdsoftmax.studies.report import build_report
from gdsoftmax.studies.runs import load_runs

SWEEP = """
name = "rep"
[data]
dataset = "digits"
val_size = 300
[model]
penultimate_dim = 2
[train]
epochs = 6
lr = 0.05
record_epochs = [1, 2, 4]
[sweep]
"loss.beta" = [5.0, 1.0, 0.05, {{ kind = "linear", start = 0.05, end = 0.5, epochs = 6 }}]
seed = [0, 1, 2]
"""


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    (root / "rep.toml").write_text(SWEEP.format())
    assert main(["sweep", str(root / "rep.toml"), "--out", str(root / "runs"), "--no-progress"]) == 0
    return root / "runs" / "rep"


@pytest.fixture(scope="module")
def built(sweep, tmp_path_factory):
    """One report of the sweep (15 bins), shared by the tests that only read it."""
    out = tmp_path_factory.mktemp("built")
    assert main(["report", str(sweep), "--out", str(out), "--bins", "15"]) == 0  # through the command line
    return out, (out / "report.md").read_text()


def test_report_has_every_section_and_figure(built):
    tmp_path, text = built
    for section in ("Final test metrics", "Post-hoc calibration", "Table 1", "Convergence", "Reliability",
                    "2-D features", "Claims", "gdsoftmax report ", "Calibration estimators of current practice"):
        assert section in text
    for png in ("reliability", "confidence_dynamics", "confidence_intervals", "learning_curves", "features",
                "gradient_decay", "calibration_trend", "smooth_reliability"):
        assert (tmp_path / f"{png}.png").stat().st_size > 10_000
    assert text.count("| β = 0.05 |") >= 3
    assert "β linear 0.05→0.5" in text
    claims = text.split("## Claims")[1]
    rows = [line for line in claims.splitlines() if line.startswith("| ") and not line.startswith("| claim")]
    verdicts = [row.rsplit("|", 2)[-2].strip() for row in rows]
    # 8 claims about β < 1 (7 small, 1 over-small), 5 about β > 1, 4 about the warm-up, 3 trends over constant β
    assert len(verdicts) == 8 + 5 + 4 + 3
    assert "Table 1's first row along training" in text
    assert sum("slope per decade of β, 9 runs" in row for row in rows) == 3
    assert {v.split(":")[0] for v in verdicts} <= {"confirmed", "refuted", "inconclusive", "undecided"}
    assert "± " in text


def test_a_run_is_measured_once_into_its_typed_metrics(sweep):
    run = next(r for r in load_runs(sweep) if r.constant_beta == 1.0)
    measure(run, 15)
    logits, labels = run.predictions["test_logits"], run.predictions["test_labels"]
    assert run.metrics.test_accuracy == pytest.approx(float((logits.argmax(1) == labels).mean()), abs=1e-6)
    final = run.samples["p_true"][-1]
    assert run.metrics.low_confidence_count == int((final <= 0.2).sum())
    assert sum(run.measures.intervals) == len(final)
    assert sorted(run.measures.low_confidence_along_training) == [int(e) for e in run.samples["epochs"]]
    assert run.metrics.fitted_temperature > 0  # fitted on its validation split
    with pytest.raises(ValueError, match="was measured already; a report measures each run once"):
        measure(run, 15)


def test_report_command_and_errors(built, tmp_path, capsys):
    assert (built[0] / "report.md").exists()  # the module's report is written by the command
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_paired_statistics():
    c = paired_comparison([1.0, 2.0, 3.5], [0.5, 1.0, 2.0])
    assert c.difference == pytest.approx(1.0)
    assert c.p_value == pytest.approx(0.0742, abs=1e-3)  # t = 1 / (0.5 / sqrt 3) = 3.46, df 2
    assert verdict(c, +1) == "inconclusive"
    strong = paired_comparison([1.0, 2.0, 3.0, 4.0], [0.0, 1.1, 1.9, 3.0])
    assert verdict(strong, +1) == "confirmed"
    assert verdict(strong, -1) == "refuted"
    assert mean_std([1.0, 3.0]) == (2.0, pytest.approx(math.sqrt(2)))
    with pytest.raises(ValueError, match="equal numbers"):
        paired_comparison([1.0], [1.0, 2.0])


SHARED = Path(__file__).resolve().parents[3] / "shared" / "datasets"


@pytest.mark.skipif(not (SHARED / "MNIST").exists(), reason="needs the MNIST copy in ../shared/datasets")
@pytest.mark.slow  # real MNIST through a report (13 s); the digits report tests cover the section
def test_the_paper_numbers_stand_beside_ours(tmp_path):
    from gdsoftmax.engine.config.schema import parse_config
    from gdsoftmax.engine.sweeps.sweep import run_sweep

    spec = {"name": "mnist", "data": {"dataset": "mnist", "data_dir": str(SHARED), "download": False,
                                      "val_size": 59000},
            "train": {"epochs": 1, "record_epochs": [1]}, "sweep": {"loss.beta": [1.0, 0.1], "seed": [0, 1]}}
    run_sweep(parse_config(spec), tmp_path, progress=False, log=lambda *_: None)
    text = build_report(tmp_path / "mnist").read_text()
    section = text.split("## Beside the paper")[1].split("## ")[0]
    assert "| β = 0.1 | training samples with p_c in the interval (0, 0.2] |" in section
    assert "| 1105 | arXiv v1, Table 1; ICLR 2024 submission, Table 1 |" in section  # both versions print it
    assert "Table 1 counts 1000 training samples, not the whole set" in section


# real CIFAR-10 through the whole report (45 s); test_report_has_every_section_and_figure is the fast one
@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "CIFAR10").exists(), reason="needs the CIFAR-10 copy in ../shared/datasets")
def test_a_model_the_paper_did_not_run_stands_beside_the_papers_models(tmp_path):
    from gdsoftmax.engine.config.schema import parse_config
    from gdsoftmax.engine.sweeps.sweep import run_sweep

    spec = {"name": "c10", "data": {"dataset": "cifar10", "data_dir": str(SHARED), "download": False,
                                    "val_size": 49000},
            "model": {"name": "small_cnn", "options": {"width": 4}},
            "train": {"epochs": 1, "record_epochs": [1], "eval_batch_size": 2000},
            "sweep": {"loss.beta": [20.0, 1.0], "seed": [0, 1]}}
    run_sweep(parse_config(spec), tmp_path, progress=False, log=lambda *_: None)
    section = build_report(tmp_path / "c10", n_bins=10).read_text().split("## Beside the paper")[1].split("## ")[0]
    assert "which the paper did not run" in section
    # Table 3's CIFAR-10 row (ICLR version): ECE 0.023 at beta = 20, temperature scaling 0.014
    assert "| ECE (10 bins) |" in section
    assert "| resnet18 | 0.023 | ICLR 2024 submission, Table 3 |" in section
    assert "| β = 1, then temperature scaling | ECE (10 bins) |" in section
    assert "| resnet18 | 0.014 | ICLR 2024 submission, Table 3 |" in section
    assert "| vgg16 | 93.00 | ICLR 2024 submission, Table 2 |" in section  # beta = 1, every model it ran


def _table_rows(text: str, heading: str) -> list[list[str]]:
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("| ")][1:]  # past the header
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines]


def _plain(verdict) -> tuple:
    return tuple(None if isinstance(x, float) and math.isnan(x) else x for x in astuple(verdict))


def test_verdicts_recompute_from_runs_csv_alone(built):
    """The claims table of a report equals the one recomputed from its runs.csv, cell for cell."""
    from gdsoftmax.studies.claims import verdicts_from_runs_csv
    from gdsoftmax.studies.verdicts import read_verdicts

    tmp_path, text = built
    recomputed = verdicts_from_runs_csv(tmp_path / "runs.csv")
    assert [_plain(v) for v in recomputed] == [_plain(v) for v in read_verdicts(tmp_path / "claims.csv")]
    assert _table_rows(text, "## Claims") == [v.cells() for v in recomputed]
    runs = (tmp_path / "runs.csv").read_text().splitlines()
    assert len(runs) == 1 + 12  # a row per run
    assert "swept: loss.beta" in runs[0]
    assert "p_c<=0.2 @ epoch 4" in runs[0]


def test_one_comparison_has_one_corrected_p_in_a_report(built):
    """The final-metrics table and the claims table print the same Holm p for the same comparison, and
    every table with a corrected p names its family."""
    _, text = built
    final = {row[0]: row for row in _table_rows(text, "## Final test metrics")}
    claims = _table_rows(text, "## Claims")
    accuracy = next(row for row in claims if row[0] == "`small-beta-accuracy`" and row[1] == "β = 0.05")
    assert f"(p={float(accuracy[7]):.3f})" in final["β = 0.05"][3]
    ece = next(row for row in claims if row[0] == "`large-beta-ece`")
    assert f"(p={float(ece[7]):.3f})" in final["β = 5"][5]
    assert "test accuracy vs β = 1 (k = 3)" in accuracy[8]  # β = 5, 0.05 and the warm-up
    for heading in ("## Final test metrics", "## Convergence", "## Claims"):
        assert "Holm famil" in text.split(heading, 1)[1].split("\n## ", 1)[0]


def test_trend_tests_are_corrected_over_the_reports_trends(built):
    from gdsoftmax.analysis.stats import holm
    from gdsoftmax.studies.verdicts import read_verdicts

    tmp_path, _ = built
    trends = [v for v in read_verdicts(tmp_path / "claims.csv") if v.setting.startswith("slope")]
    assert len(trends) == 3
    assert [v.holm_p for v in trends] == pytest.approx(holm([v.p for v in trends]))
    assert all(v.family_size == 3 for v in trends)


def test_a_warmup_stands_beside_the_paper_column_of_its_own_range():
    from gdsoftmax.analysis.paper import lookup
    from gdsoftmax.studies.beside_paper import _same_warmup

    numbers = lookup("cifar10", "resnet18", "top-1 accuracy %", "warm-up")
    [iclr] = [n for n in numbers if n.version == "ICLR 2024 submission"]
    [v1] = [n for n in numbers if n.version == "arXiv v1"]
    assert _same_warmup(iclr, (0.1, 1.0))  # ICLR A.1 states 0.1 -> 1 for the deep models
    assert not _same_warmup(iclr, (0.01, 0.1))
    assert not _same_warmup(v1, (0.1, 1.0))  # arXiv v1 states no range for CIFAR-10
    assert not _same_warmup(iclr, None)


def test_a_sweep_without_a_validation_split_reports_without_post_hoc(tmp_path):
    (tmp_path / "noval.toml").write_text(SWEEP.format().replace("val_size = 300", "val_size = 0")
                                         .replace("epochs = 6", "epochs = 2").replace("[1, 2, 4]", "[1, 2]")
                                         .replace('"loss.beta" = [5.0, 1.0, 0.05, {{ kind = "linear", start = 0.05, '
                                                  'end = 0.5, epochs = 6 }}]'.format(), '"loss.beta" = [1.0, 5.0]')
                                         .replace("seed = [0, 1, 2]", "seed = [0, 1]"))
    assert main(["sweep", str(tmp_path / "noval.toml"), "--out", str(tmp_path / "runs"), "--no-progress"]) == 0
    text = build_report(tmp_path / "runs" / "rep", tmp_path / "out", n_bins=10).read_text()
    assert "None: the runs hold out no validation split" in text


def test_report_on_a_language_model_sweep_names_the_study_that_reads_it(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"{w}: the {x} is fair.\n" for w in ("ROMEO", "JULIET") for x in ("moon", "sun")) * 8)
    config = tmp_path / "lm.toml"
    config.write_text(f'name = "lm"\n[data]\ndataset = "text:{corpus}"\ncontext = 8\n[model]\nname = "gpt"\n'
                      'options = { n_layer = 1, n_head = 2, n_embd = 16 }\n[train]\niterations = 2\neval_every = 1\n'
                      'batch_size = 4\noptimizer = "adamw"\nlr = 3e-3\nrecord_epochs = [1]\n')
    assert main(["train", str(config), "--out", str(tmp_path / "runs"), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["report", str(tmp_path / "runs" / "lm")]) == 2
    err = capsys.readouterr().err.strip()
    assert "is a language model's run" in err
    assert f"use gdsoftmax study lm {tmp_path / 'runs' / 'lm'}" in err
    assert "\n" not in err


def test_a_report_made_while_cells_are_unfinished_names_them(sweep, tmp_path):
    import shutil

    from gdsoftmax.studies.report import runs_to_know_about
    from gdsoftmax.studies.runs import load_runs

    copy = tmp_path / "rep"
    shutil.copytree(sweep, copy)
    unfinished = sorted(p for p in copy.iterdir() if p.is_dir())[0]
    (unfinished / "result.json").unlink()  # stopped after its last checkpoint, before its result
    text = "\n".join(runs_to_know_about(copy, load_runs(copy)))
    assert f"**1 cell(s) have not finished and are in no table below:** {unfinished.name} (stopped; rerun" in text


def test_every_entry_point_defaults_to_the_same_bins():
    """The command line, gdsoftmax.api and the report builder all bin ECE alike unless told otherwise."""
    import inspect

    from gdsoftmax import api
    from gdsoftmax.analysis.binned import ECE_BINS
    from gdsoftmax.cli import build_parser

    assert inspect.signature(api.report).parameters["bins"].default == ECE_BINS
    assert inspect.signature(build_report).parameters["n_bins"].default == ECE_BINS
    assert build_parser().parse_args(["report", "runs/x"]).bins == ECE_BINS


def test_the_recipe_table_prints_the_precision_the_runs_used():
    from gdsoftmax.engine.config.schema import parse_config
    from gdsoftmax.studies.beside_paper import recipe_table

    config = parse_config({"data": {"dataset": "mnist"}, "train": {"precision": "auto"}})
    row = next(line for line in recipe_table(config, [], ["fp32", "fp32"]) if "| precision |" in line)
    assert "| fp32 (requested: auto) |" in row
    older = next(line for line in recipe_table(config, []) if "| precision |" in line)  # runs that did not record it
    assert "auto (bf16 where the CPU has bf16 units)" in older


def _csv_rows(path: Path) -> list[list[str]]:
    import csv

    with open(path, newline="") as handle:
        return list(csv.reader(handle))


def _close(mine: str, theirs: str) -> bool:
    try:
        return math.isclose(float(mine), float(theirs), rel_tol=1e-9, abs_tol=1e-12) or mine == theirs
    except ValueError:
        return mine == theirs


@pytest.mark.slow  # a second report through a fresh interpreter (40 s); make test-all
def test_a_report_made_with_forked_workers_equals_one_made_in_one_process(sweep, tmp_path, monkeypatch):
    """The command line forks the post-hoc fits and the figures off (a fresh process may fork); made here with
    forks refused, the report says the same. Threads differ (the children compute on one), so floats agree to
    rounding."""
    import subprocess
    import sys

    import gdsoftmax.analysis.background as background

    counting = f"""
import multiprocessing.context as context
import sys
from gdsoftmax.cli import main
start, started = context.ForkProcess.start, []
context.ForkProcess.start = lambda process: started.append(process) or start(process)
code = main(["report", {str(sweep)!r}, "--out", {str(tmp_path / "f")!r}])
print(len(started))
sys.exit(code)
"""
    forked = subprocess.run([sys.executable, "-c", counting], capture_output=True, text=True, timeout=600)
    assert forked.returncode == 0, forked.stderr
    assert forked.stdout.splitlines()[-1] == "2"  # the fits' child and the figures' child
    monkeypatch.setattr(background, "fork_is_safe", lambda: False)
    assert main(["report", str(sweep), "--out", str(tmp_path / "s")]) == 0
    texts = [(tmp_path / kind / "report.md").read_text().replace(str(tmp_path / kind), "OUT") for kind in ("f", "s")]
    assert texts[0] == texts[1]
    for name in ("runs.csv", "claims.csv"):
        mine, theirs = _csv_rows(tmp_path / "f" / name), _csv_rows(tmp_path / "s" / name)
        assert [len(row) for row in mine] == [len(row) for row in theirs]
        assert all(_close(x, y) for a, b in zip(mine, theirs, strict=True) for x, y in zip(a, b, strict=True)), name
    figures = [sorted(p.name for p in (tmp_path / kind).glob("*.png")) for kind in ("f", "s")]
    assert figures[0] == figures[1]
