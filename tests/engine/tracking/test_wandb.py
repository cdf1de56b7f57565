"""Weights & Biases as a tracker, offline: its files inside --out, one W&B run per cell with the labels, tags and
epochs the run directory holds, and MLflow's resume rules (an extended run continues its id and logs only its new
epochs; --restart discards the W&B runs the directory had). The offline files are read back record by record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gdsoftmax.cli import main

wandb = pytest.importorskip("wandb")
from wandb.proto import wandb_internal_pb2  # noqa: E402 (needs wandb, skipped above without it)

CONFIG = """name = "wb"
[model]
options = {{ hidden = [16] }}
[train]
epochs = {epochs}
log = ["wandb"]
lr_schedule = "constant"  # so that a run can be extended by an epoch
[sweep]
"loss.beta" = [1.0, 5.0]
seed = [0]
"""

BLOCK, HEADER = 32768, 7  # the offline file: ":W&B", a 2-byte magic and a version, then LevelDB-log blocks


def records(path: Path) -> list:
    """Every protobuf record of an offline ``run-ID.wandb`` file (LevelDB log framing: 4-byte checksum, 2-byte
    length, 1-byte type; FULL = 1, FIRST = 2, MIDDLE = 3, LAST = 4; a block's tail under 7 bytes is padding)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    position, found, partial = HEADER, [], b""
    while position + 7 <= len(data):
        if BLOCK - position % BLOCK < 7:
            position += BLOCK - position % BLOCK
            continue
        length, kind = int.from_bytes(data[position + 4 : position + 6], "little"), data[position + 6]
        partial += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(partial)
            found.append(record)
            partial = b""
        elif kind == 0:  # zero padding at the end of a block
            partial = b""
    return found


def offline_runs(out: Path) -> dict[str, list[Path]]:
    """W&B id -> its offline run files, oldest first."""
    runs: dict[str, list[Path]] = {}
    for folder in sorted((out / "wandb" / "wandb").glob("offline-run-*")):
        runs.setdefault(folder.name.rsplit("-", 1)[1], []).append(next(folder.glob("run-*.wandb")))
    return runs


def key_of(item) -> str:
    return item.key or "/".join(item.nested_key)


def history_steps(path: Path) -> list[int]:
    return [r.history.step.num for r in records(path) if r.WhichOneof("record_type") == "history"]


def run_record(path: Path):
    return next(r.run for r in records(path) if r.WhichOneof("record_type") == "run")


def sweep(tmp_path: Path, epochs: int, *extra: str) -> Path:
    config = tmp_path / "wb.toml"
    config.write_text(CONFIG.format(epochs=epochs))
    assert main(["sweep", str(config), "--out", str(tmp_path / "out"), "--no-progress", *extra]) == 0
    wandb.teardown()  # W&B's service writes the offline files: let it finish them before they are read (a loaded
    return tmp_path / "out"  # machine once read a file whose history had not yet been written)


@pytest.fixture(autouse=True)
def offline_and_home(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)  # offline is the default
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)


def test_each_cell_is_an_offline_run_with_its_labels_and_epochs(tmp_path, capsys):
    out = sweep(tmp_path, epochs=2)
    assert "wandb sync" in capsys.readouterr().out
    runs = offline_runs(out)
    assert len(runs) == 2
    seen = {}
    for files in runs.values():
        (path,) = files
        run = run_record(path)
        seen[run.display_name] = run
        assert run.project == "wb"
        assert history_steps(path) == [1, 2]
        rows = [json.loads((out / "wb" / run.display_name / "metrics.jsonl").read_text().splitlines()[-1])]
        history = [r.history for r in records(path) if r.WhichOneof("record_type") == "history"][-1]
        logged = {key_of(item): json.loads(item.value_json) for item in history.item}
        assert logged["train_loss"] == pytest.approx(rows[0]["train_loss"], rel=1e-12)
        summary = {key_of(item): json.loads(item.value_json) for r in records(path)
                   if r.WhichOneof("record_type") == "summary" for item in r.summary.update}
        result = json.loads((out / "wb" / run.display_name / "result.json").read_text())
        assert summary["final/epochs"] == result["epochs"] == 2
        assert 0 <= summary["final/test_acc"] <= 1
    assert sorted(seen) == ["beta=1_seed=0", "beta=5_seed=0"]
    assert seen["beta=5_seed=0"].run_group == "beta=5"
    assert "seed=0" in list(seen["beta=5_seed=0"].tags)
    assert not (tmp_path / "wandb").exists()  # nothing in the working directory
    assert not (tmp_path / "home").exists() or not any((tmp_path / "home").rglob("*.wandb"))


def test_an_extended_run_continues_its_id_and_a_restart_discards_it(tmp_path):
    out = sweep(tmp_path, epochs=2)
    before = offline_runs(out)
    out = sweep(tmp_path, epochs=3)  # train.epochs is not identity: each cell resumes for one more epoch
    after = offline_runs(out)
    assert set(after) == set(before)
    for files in after.values():
        assert [history_steps(path) for path in files] == [[1, 2], [3]]
    out = sweep(tmp_path, 3, "--restart")
    restarted = offline_runs(out)
    assert set(restarted) == set(before)  # the same config in the same directories: the same ids
    for files in restarted.values():
        assert [history_steps(path) for path in files] == [[1, 2, 3]]  # the old files went


def test_another_config_in_the_same_directories_discards_the_old_runs(tmp_path):
    out = sweep(tmp_path, epochs=2)
    old = set(offline_runs(out))
    (tmp_path / "wb.toml").write_text(CONFIG.format(epochs=2).replace("hidden = [16]", "hidden = [8]"))
    assert main(["sweep", str(tmp_path / "wb.toml"), "--out", str(out), "--no-progress", "--restart"]) == 0
    new = set(offline_runs(out))
    assert len(new) == 2
    assert not new & old
