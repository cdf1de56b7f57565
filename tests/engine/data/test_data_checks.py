"""Data files are checked before a run trains on them; every failure names the file and the fix."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from gdsoftmax.cli import main
from gdsoftmax.engine.data.images import DataIntegrityError, load_dataset

SHARED = Path(__file__).resolve().parents[4] / "shared" / "datasets"


def write_idx(path: Path, array: np.ndarray) -> None:
    code = {1: 0x0801, 3: 0x0803}[array.ndim]
    path.write_bytes(code.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
                     + array.astype(np.uint8).tobytes())


def small_mnist(root: Path, train_labels=None) -> Path:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 30), ("t10k", 10)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        labels = train_labels if prefix == "train" and train_labels is not None else rng.integers(0, 10, n)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.asarray(labels))
    return raw


@pytest.mark.skipif(not (SHARED / "MNIST").exists(), reason="needs the MNIST copy in ../shared/datasets")
def test_a_damaged_original_file_is_caught_by_its_known_checksum(tmp_path):
    shutil.copytree(SHARED / "MNIST", tmp_path / "MNIST")
    labels = tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    data = bytearray(labels.read_bytes())
    data[100] = (data[100] + 1) % 10  # one label changed: same size, other bytes
    labels.write_bytes(bytes(data))
    with pytest.raises(DataIntegrityError, match=r"train-labels-idx1-ubyte does not match the original file's"):
        load_dataset("mnist", tmp_path, download=False)


def test_a_sha256sums_file_beside_the_data_is_honoured(tmp_path):
    raw = small_mnist(tmp_path)
    right = hashlib.sha256((raw / "t10k-labels-idx1-ubyte").read_bytes()).hexdigest()
    (tmp_path / "SHA256SUMS").write_text(f"{right}  MNIST/raw/t10k-labels-idx1-ubyte\n"
                                         f"{'0' * 64}  MNIST/raw/train-images-idx3-ubyte\n")
    with pytest.raises(DataIntegrityError, match=r"train-images-idx3-ubyte does not match .*SHA256SUMS"):
        load_dataset("mnist", tmp_path, download=False)


@pytest.mark.parametrize("line", ["{digest} *MNIST/raw/train-images-idx3-ubyte",   # sha256sum -b
                                  "{digest}  ./MNIST/raw/train-images-idx3-ubyte",  # from `sha256sum ./...`
                                  "{digest} *./MNIST/raw/train-images-idx3-ubyte"])
def test_every_form_sha256sum_writes_is_honoured(tmp_path, line):
    small_mnist(tmp_path)
    (tmp_path / "SHA256SUMS").write_text(line.format(digest="0" * 64) + "\n")
    with pytest.raises(DataIntegrityError, match=r"train-images-idx3-ubyte does not match .*SHA256SUMS"):
        load_dataset("mnist", tmp_path, download=False)


def test_a_line_that_is_no_checksum_is_an_error_not_skipped(tmp_path):
    small_mnist(tmp_path)
    (tmp_path / "SHA256SUMS").write_text("# sums\n\nnot-a-digest  MNIST/raw/train-images-idx3-ubyte\n")
    with pytest.raises(DataIntegrityError, match=r"SHA256SUMS, line 3: not a sha256sum line"):
        load_dataset("mnist", tmp_path, download=False)


def test_a_stale_processed_file_does_not_replace_the_raw_files(tmp_path):
    raw = small_mnist(tmp_path)
    processed = raw.parent / "processed"
    processed.mkdir()
    torch.save((torch.zeros(5, 28, 28, dtype=torch.uint8), torch.zeros(5, dtype=torch.int64)),
               processed / "training.pt")  # what old torchvision versions would read instead
    data = load_dataset("mnist", tmp_path, download=False, val_size=0)
    assert len(data.train) == 30


@pytest.mark.parametrize(("damage", "message"), [
    (lambda raw: (raw / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x01" + b"\x00" * 20),
     r"train-images-idx3-ubyte is not an IDX file of 3 dimension\(s\) \(magic number 0x801, expected 0x803\)"),
    (lambda raw: (raw / "t10k-images-idx3-ubyte").write_bytes((raw / "t10k-images-idx3-ubyte").read_bytes()[:-5]),
     r"t10k-images-idx3-ubyte holds 7835 bytes .* announces 7840: the file is truncated"),
])
def test_damaged_idx_files_name_the_file(tmp_path, damage, message):
    damage(small_mnist(tmp_path))
    with pytest.raises(DataIntegrityError, match=message):
        load_dataset("mnist", tmp_path, download=False)


def test_labels_out_of_range_are_refused(tmp_path):
    small_mnist(tmp_path, train_labels=[12] + [1] * 29)
    with pytest.raises(DataIntegrityError, match=r"mnist train: labels must lie in \[0, 10\), found 12"):
        load_dataset("mnist", tmp_path, download=False)


def test_float_pixels_are_refused(tmp_path):
    (tmp_path / "CIFAR10").mkdir()
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "CIFAR10" / "cifar10.npz", train_images=rng.random((6, 32, 32, 3)) * np.inf,
             train_labels=np.zeros(6, np.uint8), test_images=np.zeros((2, 32, 32, 3), np.uint8),
             test_labels=np.zeros(2, np.uint8))
    with pytest.raises(DataIntegrityError, match=r"cifar10 train: images have dtype torch\.float64; expected uint8"):
        load_dataset("cifar10", tmp_path, download=False)


def test_the_cli_names_the_damaged_file_in_one_line(tmp_path, capsys):
    small_mnist(tmp_path, train_labels=[12] + [1] * 29)
    config = tmp_path / "c.toml"
    config.write_text('name = "c"\n[data]\ndataset = "mnist"\ndownload = false\nval_size = 0\n[train]\nepochs = 1\n')
    assert main(["train", str(config), "--out", str(tmp_path / "runs"), "--data-dir", str(tmp_path),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "labels must lie in [0, 10)" in err
    assert "Traceback" not in err
