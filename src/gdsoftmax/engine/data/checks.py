"""What a data set must be before a run trains on it: files that match their checksums, and
splits with the right dtype, shapes, labels and counts. Every failure names the file or split
and the fix, as a :class:`DataIntegrityError` (a ValueError, so the command line prints one line).

* A ``SHA256SUMS`` file in the data folder (as ``sha256sum`` writes it) is honoured: each file a
  loader reads that it lists must match.
* The original MNIST and Fashion-MNIST files are known by size and SHA-256, so a damaged copy of
  one is caught wherever it lies (a file of another size is not an original; it gets the checks
  below, which are what small test files of the same format get too).

>>> import torch
>>> images, labels = torch.zeros(4, 1, 8, 8, dtype=torch.uint8), torch.tensor([0, 1, 2, 3])
>>> check_split("digits", "train", images, labels, num_classes=10)
>>> check_split("digits", "train", images, labels + 7, num_classes=10)
Traceback (most recent call last):
...
gdsoftmax.engine.data.checks.DataIntegrityError: digits train: labels must lie in [0, 10), found 10 ...
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import torch

__all__ = ["IMAGE_SHAPES", "KNOWN_FILES", "DataIntegrityError", "check_split", "verify_files"]

# (C, H, W) of each data set's images
IMAGE_SHAPES = {"digits": (1, 8, 8), "mnist": (1, 28, 28), "fashion_mnist": (1, 28, 28), "cifar10": (3, 32, 32),
                "cifar100": (3, 32, 32), "svhn": (3, 32, 32), "tiny_imagenet": (3, 64, 64)}

# the original (uncompressed) files: name -> (bytes, SHA-256)
KNOWN_FILES = {
    "MNIST/raw/train-images-idx3-ubyte": (47040016, "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
    "MNIST/raw/train-labels-idx1-ubyte": (60008, "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
    "MNIST/raw/t10k-images-idx3-ubyte": (7840016, "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
    "MNIST/raw/t10k-labels-idx1-ubyte": (10008, "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
    "FashionMNIST/raw/train-images-idx3-ubyte":
        (47040016, "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
    "FashionMNIST/raw/train-labels-idx1-ubyte":
        (60008, "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
    "FashionMNIST/raw/t10k-images-idx3-ubyte":
        (7840016, "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
    "FashionMNIST/raw/t10k-labels-idx1-ubyte":
        (10008, "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
}

_verified: dict[tuple, str] = {}  # (path, size, mtime) -> sha256, so a sweep hashes each file once


class DataIntegrityError(ValueError):
    """A data file or split is damaged or not what its data set should be."""


def verify_files(root: Path, files: list[Path]) -> None:
    """Check ``files`` (inside ``root``) against ``root/SHA256SUMS`` and the known original files."""
    listed = _sums(root / "SHA256SUMS")
    for path in files:
        relative = path.relative_to(root).as_posix()
        expected = listed.get(relative)
        known = KNOWN_FILES.get(relative)
        if expected is None and known is not None and path.stat().st_size == known[0]:
            expected = known[1]
        if expected is not None and _sha256(path) != expected:
            where = f"{root / 'SHA256SUMS'}" if relative in listed else "the original file's"
            raise DataIntegrityError(f"{path} does not match {where} SHA-256: the file is damaged or was "
                                     "changed; copy or download it again")


def check_split(name: str, split: str, images: torch.Tensor, labels: torch.Tensor, num_classes: int,
                floats: bool = False) -> None:
    """dtype, shape, count and label checks for one split (images (N, C, H, W) uint8, or float32 where
    ``floats``, as the user's own data may be; labels (N,))."""
    where = f"{name} {split}"
    if images.dtype != torch.uint8 and not (floats and images.dtype == torch.float32):
        raise DataIntegrityError(f"{where}: images have dtype {images.dtype}; expected uint8 pixels (0-255)")
    expected = IMAGE_SHAPES.get(name)
    if images.dim() != 4 or (expected is not None and tuple(images.shape[1:]) != expected):
        raise DataIntegrityError(f"{where}: images have shape {tuple(images.shape)}; expected (N, "
                                 f"{', '.join(map(str, expected)) if expected else 'C, H, W'})")
    if labels.dim() != 1 or len(labels) != len(images):
        raise DataIntegrityError(f"{where}: {len(images)} images but labels of shape {tuple(labels.shape)}")
    if len(labels) == 0:
        raise DataIntegrityError(f"{where}: the split is empty")
    if labels.dtype.is_floating_point or bool((labels < 0).any()) or bool((labels >= num_classes).any()):
        bad = labels[(labels < 0) | (labels >= num_classes)]
        raise DataIntegrityError(f"{where}: labels must lie in [0, {num_classes}), found {bad[0].item()} "
                                 f"({len(bad)} such); the label file is damaged or belongs to another data set")


SUM_LINE = re.compile(r"([0-9a-fA-F]{64}) [ *](.+)")  # sha256sum's text ("  name") and binary (" *name") forms


def _sums(path: Path) -> dict[str, str]:
    """SHA256SUMS as {relative path: digest}, in either of sha256sum's forms and with or without "./"; a line
    that is neither is an error, never skipped (a skipped line would let a damaged file through)."""
    if not path.exists():
        return {}
    sums = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        found = SUM_LINE.fullmatch(line.strip())
        if found is None:
            raise DataIntegrityError(f"{path}, line {number}: not a sha256sum line ({line.strip()[:60]!r}); each "
                                     "line is a 64-digit SHA-256, a space, and ' name' or '*name'")
        name = found.group(2).strip()
        sums[name[2:] if name.startswith("./") else name] = found.group(1).lower()
    return sums


def _sha256(path: Path) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _verified:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
        _verified[key] = digest.hexdigest()
    return _verified[key]
