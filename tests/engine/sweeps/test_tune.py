"""gdsoftmax tune: an Optuna search whose trials are run directories, with pruning, a SQLite storage,
two workers sharing it, resumption after a kill, and one-line errors for a bad [tune] table."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import wait_for_rows
from gdsoftmax.cli import main
from gdsoftmax.engine.config.schema import ConfigError, load_config, parse_config
from gdsoftmax.engine.rundir.view import RunView

optuna = pytest.importorskip("optuna")

TINY = """name = "tiny_tune"
[data]
val_size = 0.2
[model]
options = {{ hidden = [16] }}
[train]
epochs = {epochs}
batch_size = 64
optimizer = "adamw"
lr = 3e-3
lr_schedule = "cosine"
record_epochs = [{epochs}]
[tune]
objective = "{objective}"
trials = {trials}
[tune.space]
"loss.beta" = {{ low = 0.1, high = 10.0, log = true }}
"""


def write(tmp_path: Path, epochs: int = 3, trials: int = 4, objective: str = "val_nll") -> Path:
    path = tmp_path / "tune.toml"
    path.write_text(TINY.format(epochs=epochs, trials=trials, objective=objective))
    return path


def trials_of(root: Path) -> list[dict]:
    with open(root / "trials.csv", encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_search_writes_runs_trials_best_config_and_report(tmp_path, capsys):
    config = write(tmp_path, objective="val_ece")
    assert main(["tune", str(config), "--out", str(tmp_path / "runs"), "--no-progress"]) == 0
    root = tmp_path / "runs" / "tiny_tune"
    trials = trials_of(root)
    assert len([t for t in trials if t["state"] in ("COMPLETE", "PRUNED")]) == 4
    for t in trials:  # every trial is an ordinary run directory
        assert RunView(root / t["run"]).config().name == t["run"]
    assert RunView(root / "reference").is_finished  # β = 1, the accuracy bound of val_ece
    best = load_config(root / "best.toml")
    assert best.tune == {}
    assert 0.1 <= best.loss.beta.constant <= 10.0
    report = (root / "report.md").read_text(encoding="utf-8")
    assert "Objective: **val_ece** on the validation split" in report
    assert "Reference run (β = 1" in report
    assert "Its test metrics, read once" in report
    chosen = [t for t in trials if t["best"] == "yes"]
    assert len(chosen) == 1
    assert float(chosen[0]["loss.beta"]) == best.loss.beta.constant  # best.toml holds the marked trial's β
    assert main(["train", str(root / "best.toml"), "--out", str(tmp_path / "again"), "--no-progress"]) == 0


@pytest.mark.slow  # two worker processes (13 s); make test-all
def test_two_workers_share_one_sqlite_study(tmp_path):
    config = write(tmp_path, trials=6)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    workers = [subprocess.Popen([sys.executable, "-m", "gdsoftmax", "tune", str(config), "--out",
                                 str(tmp_path / "runs"), "--no-progress", "--worker", str(i)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for i in range(2)]
    errors = [w.communicate(timeout=300)[1].decode() for w in workers]
    assert [w.returncode for w in workers] == [0, 0], errors
    trials = trials_of(tmp_path / "runs" / "tiny_tune")
    finished = [t for t in trials if t["state"] in ("COMPLETE", "PRUNED")]
    assert len(finished) == 6  # a worker that starts a trial beyond the sixth sees it is surplus and stops
    assert len({t["run"] for t in trials}) == len(trials)  # no run directory trained twice


@pytest.mark.slow  # a SIGKILLed worker (make test-all); the resume itself is the engine's, tested there
def test_a_killed_worker_s_trial_resumes_in_its_run_directory(tmp_path):
    config = write(tmp_path, epochs=15, trials=2)
    root = tmp_path / "runs" / "tiny_tune"
    command = [sys.executable, "-m", "gdsoftmax", "tune", str(config), "--out", str(tmp_path / "runs"),
               "--no-progress"]
    worker = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = root / "trial-0000" / "metrics.jsonl"
    wait_for_rows(root / "trial-0000", 5, worker, timeout=120)
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=60)
    epochs_before = metrics.read_text().count("\n")
    assert 5 <= epochs_before < 15
    assert main(["tune", str(config), "--out", str(tmp_path / "runs"), "--no-progress"]) == 0
    trials = trials_of(root)
    zero = [t for t in trials if t["run"] == "trial-0000"]
    assert zero[0]["state"] == "FAIL"  # the killed trial, then its retry in the same directory
    assert zero[-1]["state"] in ("COMPLETE", "PRUNED")
    rows = RunView(root / "trial-0000").rows()
    assert [r.epoch for r in rows] == list(range(1, len(rows) + 1))  # resumed: no epoch trained twice


@pytest.mark.parametrize(("tune", "message"), [
    ({"objective": "val_nll"}, "tune.space is empty"),
    ({"space": {"loss.beta": {"low": 2.0, "high": 1.0}}}, "tune.space.loss.beta needs numbers low < high"),
    ({"space": {"loss.beta": {"low": 0.0, "high": 1.0, "log": True}}}, "tune.space.loss.beta: a log-uniform range "
                                                                         "needs low > 0"),
    ({"space": {"loss.betta": {"low": 0.1, "high": 1.0}}}, "unknown key 'loss.betta'"),
    ({"objective": "test_acc", "space": {"loss.beta": {"low": 0.1, "high": 1.0}}}, "tune.objective must be one of"),
    ({"space": {"train.lr_schedule": {"choices": ["step", "linear"]}}}, "train.lr_schedule must be one of"),
    ({"space": {"loss.beta": {"choices": []}}}, "tune.space.loss.beta.choices must be a non-empty list"),
    ({"prune_after": 100, "space": {"loss.beta": {"low": 0.1, "high": 1.0}}},
     "tune.prune_after must be a whole number of epochs in [0, train.epochs = 100), got 100"),
])
def test_a_bad_tune_table_is_one_line_naming_the_key(tmp_path, capsys, tune, message):
    from gdsoftmax.engine.sweeps.tuning import parse_tune

    with pytest.raises(ConfigError) as caught:
        parse_tune(parse_config({"tune": tune}))
    assert message in str(caught.value)


def test_a_storage_that_cannot_be_opened_is_one_line(tmp_path, capsys):
    config = write(tmp_path)
    text = config.read_text().replace('trials = 4', f'trials = 4\nstorage = "sqlite:///{tmp_path}/no/such/dir/x.db"')
    config.write_text(text)
    assert main(["tune", str(config), "--out", str(tmp_path / "runs"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gdsoftmax tune: error: tune.storage 'sqlite:///")
    assert "cannot be opened" in err
    assert "\n" not in err
    assert not (tmp_path / "runs").exists()  # the failed command leaves no folder behind


def test_pruning_waits_a_third_of_the_epochs_by_default():
    from gdsoftmax.engine.sweeps.tuning import parse_tune

    space = {"loss.beta": {"low": 0.1, "high": 1.0}}
    assert parse_tune(parse_config({"train": {"epochs": 15}, "tune": {"space": space}})).prune_after == 5
    eager = parse_config({"train": {"epochs": 15}, "tune": {"space": space, "prune_after": 0}})
    assert parse_tune(eager).prune_after == 0


def test_a_resumed_search_does_not_replay_the_first_trials(tmp_path):
    config = write(tmp_path, epochs=1, trials=3)
    out = str(tmp_path / "runs")
    assert main(["tune", str(config), "--out", out, "--no-progress"]) == 0
    assert main(["tune", str(config), "--out", out, "--no-progress"]) == 0  # finished: its files, no trial more
    assert len(trials_of(tmp_path / "runs" / "tiny_tune")) == 3
    config.write_text(config.read_text().replace("trials = 3", "trials = 6"))  # the same study, asked for more
    assert main(["tune", str(config), "--out", out, "--no-progress"]) == 0
    betas = [float(t["loss.beta"]) for t in trials_of(tmp_path / "runs" / "tiny_tune")]
    assert len(betas) == 6
    assert set(betas[3:]).isdisjoint(betas[:3])  # the second process draws new values


def test_a_study_is_not_continued_under_another_config(tmp_path, capsys):
    config, out = write(tmp_path, epochs=2, trials=2), str(tmp_path / "runs")
    assert main(["tune", str(config), "--out", out, "--no-progress"]) == 0
    capsys.readouterr()
    code = main(["tune", str(config), "--out", out, "--no-progress", "--set", "tune.trials=4", "--set", "train.lr=0.5"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "holds a study of another config: train.lr (0.003 there, 0.5 now)" in err
    assert "\n" not in err
    assert len(trials_of(tmp_path / "runs" / "tiny_tune")) == 2  # no trial trained under the other lr
    # more trials of the same config continue it; a changed search space does not
    assert main(["tune", str(config), "--out", out, "--no-progress", "--set", "tune.trials=3"]) == 0
    assert len(trials_of(tmp_path / "runs" / "tiny_tune")) == 3
    capsys.readouterr()
    assert main(["tune", str(config), "--out", out, "--no-progress", "--set",
                 'tune.space.loss.beta={low = 0.5, high = 2.0}']) == 2
    assert "tune.space" in capsys.readouterr().err


def test_restart_discards_a_finished_study_and_its_trials(tmp_path):
    config, out = write(tmp_path, epochs=2, trials=3), str(tmp_path / "runs")
    root = tmp_path / "runs" / "tiny_tune"
    assert main(["tune", str(config), "--out", out, "--no-progress"]) == 0
    assert main(["tune", str(config), "--out", out, "--no-progress", "--restart", "--set", "tune.trials=2",
                 "--set", "train.lr=0.01"]) == 0
    trials = trials_of(root)
    assert [t["run"] for t in trials] == ["trial-0000", "trial-0001"]
    assert not (root / "trial-0002").exists()
    assert load_config(root / "best.toml").train.lr == 0.01  # the pair in best.toml was trained as it says
    for t in trials:
        assert RunView(root / t["run"]).config().train.lr == 0.01


def test_a_reference_run_of_another_config_is_refused(tmp_path, capsys):
    config, out = write(tmp_path, epochs=2, trials=2, objective="val_ece"), str(tmp_path / "runs")
    root = tmp_path / "runs" / "tiny_tune"
    assert main(["tune", str(config), "--out", out, "--no-progress"]) == 0
    for leftover in [root / "optuna.db", *root.glob("trial-*")]:  # the study is gone, its reference stays
        leftover.unlink() if leftover.is_file() else __import__("shutil").rmtree(leftover)
    capsys.readouterr()
    assert main(["tune", str(config), "--out", out, "--no-progress", "--set", "train.lr=0.01"]) == 2
    err = capsys.readouterr().err
    assert "reference holds a run of another config: train.lr" in err
    assert RunView(root / "reference").config().train.lr == 0.003  # untouched


def test_a_search_whose_every_trial_diverges_stops_with_one_line(tmp_path, capsys):
    config, out = write(tmp_path, epochs=2, trials=3), str(tmp_path / "runs")
    assert main(["tune", str(config), "--out", out, "--no-progress", "--set", "train.lr=1e30",
                 "--set", "train.optimizer=sgd"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines()[-1].startswith("gdsoftmax tune: error: 3 trial(s) diverged"), err
    assert "Traceback" not in err  # optuna's own lines say each trial was pruned; no trial's traceback
    assert len([line for line in err.splitlines() if line.startswith("gdsoftmax")]) == 1


@pytest.mark.parametrize(("override", "message"), [
    ("data.val_size=0", "data.val_size = 0 leaves no validation split"),
    ("tune.seed='abc'", "tune.seed must be a whole number"),
    ("tune.space={\"train.batch_size\" = {low = 16.5, high = 64}}", "train.batch_size takes whole numbers"),
])
def test_tune_inputs_are_refused_before_training(tmp_path, capsys, override, message):
    config = write(tmp_path)
    assert main(["tune", str(config), "--out", str(tmp_path / "runs"), "--no-progress", "--set", override]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert "\n" not in err
    assert not (tmp_path / "runs").exists()


def test_an_integer_key_is_searched_as_an_integer():
    from gdsoftmax.engine.sweeps.tuning import parse_tune

    spec = parse_tune(parse_config({"data": {"val_size": 0.1},
                                    "tune": {"space": {"train.batch_size": {"low": 16, "high": 64}}}}))
    trial = optuna.trial.FixedTrial({"train.batch_size": 32})
    assert spec.space[0].integer
    assert spec.space[0].suggest(trial) == 32


def test_a_language_model_is_tuned_on_its_validation_tokens(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"{w}: the {x} is fair.\n" for w in ("ROMEO", "JULIET") for x in ("moon", "sun")) * 8)
    config = tmp_path / "lm.toml"
    config.write_text(f'name = "lm"\n[data]\ndataset = "text:{corpus}"\ncontext = 8\n[model]\nname = "gpt"\n'
                      'options = { n_layer = 1, n_head = 2, n_embd = 16 }\n[train]\niterations = 4\neval_every = 2\n'
                      'batch_size = 4\noptimizer = "adamw"\nlr = 3e-3\nrecord_epochs = [1]\n[tune]\n'
                      'objective = "val_ece"\ntrials = 2\nprune_after = 1\n[tune.space]\n'
                      '"loss.beta" = { low = 0.5, high = 2.0, log = true }\n')
    assert main(["tune", str(config), "--out", str(tmp_path / "runs"), "--no-progress"]) == 0
    trials = trials_of(tmp_path / "runs" / "lm")
    assert len(trials) == 2
    assert all(0 <= float(t["val_ece"]) <= 1 for t in trials if t["state"] == "COMPLETE")
    assert "A text corpus has no test split" in (tmp_path / "runs" / "lm" / "report.md").read_text()


def test_the_verdict_sets_every_trial_beside_beta_one_and_names_the_seeded_comparison(tmp_path, capsys):
    config = write(tmp_path, trials=3)
    assert main(["tune", str(config), "--out", str(tmp_path / "runs"), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    root = tmp_path / "runs" / "tiny_tune"
    predictions = RunView(root / "reference").predictions()  # β = 1's NLL recomputed from its predictions
    logits, labels = torch.from_numpy(predictions["val_logits"]).double(), torch.from_numpy(predictions["val_labels"])
    reference = {"val_nll": float(torch.nn.functional.cross_entropy(logits, labels))}
    trials = trials_of(root)
    lines = (root / "report.md").read_text(encoding="utf-8").splitlines()
    assert lines[2] == "## Verdict"
    assert f"{reference['val_nll']:.4f}" in lines[4]
    chosen = next(t for t in trials if t["best"] == "yes")
    if float(chosen["val_nll"]) < reference["val_nll"]:
        assert "candidate, not a verdict" in lines[4]
        assert "sweep.seed=[0, 1, 2, 3, 4]" in lines[4]
        assert "sweep.seed=[0, 1, 2, 3, 4]" in printed
    else:
        assert lines[4].startswith("No trial beat β = 1 on val_nll")
    table = next(line for line in lines if line.startswith("| trial"))
    assert "val_nll − β = 1" in table
    for t in trials:
        if t["val_nll"]:
            row = next(line for line in lines if line.startswith(f"| {t['number']} |"))
            difference = f"{float(t['val_nll']) - reference['val_nll']:+.4f}".replace("-", "−")
            assert difference in row
