"""The user's own image data: ``data.dataset = "npz:PATH"``, ``"folder:PATH"`` or ``"mypkg.data:load"``.

Each source gives a training and a test split; the engine holds out validation from the training split as for
the built-in sets (``data.val_size``), and everything downstream (sweeps, resume, reports, ``tune``) is the same.

* ``npz:PATH``: an ``.npz`` archive with ``train_images``, ``train_labels``, ``test_images``, ``test_labels``;
  images (N, H, W), (N, H, W, C) as numpy images are laid out, or (N, C, H, W); uint8 pixels (0..255) or floats
  (kept as they are: set ``data.input_scaling`` to say how to scale them). Read without pickle.
* ``folder:PATH``: an ImageFolder tree, ``PATH/train/CLASS/*.png`` and ``PATH/test/CLASS/*``, every image of one
  size (greyscale trees stay 1-channel). Classes are the ``train`` folder's names, in sorted order.
* ``module:callable``: called without arguments, returns ``(train, test)``, two ``torch.utils.data.Dataset``
  (anything with ``len`` and indexing) of ``(image, label)`` pairs; a tensor image is (C, H, W) or (H, W), an
  array or PIL image (H, W, C) or (H, W). The class count is ``train.classes``' length where it has one, else
  the largest label + 1.

Every source is read into memory once (the engine's batches are index slices). Each failure is one
:class:`~gdsoftmax.engine.data.checks.DataIntegrityError` naming ``data.dataset`` and the fix.

>>> import numpy as np, tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "toy.npz"
>>> images = np.zeros((6, 8, 8), np.uint8)
>>> np.savez(path, train_images=images, train_labels=np.arange(6) % 2, test_images=images[:2],
...          test_labels=np.array([0, 1]))
>>> train, test, classes, pixel_max = load_user_data(f"npz:{path}")
>>> tuple(train[0].shape), classes, pixel_max
((6, 1, 8, 8), 2, 255.0)
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from gdsoftmax.engine.data.checks import DataIntegrityError
from gdsoftmax.engine.workspace.user_code import described, is_import_path, resolve

__all__ = ["is_user_data", "load_user_data", "npz_arrays"]

NPZ_KEYS = ("train_images", "train_labels", "test_images", "test_labels")


def is_user_data(name: str) -> bool:
    """Whether ``data.dataset`` names the user's own data (npz:, folder: or an import path)."""
    return isinstance(name, str) and (name.partition(":")[0] in ("npz", "folder") or is_import_path(name))


def load_user_data(name: str):
    """(train (images, labels), test (images, labels), num_classes, pixel_max) of the user's source ``name``."""
    kind, _, where = name.partition(":")
    if kind == "npz":
        return _from_npz(Path(where).expanduser())
    if kind == "folder":
        return _from_folder(Path(where).expanduser())
    return _from_callable(name)


def npz_arrays(path: Path, keys: tuple[str, ...], fix: str) -> dict[str, np.ndarray]:
    """The named arrays of an npz file, read without pickle; a missing key, an object array (which would need
    pickle) or labels that are not integers are named, with the file and ``fix``."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in keys if key not in archive.files]
            if missing:
                raise DataIntegrityError(f"{path} lacks {missing} (it holds {archive.files}); it needs the arrays "
                                         f"{list(keys)}: {fix}")
            arrays = {key: archive[key] for key in keys}
    except DataIntegrityError:  # a ValueError itself: already says what is wrong
        raise
    except (ValueError, OSError, zipfile.BadZipFile) as error:
        if not zipfile.is_zipfile(path):  # numpy reads what is no archive as a pickle, which it then refuses
            raise DataIntegrityError(f"{path} is not an npz archive (truncated or another format); {fix}") from error
        raise DataIntegrityError(f"{path} holds object arrays, which are read only through pickle ({error}); "
                                 "save plain numeric arrays (uint8 images, integer labels)") from error
    for key, array in arrays.items():
        if key.endswith("labels") and not np.issubdtype(array.dtype, np.integer):
            raise DataIntegrityError(f"{path}: {key} has dtype {array.dtype}; class labels must be integers")
    return arrays


def _from_npz(path: Path):
    if not path.is_file():
        raise DataIntegrityError(f"data.dataset = 'npz:{path}': no such file; name an .npz archive with the arrays "
                                 f"{list(NPZ_KEYS)}")
    arrays = npz_arrays(path, NPZ_KEYS, "save them with numpy.savez")
    splits = [(_images_nchw(arrays[f"{s}_images"], f"npz:{path} {s}_images", channels_last=None),
               torch.from_numpy(arrays[f"{s}_labels"].astype(np.int64)).reshape(-1)) for s in ("train", "test")]
    return _finished(splits, None, f"npz:{path}")


def _images_nchw(array, what: str, channels_last: bool | None) -> torch.Tensor:
    """(N, C, H, W) from (N, H, W), (N, H, W, C) or (N, C, H, W); ``channels_last=None`` guesses from where a
    dimension of 1, 3 or 4 channels sits (the last dimension wins)."""
    images = torch.as_tensor(np.asarray(array))
    if images.dim() == 3:
        return images.unsqueeze(1).contiguous()
    if images.dim() != 4:
        raise DataIntegrityError(f"{what} has shape {tuple(images.shape)}; images must be (N, H, W), (N, H, W, C) "
                                 "or (N, C, H, W)")
    if channels_last is None:
        channels_last = images.shape[3] in (1, 3, 4) or images.shape[1] not in (1, 3, 4)
    return (images.permute(0, 3, 1, 2) if channels_last else images).contiguous()


def _finished(splits, classes, name: str):
    """Checks common to every source: one image dtype and shape, labels in range; pixel_max from the dtype."""
    (train_images, train_labels), (test_images, test_labels) = splits
    if train_images.shape[1:] != test_images.shape[1:]:
        raise DataIntegrityError(f"data.dataset = {name!r}: train images are {tuple(train_images.shape[1:])}, test "
                                 f"images {tuple(test_images.shape[1:])}; both splits need one image shape")
    for split, images, labels in (("train", train_images, train_labels), ("test", test_images, test_labels)):
        if len(images) != len(labels) or len(labels) == 0:
            raise DataIntegrityError(f"data.dataset = {name!r}: the {split} split has {len(images)} images and "
                                     f"{len(labels)} labels; it needs one label per image, and at least one")
        if int(labels.min()) < 0:
            raise DataIntegrityError(f"data.dataset = {name!r}: {split} labels must be >= 0 (class indices)")
    if train_images.dtype == torch.uint8:
        pixel_max = 255.0
    elif train_images.is_floating_point():
        train_images, test_images, pixel_max = train_images.float(), test_images.float(), 1.0
    else:
        raise DataIntegrityError(f"data.dataset = {name!r}: images have dtype {train_images.dtype}; give uint8 "
                                 "pixels (0..255) or floats")
    num_classes = len(classes) if classes else int(max(train_labels.max(), test_labels.max())) + 1
    return (train_images, train_labels), (test_images, test_labels), num_classes, pixel_max


def _from_folder(root: Path):
    from torchvision.datasets import ImageFolder

    name = f"folder:{root}"
    missing = [split for split in ("train", "test") if not (root / split).is_dir()]
    if missing:
        raise DataIntegrityError(f"data.dataset = {name!r}: no {' or '.join(missing)} folder in {root}; lay it out "
                                 "as train/CLASS/IMAGE and test/CLASS/IMAGE")
    try:
        train, test = (ImageFolder(str(root / split)) for split in ("train", "test"))
    except (FileNotFoundError, OSError) as error:  # a class folder without images
        raise DataIntegrityError(f"data.dataset = {name!r}: {error}") from error
    unknown = sorted(set(test.classes) - set(train.classes))
    if unknown:
        raise DataIntegrityError(f"data.dataset = {name!r}: test classes {unknown[:5]} have no train folder")
    splits = [_read_images(train.samples, train.classes, train.classes, name),
              _read_images(test.samples, test.classes, train.classes, name)]
    return _finished(splits, train.classes, name)


def _read_images(samples, own_classes, classes, name: str):
    from PIL import Image

    index = {c: i for i, c in enumerate(classes)}
    images, labels, size = [], [], None
    for path, label in samples:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("L" if image.mode in ("L", "1", "I;16") else "RGB"))
        if size is None:
            size = pixels.shape
        elif pixels.shape != size:
            raise DataIntegrityError(f"data.dataset = {name!r}: {path} is {pixels.shape}, other images are {size}; "
                                     "resize the tree to one size")
        images.append(pixels)
        labels.append(index[own_classes[label]])
    return _images_nchw(np.stack(images), name, channels_last=True), torch.tensor(labels, dtype=torch.int64)


def _from_callable(name: str):
    factory = resolve(name, "data.dataset")
    try:
        result = factory()
    except Exception as error:  # the user's code
        raise DataIntegrityError(f"data.dataset = {name!r}: calling it raised {described(error)}") from error
    if not (isinstance(result, tuple | list) and len(result) == 2):
        raise DataIntegrityError(f"data.dataset = {name!r} returned {type(result).__name__}; it must return (train, "
                                 "test), two Datasets of (image, label) pairs")
    splits = [_stacked(split, name, which) for split, which in zip(result, ("train", "test"), strict=True)]
    return _finished(splits, getattr(result[0], "classes", None), name)


def _stacked(dataset, name: str, which: str):
    if hasattr(dataset, "__len__") and len(dataset) == 0:
        raise DataIntegrityError(f"data.dataset = {name!r}: its {which} split is empty; it needs at least one "
                                 "(image, label) pair")
    try:
        pairs = [dataset[i] for i in range(len(dataset))]
        images = [_chw(image) for image, _ in pairs]
        labels = torch.tensor([int(label) for _, label in pairs], dtype=torch.int64)
        return torch.stack(images), labels
    except DataIntegrityError:
        raise
    except Exception as error:  # not a Dataset, items that are not pairs, images of several shapes
        raise DataIntegrityError(f"data.dataset = {name!r}: reading its {which} split failed ({described(error)}); "
                                 "it must be a Dataset of (image, label) pairs of one image shape") from error


def _chw(image) -> torch.Tensor:
    if isinstance(image, torch.Tensor):
        return image.unsqueeze(0) if image.dim() == 2 else image
    pixels = torch.as_tensor(np.asarray(image))  # arrays and PIL images are (H, W, C)
    return pixels.unsqueeze(0) if pixels.dim() == 2 else pixels.permute(2, 0, 1)
