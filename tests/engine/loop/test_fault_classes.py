"""User errors by class: each ends in one line that names the key or file and the fix, with exit 2,
no traceback, and nothing left behind that the command created."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest
import torch

from gdsoftmax.cli import main

CONFIG = 'name = "c"\n[train]\nepochs = 1\nrecord_epochs = [1]\n'


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(CONFIG)
    return path


def one_line_error(capsys, *needles):
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


@pytest.mark.parametrize(("overrides", "needles"), [
    (['model.name="small_cnn"', 'model.options={width="x"}'], ["model.options", "small_cnn"]),
    (["model.penultimate_dim=1000000000000"], ["does not fit in this machine's memory"]),
    (['train.device="mps"'], ["train.device", "use train.device=auto"]),
    (["train.lr=1e308"], ["train.lr", "float32"]),
    (["seed=100000000000000000000"], ["seed", "2**63"]),
    (["data.split_seed=-1"], ["data.split_seed"]),
])
def test_bad_values_are_one_line_and_leave_nothing(config, tmp_path, capsys, overrides, needles):
    out = tmp_path / "out"
    args = ["train", str(config), "--out", str(out), "--no-progress"]
    assert main([*args, *(x for item in overrides for x in ("--set", item))]) == 2
    one_line_error(capsys, *needles)
    assert not out.exists()


def test_a_seed_beyond_64_bits_stops_before_the_stacked_group_trains(config, tmp_path, capsys):
    config.write_text(CONFIG + "[sweep]\nseed = [0, 100000000000000000000]\n")
    assert main(["sweep", str(config), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    one_line_error(capsys, "seed", "2**63")
    assert not (tmp_path / "out").exists()


def test_a_config_path_that_is_a_folder(tmp_path, capsys):
    assert main(["train", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    one_line_error(capsys, "is a folder, not a config file")


def test_rank_without_torchrun(config, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert main(["train", str(config), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    one_line_error(capsys, "RANK=1", "torchrun")
    assert not (tmp_path / "out").exists()


def test_a_tensorboard_that_cannot_be_imported(config, tmp_path, capsys, monkeypatch):
    import gdsoftmax.engine.tracking.tensorboard as tensorboard

    def missing():
        raise ValueError("train.log = ['tensorboard'] needs the tensorboard package, which cannot be imported "
                         "here (No module named 'tensorboard'): pip install 'gdsoftmax[tensorboard]'")

    monkeypatch.setattr(tensorboard, "_summary_writer", missing)
    args = ["train", str(config), "--set", 'train.log=["tensorboard"]', "--out", str(tmp_path / "out")]
    assert main([*args, "--no-progress"]) == 2
    one_line_error(capsys, "pip install 'gdsoftmax[tensorboard]'")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content", ["{}", '{"name": "c", "seed": 0, "epochs": "one", "test_acc": 0.5}', "[1, 2]"])
def test_a_result_file_without_its_fields_is_damaged(config, tmp_path, capsys, content):
    out = tmp_path / "out"
    assert main(["sweep", str(config), "--out", str(out), "--no-progress"]) == 0
    (out / "c" / "c" / "result.json").write_text(content)
    capsys.readouterr()
    assert main(["sweep", str(config), "--out", str(out), "--no-progress"]) == 2
    one_line_error(capsys, "result.json is damaged", "delete the folder")
    assert main(["report", str(out / "c")]) == 2
    one_line_error(capsys, "result.json is damaged")


@pytest.mark.parametrize(("arrays", "needle"), [
    ({"x": np.zeros(3)}, "lacks ['train_images', 'train_labels', 'test_images', 'test_labels']"),
    ({"train_images": np.array([object()] * 3, dtype=object), "train_labels": np.zeros(3, np.int64),
      "test_images": np.zeros(3), "test_labels": np.zeros(3, np.int64)}, "holds object arrays"),
    ({"train_images": np.zeros((4, 32, 32, 3), np.uint8), "train_labels": np.full(4, 2.5),
      "test_images": np.zeros((4, 32, 32, 3), np.uint8), "test_labels": np.zeros(4, np.int64)},
     "train_labels has dtype float64; class labels must be integers"),
])
def test_a_cifar_archive_that_is_not_what_it_should_be(config, tmp_path, capsys, arrays, needle):
    (tmp_path / "data" / "CIFAR10").mkdir(parents=True)
    np.savez(tmp_path / "data" / "CIFAR10" / "cifar10.npz", **arrays)
    args = ["train", str(config), "--set", 'data.dataset="cifar10"', "--data-dir", str(tmp_path / "data")]
    assert main([*args, "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    one_line_error(capsys, "cifar10.npz", needle)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("line", "needle"), [("steps = -5", "run.steps must be >= 1"),
                                              ("num_classes = 1", "run.num_classes must be >= 2"),
                                              ("lr = 0.0", "run.lr must be a finite number > 0")])
def test_lab_values_out_of_range(tmp_path, capsys, line, needle):
    path = tmp_path / "lab.toml"
    path.write_text(f'name = "lab"\n[run]\n{line}\n')
    assert main(["lab", "peeled", str(path), "--out", str(tmp_path / "out")]) == 2
    one_line_error(capsys, needle)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag", [["--shard", "1/2"], ["--restart"]])
def test_launcher_options_that_would_be_ignored_are_refused(config, tmp_path, capsys, flag):
    assert main(["sweep", str(config), "--launcher", "submitit", *flag, "--out", str(tmp_path / "o")]) == 2
    one_line_error(capsys, flag[0], "cannot be combined with --launcher")


def test_cluster_slurm_without_slurm(config, tmp_path, capsys, monkeypatch):
    pytest.importorskip("submitit")
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert main(["sweep", str(config), "--launcher", "submitit", "--cluster", "slurm", "--out",
                 str(tmp_path / "o")]) == 2
    one_line_error(capsys, "--cluster slurm needs Slurm", "--cluster local")


def test_numpy_scalars_are_numbers():
    from gdsoftmax import GradientDecayLoss, gradient_decay_loss
    from gdsoftmax.engine.config.schema import config_to_toml, parse_config

    z, t = torch.randn(4, 3), torch.randint(3, (4,))
    expected = gradient_decay_loss(z, t, 0.5)
    assert torch.equal(gradient_decay_loss(z, t, np.float32(0.5)), expected)
    assert torch.equal(GradientDecayLoss(beta=np.float64(0.5))(z, t), expected)
    assert "beta = 0.5" in config_to_toml(parse_config({"loss": {"beta": np.float32(0.5)}}))
    with pytest.raises(TypeError, match="beta must be a number, got bool"):
        gradient_decay_loss(z, t, np.bool_(True))


def test_the_trainer_loss_takes_tuple_outputs():
    from gdsoftmax.integrations.hf import BetaLossForTrainer, causal_lm_loss

    logits, labels = torch.randn(2, 5, 7), torch.randint(7, (2, 5))
    loss = BetaLossForTrainer(beta=0.5)
    expected = causal_lm_loss(logits, labels, beta=0.5)
    assert torch.equal(loss((logits,), labels), expected)  # return_dict=False
    assert torch.equal(loss((torch.tensor(1.0), logits), labels), expected)  # with the model's own loss first
    assert torch.equal(loss({"logits": logits}, labels), expected)


def test_the_watch_line_keeps_the_overrides(config, tmp_path, capsys):
    pytest.importorskip("submitit")
    out = tmp_path / "o"
    args = ["sweep", str(config), "--set", "train.lr=0.02", "--launcher", "submitit", "--cluster", "local",
            "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert f"--set train.lr=0.02 --out {out} --status" in printed
    assert main(["sweep", str(config), "--set", "train.lr=0.02", "--out", str(out), "--status"]) == 0
    for _ in range(600):  # let the local job finish before the folder goes
        if (out / "c" / "c" / "result.json").exists():
            break
        time.sleep(0.1)
    assert json.loads((out / "c" / "c" / "result.json").read_text())["epochs"] == 1


def test_studies_refuse_runs_they_do_not_fit(config, tmp_path, capsys):
    out = tmp_path / "out"
    config.write_text(CONFIG + '[model]\nname = "small_cnn"\noptions = { width = 4 }\n[sweep]\nseed = [0, 1]\n')
    assert main(["sweep", str(config), "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["table1", str(out / "c"), "--out", str(tmp_path / "t1")]) == 2
    one_line_error(capsys, "the Table 1 study reads MNIST runs of the paper's FCNN", "digits/small_cnn")
    assert not (tmp_path / "t1").exists()
    copied = out / "c" / "copied"  # a run of another data set dropped into the sweep folder
    shutil.copytree(out / "c" / "seed=0", copied)  # (small_cnn on 8x8 digits is fine for a report)
    (copied / "config.toml").write_text((copied / "config.toml").read_text().replace('"digits"', '"mnist"'))
    assert main(["report", str(out / "c"), "--out", str(tmp_path / "r")]) == 2
    one_line_error(capsys, "trained on different data sets (digits, mnist)")
    assert not (tmp_path / "r").exists()
