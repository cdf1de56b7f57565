"""User errors end in one clear line: paths, sections given whole, lr milestones, distributed start-up."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from gdsoftmax.cli import main
from gdsoftmax.engine.config.schema import ConfigError, load_config, parse_config
from gdsoftmax.engine.loop.trainer import learning_rate
from gdsoftmax.labs.peeled_lab import load_peeled_config


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('name = "c"\n[train]\nepochs = 1\nrecord_epochs = []\n')
    return path


@pytest.mark.parametrize("command", ["train", "sweep"])
def test_an_empty_or_file_out_is_refused(config, tmp_path, capsys, command):
    assert main([command, str(config), "--out", "", "--no-progress"]) == 2
    assert "--out must name a folder" in capsys.readouterr().err
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert main([command, str(config), "--out", str(a_file), "--no-progress"]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_a_data_dir_with_quotes_and_backslashes_is_passed_as_a_path(config, tmp_path, capsys):
    odd = tmp_path / 'da"ta\\dir \'x'
    odd.mkdir()
    assert main(["train", str(config), "--out", str(tmp_path / "runs"), "--data-dir", str(odd), "--no-progress",
                 "--set", "data.dataset=mnist", "--set", "data.download=false"]) == 2
    err = capsys.readouterr().err
    assert f"MNIST not found under {odd}" in err  # the path arrived intact


def test_a_labs_name_cannot_leave_out(tmp_path):
    path = tmp_path / "lab.toml"
    path.write_text('name = "../outside"\n')
    with pytest.raises(ConfigError, match="name may hold only"):
        load_peeled_config(path)


def test_a_section_given_whole_is_merged_not_replaced(config):
    merged = load_config(config, ["train={lr=0.5}"])
    assert merged.train.lr == 0.5
    assert merged.train.epochs == 1  # kept from the file
    assert merged.train.momentum == 0.9  # kept from the defaults
    with pytest.raises(ConfigError, match="train is a section"):
        load_config(config, ["train=5"])


@pytest.mark.parametrize(("epochs", "expected"), [
    (1, [1.0]),
    (2, [1.0, 0.1]),  # the second milestone (epoch 1.5, rounded to 2) is never reached
    (3, [1.0, 1.0, 0.1]),  # 0.5 and 0.75 both round to epoch 2: one step there, not a ÷100 step
    (4, [1.0, 1.0, 0.1, 0.01]),
])
def test_lr_milestones_never_decay_the_first_epoch(epochs, expected):
    config = parse_config({"train": {"epochs": epochs, "lr": 1.0}})
    assert [learning_rate(config, e) for e in range(epochs)] == pytest.approx(expected)


@pytest.mark.slow  # waits out the rendezvous timeout in a subprocess (10 s); make test-all
def test_a_rank_without_peers_stops_after_the_timeout_with_one_line(config, tmp_path):
    with socket.socket() as probe:  # a port where nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(port), "GDSOFTMAX_DIST_TIMEOUT": "3"}
    out = subprocess.run([sys.executable, "-m", "gdsoftmax", "train", str(config), "--out", str(tmp_path),
                          "--no-progress"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "could not reach the other processes within 3 s" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("bins", ["0", "10000000000"])
def test_report_bins_are_bounded(tmp_path, capsys, bins):
    assert main(["report", str(tmp_path), "--bins", bins]) == 2
    assert "--bins must be between 1 and 1000" in capsys.readouterr().err


def test_a_full_disk_is_one_line(config, tmp_path, capsys, monkeypatch):
    import errno

    import gdsoftmax.engine.rundir.writer as rundir

    def full(path, state):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(rundir, "save_checkpoint", full)
    assert main(["train", str(config), "--out", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err
    assert "checkpoint.pt" in err
    assert "Traceback" not in err


def test_an_internal_error_keeps_its_traceback_and_says_so(config, tmp_path, capsys, monkeypatch):
    import gdsoftmax.engine.loop.trainer as trainer

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(trainer, "_train", broken)
    with pytest.raises(ZeroDivisionError):
        main(["train", str(config), "--out", str(tmp_path), "--no-progress"])
    assert "internal error" in capsys.readouterr().err


def test_a_missing_data_folder_leaves_nothing_behind(tmp_path, capsys, monkeypatch):
    """The loader looked for DIR/MNIST/raw and the run opened runs/NAME: a failed command removes both."""
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "c.toml"
    config.write_text('name = "c"\n[data]\ndataset = "mnist"\ndownload = false\n[train]\nepochs = 1\n')
    assert main(["train", str(config), "--data-dir", "missing", "--out", "runs", "--no-progress"]) == 2
    assert "missing" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml"]


def test_set_values_that_are_not_toml_name_the_quotes(tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text('name = "c"\n[train]\nepochs = 1\n')
    assert main(["train", str(config), "--set", "train.log=[tensorboard]", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert 'strings inside lists and tables need quotes, e.g. train.log=["tensorboard"]' in err
    assert not (tmp_path / "o").exists()


def test_a_quoted_sweep_key_can_be_overridden(tmp_path):
    from gdsoftmax.engine.config.schema import load_config

    config = load_config("configs/digits_sweep.toml", ['sweep."loss.beta"=[1.0, 0.001]'])
    assert config.sweep["loss.beta"] == [1.0, 0.001]


def test_train_and_sweep_of_one_config_do_not_mix_their_folders(tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text('name = "c"\n[train]\nepochs = 1\nrecord_epochs = [1]\n[sweep]\nseed = [0, 1]\n')
    out = str(tmp_path / "runs")
    assert main(["sweep", str(config), "--out", out, "--no-progress"]) == 0
    assert "report " + out + "/c" in capsys.readouterr().out  # what to look at next
    assert main(["train", str(config), "--out", out, "--no-progress"]) == 2
    assert "holds the cells of a sweep of this config; train one run into another folder" in capsys.readouterr().err
    assert main(["train", str(config), "--out", str(tmp_path / "single"), "--no-progress"]) == 0
    assert main(["report", str(tmp_path / "single" / "c"), "--out", str(tmp_path / "r")]) == 0  # one run reports
    assert main(["sweep", str(config), "--out", str(tmp_path / "single"), "--no-progress"]) == 2
    assert "holds a single run (gdsoftmax train)" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["train", "sweep", "tune"])
def test_a_missing_or_malformed_config_is_refused_before_torch_is_imported(tmp_path, command):
    """The command line reads the file with the standard library first: no engine, no torch, one line."""
    import subprocess
    import sys

    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n[train\n')
    for path, says in ((tmp_path / "none.toml", "does not exist"), (bad, "is not valid TOML")):
        code = (f"import sys; from gdsoftmax.cli import main; status = main([{command!r}, {str(path)!r}]); "
                "sys.exit(10 if 'torch' in sys.modules else status)")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith(f"gdsoftmax {command}: error: ")
        assert says in done.stderr


def test_a_study_that_fails_leaves_no_output_folder(config, tmp_path, capsys):
    """The regime study needs β = 1 runs; refused after the report began, it removes the --out it created."""
    assert main(["train", str(config), "--set", "loss.beta=5.0", "--out", str(tmp_path / "sweep"),
                 "--no-progress"]) == 0
    out = tmp_path / "made" / "here"
    assert main(["study", "regime", str(tmp_path / "sweep"), "--out", str(out)]) == 2
    assert "no β = 1 runs" in capsys.readouterr().err
    assert not (tmp_path / "made").exists()
