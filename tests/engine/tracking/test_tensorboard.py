"""train.log = ["tensorboard"]: the event files mirror metrics.jsonl, a resumed run draws no curve
twice, hyperparameters and the reliability diagram arrive at the end, and errors say what to do."""

import json
import sys

import pytest

from conftest import interrupted_at_epoch
from gdsoftmax.engine.config.schema import parse_config
from gdsoftmax.engine.sweeps.sweep import run_sweep
from gdsoftmax.engine.tracking.tensorboard import scalar_tag

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def _events(run_dir):
    accumulator = event_accumulator.EventAccumulator(str(run_dir),
                                                     size_guidance={event_accumulator.SCALARS: 0,
                                                                    event_accumulator.IMAGES: 0})
    return accumulator.Reload()


def _spec(epochs=3):
    return {"name": "tb", "data": {"val_size": 300}, "model": {"options": {"hidden": [16]}},
            "train": {"epochs": epochs, "lr": 0.05, "log": ["tensorboard"], "record_epochs": [1]},
            "sweep": {"loss.beta": [1.0, 0.1], "seed": [0]}}


def test_a_sweep_writes_one_tensorboard_run_per_cell_equal_to_its_metric_rows(tmp_path):
    run_sweep(parse_config(_spec()), tmp_path, progress=False, log=lambda *_: None)
    cells = sorted(p for p in (tmp_path / "tb").iterdir() if p.is_dir())
    assert [c.name for c in cells] == ["beta=0.1_seed=0", "beta=1_seed=0"]
    for cell in cells:
        rows = [json.loads(line) for line in (cell / "metrics.jsonl").read_text().splitlines()]
        events = _events(cell)
        for field in ("train_loss", "train_ce", "val_acc", "test_acc", "test_ce", "beta", "lr"):
            logged = [(e.step, e.value) for e in events.Scalars(scalar_tag(field))]
            assert logged == [(r["epoch"], pytest.approx(r[field], rel=1e-6)) for r in rows], field
        [image] = events.Images("calibration/reliability_and_confidence_histogram")
        assert image.width > 300
        assert image.height > 300
        assert any("tfevents" in p.name for p in cell.glob("*"))  # events in the run directory: the run is the cell


def test_a_resumed_run_draws_each_epoch_once(tmp_path):
    config = parse_config({**_spec(epochs=4), "sweep": {}})
    from gdsoftmax.engine.loop.trainer import run_experiment

    with interrupted_at_epoch(3):
        run_experiment(config, tmp_path / "run", progress=False)
    run_experiment(config, tmp_path / "run", progress=False)
    steps = [e.step for e in _events(tmp_path / "run").Scalars("test/acc")]
    assert steps == [1, 2, 3, 4]


def test_a_restarted_run_loses_its_old_events_even_when_it_no_longer_logs_to_tensorboard(tmp_path):
    """--restart discards what every tracker wrote into the folder (the tracker registry's discard), not only
    the trackers the new config names; the run's own files go through the run directory's writer."""
    from gdsoftmax.engine.loop.trainer import train

    logged = parse_config({**_spec(epochs=1), "sweep": {}})
    train([logged], [tmp_path / "run"], progress=False)
    (tmp_path / "run" / "notes.txt").write_text("mine")
    assert list((tmp_path / "run").glob("events.out.tfevents.*"))
    quiet = parse_config({**_spec(epochs=1), "sweep": {}, "train": {**_spec()["train"], "epochs": 1, "log": []}})
    train([quiet], [tmp_path / "run"], progress=False, restart=True)
    assert not list((tmp_path / "run").glob("events.out.tfevents.*"))
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine"  # nothing else in the folder is touched
    assert (tmp_path / "run" / "result.json").exists()


def test_tags_and_errors(monkeypatch):
    assert scalar_tag("test_acc") == "test/acc"
    assert scalar_tag("train_loss") == "train/loss"
    assert scalar_tag("beta") == "schedule/beta"
    with pytest.raises(ValueError, match=r"train.log entries must be among \('tensorboard', 'mlflow', 'wandb'\), "
                                         "got 'comet'"):
        parse_config({"train": {"log": ["comet"]}})
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    from gdsoftmax.engine.tracking.tensorboard import TensorBoardLog

    with pytest.raises(ValueError, match=r"pip install 'gdsoftmax\[tensorboard\]'"):
        TensorBoardLog("unused")


def test_hparams_show_the_swept_keys_and_a_readable_beta(tmp_path):
    from tensorboard.plugins.hparams import plugin_data_pb2

    spec = {**_spec(epochs=2), "sweep": {"loss.beta": [1.0, {"kind": "linear", "start": 0.1, "end": 1.0,
                                                              "epochs": 2}], "seed": [0, 1]}}
    run_sweep(parse_config(spec), tmp_path, progress=False, log=lambda *_: None)
    cell = tmp_path / "tb" / "beta=linear0.1-1_seed=1"
    accumulator = event_accumulator.EventAccumulator(str(cell))
    accumulator.Reload()
    content = accumulator.PluginTagToContent("hparams")
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    names = [info.name for info in experiment.hparam_infos]
    assert names == ["loss.beta", "seed", "setting"]  # the swept keys and the group the seeds share, no more
    assert "config/text_summary" in accumulator.Tags()["tensors"]  # the whole config beside them, as text
    session = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = session.session_start_info.hparams
    assert hparams["loss.beta"].string_value == "linear 0.1→1 over 2 epochs"
    assert hparams["setting"].string_value == "beta=linear0.1-1"
    assert hparams["seed"].number_value == 1
    constant = plugin_data_pb2.HParamsPluginData.FromString(
        _content(tmp_path / "tb" / "beta=1_seed=0")["_hparams_/session_start_info"])
    assert constant.session_start_info.hparams["loss.beta"].number_value == 1.0  # a number, not a string


def _content(run_dir):
    accumulator = event_accumulator.EventAccumulator(str(run_dir))
    accumulator.Reload()
    return accumulator.PluginTagToContent("hparams")
