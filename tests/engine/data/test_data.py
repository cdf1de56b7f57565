"""Data loading on real files (../shared/datasets) and on small files of each real format."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from gdsoftmax.engine.data.images import DataNotFoundError, augment_batch, load_dataset

SHARED = Path(__file__).resolve().parents[4] / "shared" / "datasets"
needs_shared = pytest.mark.skipif(not (SHARED / "MNIST").exists(), reason="../shared/datasets not present")


def test_digits_is_embedded_with_fixed_splits():
    a = load_dataset("digits", val_size=100)
    b = load_dataset("digits", val_size=100)
    assert (len(a.train), len(a.val), len(a.test)) == (1337, 100, 360)
    assert torch.equal(a.train.labels, b.train.labels)
    assert a.train.images.dtype == torch.uint8
    assert int(a.train.images.max()) <= 16
    x = a.normalize(a.train.images)
    assert abs(x.mean().item()) < 1e-4
    assert abs(x.std().item() - 1) < 1e-2


@needs_shared
@pytest.mark.parametrize(("name", "mean", "std", "first"), [
    ("mnist", 0.1307, 0.3081, [5, 0, 4, 1, 9, 2, 1, 3]),
    ("fashion_mnist", 0.2860, 0.3530, [9, 0, 0, 3, 0, 2, 7, 2]),
])
def test_real_mnist_files_match_the_reference_figures(name, mean, std, first):
    data = load_dataset(name, SHARED, download=False, val_size=0)
    assert (len(data.train), len(data.test)) == (60000, 10000)
    assert data.train.labels[:8].tolist() == first
    assert data.mean.item() == pytest.approx(mean, abs=1e-4)
    assert data.std.item() == pytest.approx(std, abs=1e-4)


def test_validation_split_is_seeded_and_disjoint():
    a = load_dataset("digits", val_size=0.2, split_seed=1)
    b = load_dataset("digits", val_size=0.2, split_seed=2)
    assert len(a.val) == round(0.2 * 1437)
    assert not torch.equal(a.val.labels, b.val.labels)
    whole = load_dataset("digits", val_size=0)
    as_rows = {(*tuple(img.flatten().tolist()), int(y)) for img, y in zip(whole.train.images, whole.train.labels,
                                                                            strict=True)}
    train_rows = {(*tuple(img.flatten().tolist()), int(y)) for img, y in zip(a.train.images, a.train.labels,
                                                                              strict=True)}
    val_rows = {(*tuple(img.flatten().tolist()), int(y)) for img, y in zip(a.val.images, a.val.labels, strict=True)}
    assert train_rows | val_rows <= as_rows
    assert len(a.train) + len(a.val) == len(whole.train)


def _rows(split) -> list[tuple]:
    return [(*tuple(img.flatten().tolist()), int(y)) for img, y in zip(split.images, split.labels, strict=True)]


@pytest.mark.parametrize("size", [300, 0.25, 1437 - 200])
def test_training_subset_is_stratified_seeded_and_outside_validation(size):
    full = load_dataset("digits", val_size=200, split_seed=3)
    part = load_dataset("digits", val_size=200, split_seed=3, train_size=size)
    n = round(size * len(full.train)) if isinstance(size, float) else size
    assert len(part.train) == n
    assert torch.equal(part.val.labels, full.val.labels)  # validation is the same with or without a subset
    assert set(_rows(part.train)) <= set(_rows(full.train))
    # each class keeps its share of the split it was drawn from, to within one sample
    for c in range(10):
        share = float((full.train.labels == c).sum()) * n / len(full.train)
        assert abs(int((part.train.labels == c).sum()) - share) < 1
    again = load_dataset("digits", val_size=200, split_seed=3, train_size=size)
    assert torch.equal(again.train.images, part.train.images)
    other = load_dataset("digits", val_size=200, split_seed=4, train_size=size)
    assert n == len(full.train) or not torch.equal(other.train.labels, part.train.labels)


def test_a_training_subset_larger_than_the_split_is_refused():
    with pytest.raises(ValueError, match=r"train_size 5000 asks for 5000 samples; the training split has 1237"):
        load_dataset("digits", val_size=200, train_size=5000)


def _write_idx(path: Path, array: np.ndarray) -> None:
    code = {1: 0x0801, 3: 0x0803}[array.ndim]
    header = code.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_mnist_raw_layout_from_small_files(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 50), ("t10k", 20)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n))
    data = load_dataset("mnist", tmp_path, download=False, val_size=10)
    assert (len(data.train), len(data.val), len(data.test)) == (40, 10, 20)
    assert data.image_shape == (1, 28, 28)


def test_cifar10_npz_read_without_pickle(tmp_path):
    folder = tmp_path / "CIFAR10"
    folder.mkdir()
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (30, 32, 32, 3), dtype=np.uint8)
    np.savez(folder / "cifar10.npz", train_images=train, train_labels=rng.integers(0, 10, 30).astype(np.uint8),
             test_images=rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8),
             test_labels=rng.integers(0, 10, 12).astype(np.uint8))
    data = load_dataset("cifar10", tmp_path, download=False, val_size=0)
    assert data.image_shape == (3, 32, 32)
    assert len(data.test) == 12
    # HWC -> CHW without mixing pixels up
    assert torch.equal(data.train.images[0, :, 3, 5], torch.from_numpy(train[0, 3, 5]))
    assert data.mean.tolist() == pytest.approx((train / 255.0).mean(axis=(0, 1, 2)).tolist(), abs=1e-6)


def test_a_cifar10_npz_without_an_array_names_it_not_pickle(tmp_path):
    from gdsoftmax.engine.data.checks import DataIntegrityError

    folder = tmp_path / "CIFAR10"
    folder.mkdir()
    rng = np.random.default_rng(0)
    np.savez(folder / "cifar10.npz", train_images=rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8),
             train_labels=np.zeros(4, np.uint8), test_images=rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8))
    with pytest.raises(DataIntegrityError, match=r"cifar10\.npz lacks \['test_labels'\]") as caught:
        load_dataset("cifar10", tmp_path, download=False, val_size=0)
    assert "object arrays" not in str(caught.value)


def test_cifar100_torchvision_format_from_small_files(tmp_path, monkeypatch):
    from torchvision import datasets

    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 20), ("test", 8)):
        batch = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 "fine_labels": rng.integers(0, 100, n).tolist()}
        (folder / split).write_bytes(pickle.dumps(batch))
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": [f"c{i}" for i in range(100)]}))
    # our files have other md5s than the real ones
    monkeypatch.setattr(datasets.CIFAR100, "_check_integrity", lambda self: True)
    monkeypatch.setattr(datasets.cifar, "check_integrity", lambda *args: True)
    data = load_dataset("cifar100", tmp_path, download=False, val_size=0)
    assert data.num_classes == 100
    assert data.image_shape == (3, 32, 32)
    assert len(data.train) == 20


def test_svhn_mat_files_from_small_files(tmp_path, monkeypatch):
    from scipy.io import savemat
    from torchvision import datasets

    folder = tmp_path / "SVHN"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 15), ("test", 6)):
        savemat(folder / f"{split}_32x32.mat", {"X": rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8),
                                                "y": rng.integers(1, 11, (n, 1))})
    monkeypatch.setattr(datasets.SVHN, "_check_integrity", lambda self: True)
    data = load_dataset("svhn", tmp_path, download=False, val_size=0)
    assert data.image_shape == (3, 32, 32)
    assert len(data.train) == 15
    assert int(data.train.labels.max()) <= 9  # SVHN's label 10 means digit 0


def test_tiny_imagenet_folder_tree(tmp_path):
    from PIL import Image

    base = tmp_path / "tiny-imagenet-200"
    wnids = ["n001", "n002"]
    (base / "val" / "images").mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(wnids))
    lines = []
    for k, wnid in enumerate(wnids):
        (base / "train" / wnid / "images").mkdir(parents=True)
        for i in range(3):
            pixels = np.full((64, 64, 3), 40 * k + i, dtype=np.uint8)
            Image.fromarray(pixels).save(base / "train" / wnid / "images" / f"{wnid}_{i}.JPEG")
        grey = Image.fromarray(np.zeros((64, 64), dtype=np.uint8))  # Tiny-ImageNet has some greyscale images
        grey.save(base / "val" / "images" / f"val_{k}.JPEG")
        lines.append(f"val_{k}.JPEG\t{wnid}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines))
    data = load_dataset("tiny_imagenet", tmp_path, download=False, val_size=0)
    assert data.image_shape == (3, 64, 64)
    assert data.num_classes == 2
    assert data.train.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert data.test.labels.tolist() == [0, 1]


@pytest.mark.parametrize("name", ["mnist", "cifar10", "cifar100", "svhn", "tiny_imagenet"])
def test_missing_data_names_the_path_and_the_fix(tmp_path, name):
    with pytest.raises(DataNotFoundError, match=str(tmp_path)) as error:
        load_dataset(name, tmp_path, download=False)
    assert "data-dir" in str(error.value) or "data directory" in str(error.value)


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        load_dataset("imagenet")


def test_augment_batch_is_a_padded_crop_and_flip():
    images = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    out = augment_batch(images, torch.Generator().manual_seed(0), padding=2)
    again = augment_batch(images, torch.Generator().manual_seed(0), padding=2)
    assert torch.equal(out, again)
    assert out.shape == images.shape
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    for i in range(len(images)):  # every output is some 8x8 window of the padded image, maybe flipped
        windows = [padded[i, :, dy : dy + 8, dx : dx + 8] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out[i], w) or torch.equal(out[i], w.flip(-1)) for w in windows)
    assert not torch.equal(out, images)
