"""train.log = ["mlflow"]: one MLflow run per cell under a parent per sweep, in a SQLite store in --out;
metrics equal to metrics.jsonl at their epochs; a killed and resumed run continues its MLflow run without
a duplicate step; an unreachable store costs one line and nothing else; a missing extra names its install."""

import json
import os
import signal
import subprocess
import sys

import pytest

from conftest import wait_for_rows
from gdsoftmax.engine.config.schema import parse_config
from gdsoftmax.engine.loop.trainer import run_experiment
from gdsoftmax.engine.sweeps.sweep import run_sweep
from gdsoftmax.engine.tracking.mlflow import require_mlflow

mlflow = pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402

WARMUP = {"kind": "linear", "start": 0.1, "end": 1.0, "epochs": 2}


def _spec(epochs=3, sweep=None):
    return {"name": "ml", "data": {"val_size": 300}, "model": {"options": {"hidden": [16]}},
            "train": {"epochs": epochs, "lr": 0.05, "log": ["mlflow"], "record_epochs": [1]},
            "sweep": {"loss.beta": [1.0, WARMUP], "seed": [0, 1]} if sweep is None else sweep}


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


def _client(out):
    return MlflowClient(f"sqlite:///{(out / 'mlflow.db').resolve()}")


def test_a_sweep_is_a_parent_run_with_one_child_per_cell(store):
    run_sweep(parse_config(_spec()), store, progress=False, log=lambda *_: None)
    client = _client(store)
    experiment = client.get_experiment_by_name("ml")
    runs = client.search_runs([experiment.experiment_id])
    [parent] = [r for r in runs if r.data.tags.get("gdsoftmax.role") == "sweep"]
    children = sorted((r for r in runs if r is not parent and r.info.run_id != parent.info.run_id),
                      key=lambda r: r.info.run_name)
    assert parent.info.run_name == "ml"
    assert parent.info.status == "FINISHED"  # the whole grid finished
    assert [r.info.run_name for r in children] == ["beta=1_seed=0", "beta=1_seed=1",
                                                   "beta=linear0.1-1_seed=0", "beta=linear0.1-1_seed=1"]
    for child in children:
        tags, params = child.data.tags, child.data.params
        assert tags["mlflow.parentRunId"] == parent.info.run_id
        assert tags["setting"] == child.info.run_name.rsplit("_seed=", 1)[0]  # the seeds of a setting share it
        assert tags["seed"] == child.info.run_name[-1]
        assert child.info.status == "FINISHED"
        assert params["train.epochs"] == "3"
        cell = store / "ml" / child.info.run_name
        rows = [json.loads(line) for line in (cell / "metrics.jsonl").read_text().splitlines()]
        for field in ("test_acc", "train_ce", "val_acc", "beta", "lr"):
            history = client.get_metric_history(child.info.run_id, field)
            assert sorted((m.step, m.value) for m in history) == [
                (r["epoch"], pytest.approx(r[field], rel=1e-9)) for r in rows], field
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert artifacts == {"config.toml", "reliability.png"}
    warm = next(c for c in children if c.info.run_name.startswith("beta=linear"))
    assert warm.data.tags["loss.beta"] == warm.data.params["loss.beta"] == "linear 0.1→1 over 2 epochs"
    assert children[0].data.params["loss.beta"] == "1.0"


def test_an_unreachable_store_costs_one_line_and_the_run_keeps_its_files(store, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    result = run_experiment(parse_config(_spec(epochs=2, sweep={})), store / "run", progress=False)
    assert result["epochs"] == 2
    assert (store / "run" / "metrics.jsonl").exists()
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("MLflow:")]
    assert len(lines) == 1
    assert lines[0].startswith("MLflow: cannot open the run at http://127.0.0.1:9 (")
    assert lines[0].endswith("the run goes on and keeps its own files, without MLflow")


def test_unknown_logger_and_missing_extra_name_the_fix(monkeypatch):
    with pytest.raises(ValueError, match=r"train.log entries must be among \('tensorboard', 'mlflow', 'wandb'\), "
                                         "got 'comet'"):
        parse_config({"train": {"log": ["comet"]}})
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(ValueError, match=r"needs the mlflow package, .*: pip install 'gdsoftmax\[mlflow\]'"):
        require_mlflow()


@pytest.mark.slow  # make test: test_a_resumed_text_run_logs_each_round_once (an interrupt, not a kill)
def test_sigkill_then_resume_logs_every_epoch_once(store):
    config = store / "killed.toml"
    config.write_text('name = "killed"\n[data]\nval_size = 137\n[model]\noptions = { hidden = [16] }\n'
                      '[train]\nepochs = 12\nlr = 0.05\nlog = ["mlflow"]\nrecord_epochs = [1]\n')

    def cli():
        return subprocess.Popen([sys.executable, "-m", "gdsoftmax", "train", str(config), "--out", str(store),
                                 "--no-progress"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})

    killed = cli()
    wait_for_rows(store / "killed", 4, killed, timeout=120)
    killed.send_signal(signal.SIGKILL)
    assert killed.wait(timeout=60) == -signal.SIGKILL
    assert cli().wait(timeout=300) == 0
    client = _client(store)
    [run] = client.search_runs([client.get_experiment_by_name("killed").experiment_id])
    rows = [json.loads(line) for line in (store / "killed" / "metrics.jsonl").read_text().splitlines()]
    for field in ("test_acc", "train_loss"):
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, field))
        assert history == [(r["epoch"], pytest.approx(r[field], rel=1e-9)) for r in rows], field
    assert [r["epoch"] for r in rows] == list(range(1, 13))


def _single(name="one", beta=5.0, epochs=3):
    return parse_config({"name": name, "data": {"val_size": 300}, "model": {"options": {"hidden": [16]}},
                         "loss": {"beta": beta},
                         "train": {"epochs": epochs, "lr": 0.05, "log": ["mlflow"], "record_epochs": [1]}})


def test_restart_discards_the_mlflow_run_of_the_discarded_run(store, monkeypatch):
    monkeypatch.chdir(store)  # nothing of MLflow may land in the working directory
    run_experiment(_single(beta=5.0), store / "one", progress=False)
    run_experiment(_single(beta=0.01), store / "one", progress=False, restart=True)
    client = _client(store)
    [run] = client.search_runs([client.get_experiment_by_name("one").experiment_id])
    assert run.data.params["loss.beta"] == "0.01"
    rows = [json.loads(line) for line in (store / "one" / "metrics.jsonl").read_text().splitlines()]
    history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "train_loss"))
    assert history == [(r["epoch"], pytest.approx(r["train_loss"], rel=1e-9)) for r in rows]
    assert len(client.get_metric_history(run.info.run_id, "final_test_acc")) == 1
    assert not (store / "mlruns").exists()
    artifacts = sorted(p.name for p in (store / "mlartifacts").rglob("*") if p.is_file())
    assert artifacts == ["config.toml", "reliability.png"]


def test_a_finished_run_opened_again_logs_its_final_metrics_once(store):
    run_experiment(_single(), store / "one", progress=False)
    run_experiment(_single(), store / "one", progress=False)  # nothing to train: finish again
    client = _client(store)
    [run] = client.search_runs([client.get_experiment_by_name("one").experiment_id])
    assert len(client.get_metric_history(run.info.run_id, "final_test_acc")) == 1


@pytest.mark.parametrize("store_kind", ["folder", "not_sqlite", "missing_parent"])
def test_an_unusable_sqlite_store_costs_one_line_at_once(store, monkeypatch, capsys, store_kind):
    path = store / "bad.db"
    if store_kind == "folder":
        path.mkdir()
    elif store_kind == "not_sqlite":
        path.write_text("not a database\n" * 10)
    else:
        path = store / "no" / "such" / "bad.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{path}")
    run_experiment(_single(epochs=1), store / "one", progress=False)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    assert err[0].startswith("MLflow: cannot open the run")
    assert (store / "one" / "result.json").exists()


def test_a_resumed_text_run_logs_each_round_once(store, tmp_path):
    from conftest import interrupted_at_epoch

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"{w}: the {x} is fair.\n" for w in ("ROMEO", "JULIET") for x in ("moon", "sun",
                                                                                                 "rose")) * 4)
    config = parse_config({"name": "lm", "data": {"dataset": f"text:{corpus}", "context": 8},
                           "model": {"name": "gpt", "options": {"n_layer": 1, "n_head": 2, "n_embd": 16}},
                           "train": {"iterations": 6, "eval_every": 2, "batch_size": 4, "optimizer": "adamw",
                                     "lr": 3e-3, "log": ["mlflow"], "record_epochs": [1]}})
    with interrupted_at_epoch(3):
        run_experiment(config, store / "lm", progress=False)
    run_experiment(config, store / "lm", progress=False)
    client = _client(store)
    [run] = client.search_runs([client.get_experiment_by_name("lm").experiment_id])
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "train_loss"))
    assert steps == [1, 2, 3]
