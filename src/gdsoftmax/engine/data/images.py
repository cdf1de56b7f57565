"""Image classification data sets held in memory as uint8 tensors.

Small models on a CPU spend most of their time in per-sample DataLoader overhead, so every
data set here is loaded once into a (N, C, H, W) uint8 tensor; batches are index slices,
normalised and augmented as whole batches.

>>> data = load_dataset("digits")
>>> data.train.images.shape[1:], data.num_classes
(torch.Size([1, 8, 8]), 10)
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gdsoftmax.engine.data.checks import DataIntegrityError, check_split, verify_files
from gdsoftmax.engine.data.user import is_user_data, load_user_data, npz_arrays
from gdsoftmax.engine.workspace.cleanup import folders_removed_on_failure

__all__ = ["DATASETS", "DataIntegrityError", "DataNotFoundError", "Dataset", "Split", "augment_batch",
           "crop_and_flip", "draw_augmentation", "load_dataset", "stratified_subset", "with_input_scaling"]

ENV_DATA_DIR = "GDSOFTMAX_DATA_DIR"


class DataNotFoundError(FileNotFoundError):
    """A data set is not on disk and could not be downloaded."""


@dataclass
class Split:
    images: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device) -> Split:
        return Split(self.images.to(device), self.labels.to(device))


@dataclass
class Dataset:
    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    mean: torch.Tensor  # (C,) of pixels / pixel_max, from the training split
    std: torch.Tensor  # (C,)
    pixel_max: float  # 255 for photographs, 16 for scikit-learn's digits

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) -> float32 standardised with the training statistics."""
        mean = self.mean.to(images.device).view(1, -1, 1, 1)
        std = self.std.to(images.device).view(1, -1, 1, 1)
        return (images.float() / self.pixel_max - mean) / std

    def to(self, device) -> Dataset:
        return Dataset(self.name, self.train.to(device), self.val.to(device), self.test.to(device),
                       self.num_classes, self.mean, self.std, self.pixel_max)

    def fingerprint(self) -> str:
        """A short hash of the splits' shapes, every label and a spread of images: a run records it, so
        that resuming on data whose content changed (another copy, a re-download, another split) is refused."""
        digest = hashlib.sha256()
        for split in (self.train, self.val, self.test):
            images, labels = split.images.cpu(), split.labels.cpu()
            digest.update(f"{tuple(images.shape)}|{self.pixel_max}".encode())
            digest.update(labels.numpy().tobytes())
            digest.update(images[:: max(1, len(images) // 256)].contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]


def augment_batch(images: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Random crop with zero padding and random horizontal flip, for a whole batch at once.

    The standard CIFAR/SVHN augmentation (torchvision's RandomCrop(32, padding=4) and
    RandomHorizontalFlip), drawn from ``generator`` so runs are reproducible.
    images: (B, C, H, W) -> (B, C, H, W).
    """
    dy, dx, flip = (t.to(images.device) for t in draw_augmentation(generator, [len(images)], padding))
    return crop_and_flip(images, dy, dx, flip, padding)


def draw_augmentation(generator: torch.Generator, batch_sizes: list[int], padding: int = 4):
    """Offsets dy, dx (N, 1) and flips (N,) for consecutive batches, drawn exactly as
    :func:`augment_batch` draws them batch by batch. A training loop draws an epoch's worth at
    once and moves it to the device in one copy instead of one per step."""
    dys, dxs, flips = [], [], []
    for b in batch_sizes:
        dys.append(torch.randint(0, 2 * padding + 1, (b, 1), generator=generator))
        dxs.append(torch.randint(0, 2 * padding + 1, (b, 1), generator=generator))
        flips.append(torch.rand(b, generator=generator) < 0.5)
    return torch.cat(dys), torch.cat(dxs), torch.cat(flips)


def crop_and_flip(images: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor,
                  padding: int = 4) -> torch.Tensor:
    """Crop each zero-padded image at (dy, dx) and mirror those with ``flip``; all on the images' device."""
    b, _, h, w = images.shape
    padded = torch.nn.functional.pad(images, (padding,) * 4)  # (B, C, H+2p, W+2p)
    rows = dy + torch.arange(h, device=images.device)  # (B, H)
    cols = dx + torch.arange(w, device=images.device)  # (B, W)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    batch = torch.arange(b, device=images.device)[:, None, None, None]
    channel = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


# ---- sources: each returns (train Split, test Split, num_classes, pixel_max) ---------------


def _digits(root: Path, download: bool):
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.uint8)).unsqueeze(1)  # (1797, 1, 8, 8), values 0..16
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    # No official split: a fixed, seeded 20 % test split.
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(12345))
    test, train = order[:360], order[360:]
    return Split(images[train], labels[train]), Split(images[test], labels[test]), 10, 16.0


def _torchvision(cls_name: str, layout: str):
    def load(root: Path, download: bool):
        from torchvision import datasets

        cls = getattr(datasets, cls_name)
        splits = []
        for train in (True, False):
            ds = _call_torchvision(cls, root, download, layout, train=train)
            images = torch.as_tensor(np.asarray(ds.data))
            images = images.unsqueeze(1) if images.dim() == 3 else images.permute(0, 3, 1, 2)  # -> (N, C, H, W)
            splits.append(Split(images.contiguous(), torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)))
        return splits[0], splits[1], len(ds.classes), 255.0

    return load


def _cifar10(root: Path, download: bool):
    npz = root / "CIFAR10" / "cifar10.npz"
    if npz.exists():  # the offline copy: plain arrays, read without pickle
        verify_files(root, [npz])
        arrays = npz_arrays(npz, ("train_images", "train_labels", "test_images", "test_labels"),
                            "copy it again, or remove it to use torchvision's copy")

        def split(prefix):
            images = torch.from_numpy(arrays[f"{prefix}_images"]).permute(0, 3, 1, 2).contiguous()
            return Split(images, torch.from_numpy(arrays[f"{prefix}_labels"].astype(np.int64)))

        return split("train"), split("test"), 10, 255.0
    return _torchvision("CIFAR10", f"{npz} or the python batches under {root / 'cifar-10-batches-py'}")(root, download)


def _svhn(root: Path, download: bool):
    from torchvision import datasets

    splits = []
    for split in ("train", "test"):
        ds = _call_torchvision(datasets.SVHN, root / "SVHN", download, f"{root / 'SVHN'}/{split}_32x32.mat",
                               split=split)
        splits.append(Split(torch.as_tensor(ds.data).contiguous(), torch.as_tensor(ds.labels, dtype=torch.int64)))
    return splits[0], splits[1], 10, 255.0


def _tiny_imagenet(root: Path, download: bool):
    from PIL import Image

    base = root / "tiny-imagenet-200"
    wnids_file = base / "wnids.txt"
    if not wnids_file.exists():
        raise DataNotFoundError(
            f"Tiny-ImageNet not found: looked for {wnids_file}. torchvision cannot download it; "
            f"get tiny-imagenet-200.zip, unzip it into {root}, or point --data-dir at the folder holding it.")
    wnids = wnids_file.read_text().split()
    index = {w: i for i, w in enumerate(wnids)}

    def read(paths_and_labels):
        # convert("RGB"): a few Tiny-ImageNet images are greyscale
        images = [torch.from_numpy(np.array(Image.open(path).convert("RGB"))) for path, _ in paths_and_labels]
        labels = torch.tensor([label for _, label in paths_and_labels], dtype=torch.int64)
        return Split(torch.stack(images).permute(0, 3, 1, 2).contiguous(), labels)  # (N, 3, 64, 64)

    train = [(p, index[w]) for w in wnids for p in sorted((base / "train" / w / "images").glob("*.JPEG"))]
    # The official test split has no labels; as usual, the labelled val split serves as the test set.
    annotations = (base / "val" / "val_annotations.txt").read_text().splitlines()
    val = [(base / "val" / "images" / line.split("\t")[0], index[line.split("\t")[1]]) for line in annotations if line]
    return read(train), read(val), len(wnids), 255.0


def _call_torchvision(cls, root: Path, download: bool, layout: str, **kwargs):
    try:
        return cls(str(root), download=False, **kwargs)
    except RuntimeError as missing:
        if not download:
            why = f"downloading is off (torchvision: {missing})"
            raise DataNotFoundError(_missing_message(cls.__name__, root, layout, why)) from missing
    try:
        return cls(str(root), download=True, **kwargs)
    except Exception as failed:  # no network, a proxy, a full disk ...
        raise DataNotFoundError(_missing_message(cls.__name__, root, layout, f"download failed: {failed}")) from failed


def _missing_message(name: str, root: Path, layout: str, why: str) -> str:
    return (f"{name} not found under {root} (expected {layout}); {why}. Fix: point --data-dir (or the "
            f"{ENV_DATA_DIR} environment variable) at a folder that holds it, or allow downloading.")


def _read_idx(path: Path, rank: int) -> np.ndarray:
    """An IDX file (the MNIST format) of ``rank`` dimensions as uint8, with its header checked."""
    data = path.read_bytes()
    magic = int.from_bytes(data[:4], "big") if len(data) >= 4 else -1
    if magic != 0x0800 | rank:
        raise DataIntegrityError(f"{path} is not an IDX file of {rank} dimension(s) (magic number {magic:#x}, "
                                 f"expected {0x0800 | rank:#x}); replace it with the original file")
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(rank)]
    body = data[4 + 4 * rank :]
    if len(body) != math.prod(shape):
        raise DataIntegrityError(f"{path} holds {len(body)} bytes after its header, which announces "
                                 f"{math.prod(shape)}: the file is truncated or damaged; replace it")
    return np.frombuffer(body, dtype=np.uint8).reshape(shape)


def _mnist_like(folder: str, cls_name: str):
    """MNIST and Fashion-MNIST, read from the raw IDX files themselves (checked against their known
    checksums), so a stale torchvision ``processed/`` file beside them cannot stand in for them."""
    layout = f"{folder}/raw/train-images-idx3-ubyte and friends"

    def load(root: Path, download: bool):
        raw = root / folder / "raw"
        pairs = [(raw / f"{p}-images-idx3-ubyte", raw / f"{p}-labels-idx1-ubyte") for p in ("train", "t10k")]
        if not all(path.exists() for pair in pairs for path in pair):
            from torchvision import datasets

            _call_torchvision(getattr(datasets, cls_name), root, download, layout, train=True)  # downloads
            _call_torchvision(getattr(datasets, cls_name), root, download, layout, train=False)
        verify_files(root, [path for pair in pairs for path in pair])
        splits = [Split(torch.from_numpy(_read_idx(images, 3).copy()).unsqueeze(1),
                        torch.from_numpy(_read_idx(labels, 1).astype(np.int64))) for images, labels in pairs]
        return splits[0], splits[1], 10, 255.0

    return load


DATASETS = {
    "digits": _digits,
    "mnist": _mnist_like("MNIST", "MNIST"),
    "fashion_mnist": _mnist_like("FashionMNIST", "FashionMNIST"),
    "cifar10": _cifar10,
    "cifar100": _torchvision("CIFAR100", "cifar-100-python/"),
    "svhn": _svhn,
    "tiny_imagenet": _tiny_imagenet,
}


def default_data_dir() -> Path:
    return Path(os.environ.get(ENV_DATA_DIR, "data")).expanduser()


def with_input_scaling(data: Dataset, scaling: str) -> Dataset:
    """The data set with its inputs scaled as ``scaling`` says: "standardize" (per channel with the
    training statistics, the default), "unit" (pixels / pixel_max, in [0, 1]) or "raw" (the pixel values).

    >>> data = load_dataset("digits", val_size=0)
    >>> float(with_input_scaling(data, "raw").normalize(data.train.images[:1]).max())
    16.0
    """
    if scaling == "standardize":
        return data
    channels = data.mean.shape
    mean = torch.zeros(channels)
    std = torch.ones(channels) if scaling == "unit" else torch.full(channels, 1.0 / data.pixel_max)
    if scaling not in ("unit", "raw"):
        raise ValueError(f"input scaling must be standardize, unit or raw, got {scaling!r}")
    return Dataset(data.name, data.train, data.val, data.test, data.num_classes, mean, std, data.pixel_max)


def load_dataset(name: str, data_dir: str | Path | None = None, *, download: bool = True,
                 val_size: int | float = 0.1, split_seed: int = 0, train_size: int | float = 0) -> Dataset:
    """Load ``name`` into memory with train / validation / test splits.

    ``val_size`` (a count, or a fraction of the training set) is held out of the training
    split by a permutation seeded with ``split_seed``, so every run and seed of a sweep
    sees the same split. ``train_size`` (0: all; a count, or a fraction of what validation left)
    keeps a subset of the training split with every class in its proportion, drawn with the same
    seed. ``data_dir`` defaults to $GDSOFTMAX_DATA_DIR, then ./data. ``name`` is one of :data:`DATASETS` or
    the user's own data (``npz:PATH``, ``folder:PATH``, ``module:callable``; see :mod:`gdsoftmax.engine.data.user`).
    """
    train, test, num_classes, pixel_max = _source_splits(name, data_dir, download)
    n_val = round(val_size * len(train)) if isinstance(val_size, float) else int(val_size)
    if not 0 <= n_val < len(train):
        raise ValueError(f"val_size {val_size!r} leaves no training data ({len(train)} training samples)")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(split_seed))
    # Sorted, so both splits keep the source's sample order (per-sample records line up with it).
    val_index, train_index = order[:n_val].sort().values, order[n_val:].sort().values
    val = Split(train.images[val_index], train.labels[val_index])
    if train_size:
        train_index = stratified_subset(train.labels[train_index], train_size, split_seed, train_index)
    train = Split(train.images[train_index], train.labels[train_index])
    mean, std = _channel_stats(train.images, pixel_max)
    return Dataset(name, train, val, test, num_classes, mean, std, pixel_max)


def _source_splits(name: str, data_dir, download: bool):
    """(train Split, test Split, num_classes, pixel_max) from a built-in set or the user's own, checked."""
    if is_user_data(name):  # npz:PATH, folder:PATH or the user's module:callable
        (train_images, train_labels), (test_images, test_labels), num_classes, pixel_max = load_user_data(name)
        train, test = Split(train_images, train_labels), Split(test_images, test_labels)
    elif name in DATASETS:
        root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
        with folders_removed_on_failure(root):  # a loader that finds nothing leaves no empty DIR/MNIST/raw behind
            train, test, num_classes, pixel_max = DATASETS[name](root, download)
    else:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}, npz:PATH, folder:PATH or "
                         "module:callable")
    for split, part in (("train", train), ("test", test)):
        check_split(name, split, part.images, part.labels, num_classes, floats=is_user_data(name))
    return train, test, num_classes, pixel_max


def stratified_subset(labels: torch.Tensor, size: int | float, seed: int, index: torch.Tensor) -> torch.Tensor:
    """The sorted entries of ``index`` (whose labels are ``labels``) kept in a class-stratified subset of
    ``size`` samples (a count, or a fraction): each class keeps its share, rounded so the total is exact.

    >>> labels = torch.tensor([0] * 6 + [1] * 4)
    >>> kept = stratified_subset(labels, 5, 0, torch.arange(10))
    >>> len(kept), int((labels[kept] == 0).sum())
    (5, 3)
    """
    n = round(size * len(labels)) if isinstance(size, float) else int(size)
    if not 0 < n <= len(labels):
        raise ValueError(f"train_size {size!r} asks for {n} samples; the training split has {len(labels)} after "
                         "validation")
    classes, counts = labels.unique(return_counts=True)
    shares = counts.double() * n / len(labels)
    quota = shares.floor().long()
    # the samples the floors leave out go to the classes with the largest remainders
    quota[torch.argsort(shares - quota, descending=True)[: n - int(quota.sum())]] += 1
    generator = torch.Generator().manual_seed(seed)
    kept = []
    for c, k in zip(classes.tolist(), quota.tolist(), strict=True):
        members = torch.nonzero(labels == c).squeeze(1)
        kept.append(members[torch.randperm(len(members), generator=generator)[:k]])
    return index[torch.cat(kept).sort().values]


def _channel_stats(images: torch.Tensor, pixel_max: float, chunk: int = 4096):
    """Per-channel mean and std of images / pixel_max, in float64 chunks (no full float copy)."""
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for start in range(0, len(images), chunk):
        pixels = images[start : start + chunk].double() / pixel_max
        total += pixels.sum(dim=(0, 2, 3))
        squares += pixels.square().sum(dim=(0, 2, 3))
    count = images.numel() / images.shape[1]
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(0).sqrt()
    return mean.float(), std.float().clamp_min(1e-6)
