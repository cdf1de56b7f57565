"""The gdsoftmax command: help, sweeps that resume and shard, errors without tracebacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gdsoftmax.cli import main
from gdsoftmax.engine.sweeps.sweep import cell_directory, parse_shard

SWEEP = """
name = "cli"
[data]
dataset = "digits"
[train]
epochs = 2
lr = 0.05
[sweep]
"loss.beta" = [0.1, 5.0]
"""


@pytest.fixture
def config(tmp_path) -> Path:
    path = tmp_path / "sweep.toml"
    path.write_text(SWEEP)
    return path


def test_help_teaches(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for word in ("train", "sweep", "theory", "--set", "torchrun", "examples"):
        assert word in out


def test_sweep_runs_every_cell_then_skips_finished_ones(config, tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(["sweep", str(config), "--out", str(out), "--no-progress"]) == 0
    first = capsys.readouterr().out
    assert "beta=0.1" in first
    assert "beta=5" in first
    assert "test %" in first
    results = {p.parent.name: json.loads(p.read_text()) for p in (out / "cli").glob("*/result.json")}
    assert set(results) == {"beta=0.1", "beta=5"}
    stamp = (out / "cli" / "beta=5" / "checkpoint.pt").stat().st_mtime_ns
    assert main(["sweep", str(config), "--out", str(out), "--no-progress"]) == 0
    assert (out / "cli" / "beta=5" / "checkpoint.pt").stat().st_mtime_ns == stamp  # not rerun
    table_rows = lambda text: [line for line in text.splitlines() if line.startswith("beta=")]  # noqa: E731
    assert table_rows(capsys.readouterr().out) == table_rows(first)  # the same results, read back


def test_shards_split_the_grid(config, tmp_path):
    for shard in ("0/2", "1/2"):
        out = tmp_path / shard.replace("/", "of")
        assert main(["sweep", str(config), "--out", str(out), "--shard", shard, "--no-progress"]) == 0
    assert [p.name for p in (tmp_path / "0of2" / "cli").iterdir()] == ["beta=0.1"]
    assert [p.name for p in (tmp_path / "1of2" / "cli").iterdir()] == ["beta=5"]


def test_train_with_overrides(config, tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(["train", str(config), "--out", str(out), "--set", "loss.beta=0.3", "--set", "train.epochs=1",
                 "--no-progress"]) == 0
    assert json.loads((out / "cli" / "result.json").read_text())["beta"] == 0.3


@pytest.mark.parametrize(("args", "message"), [
    (["--set", "train.epochs=0"], "train.epochs must be >= 1"),
    (["--set", "trian.epochs=3"], "unknown key 'trian'"),
    (["--shard", "2/2"], "--shard"),
    (["--max-stack", "0"], "--max-stack must be at least 1"),
    pytest.param(["--set", "train.device=cuda"], "no CUDA device is available",
                 marks=pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a GPU is present")),
    (["--set", "data.dataset=mnist", "--set", "data.download=false"], "MNIST not found under"),
])
def test_errors_are_one_clear_line(config, tmp_path, capsys, args, message):
    assert main(["sweep", str(config), "--out", str(tmp_path), "--data-dir", str(tmp_path), "--no-progress",
                 *args]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_output_paths_stay_in_the_sweep_directory(tmp_path):
    assert cell_directory(tmp_path, "beta=0.1").parent == tmp_path.resolve()
    for name in ("../outside", "a/b", ".."):
        with pytest.raises(ValueError, match="outside"):
            cell_directory(tmp_path, name)
    assert parse_shard("1/3") == (1, 3)


def test_theory_table(capsys):
    assert main(["theory"]) == 0
    out = capsys.readouterr().out
    assert "inflection" in out
    assert "agrees with the closed forms" in out


def test_version_and_help_start_without_torch():
    import subprocess
    import sys

    code = ("import sys\nfrom gdsoftmax.cli import main\nfor args in (['--version'], ['--help']):\n"
            "    try:\n        main(args)\n    except SystemExit as done:\n        assert done.code == 0\n"
            "print('torch' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("gdsoftmax 0.1.0\n")
    assert done.stdout.splitlines()[-1] == "False"  # the package face imports the loss only when it is used


def test_the_package_face_still_gives_the_loss():
    import gdsoftmax

    assert gdsoftmax.GradientDecayLoss.__name__ == "GradientDecayLoss"
    assert "gradient_decay_loss" in dir(gdsoftmax)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        gdsoftmax.nope  # noqa: B018


def test_ctrl_c_is_one_line_naming_the_way_back(config, tmp_path, capsys, monkeypatch):
    import gdsoftmax.api as api

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "run_sweep", interrupted)
    assert main(["sweep", str(config), "--out", str(tmp_path), "--no-progress"]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "gdsoftmax: interrupted; resume with the same command"
