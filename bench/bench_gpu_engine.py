"""Benchmark: training throughput of gdsoftmax's engine against a plain PyTorch loop, ResNet-18 on CIFAR-10.

Both train the same network with the β-loss's recipe (SGD, momentum 0.9, random crop + flip) on
the same images, in the same process, and report images per second over timed steps after
warm-up steps (which pay torch.compile and cuDNN autotuning):

* ``plain``: what a careful user writes without gdsoftmax: a torchvision-style Dataset doing the
  augmentation per sample on the CPU, a DataLoader (workers, pinned memory), float32, eager
  model, ``F.cross_entropy``;
* ``engine fp32``: gdsoftmax's training step (data kept on the device as uint8, augmentation per
  batch on the device, the fused β-loss), every option off;
* ``engine bf16+cl+compile``: the same with ``train.precision = "bf16"``,
  ``train.channels_last`` and ``train.compile``.

The target (issue 13) is engine bf16+cl+compile >= 3x the plain loop.

    python bench/bench_gpu_engine.py                          # on a GPU: synthetic CIFAR-shaped data
    python bench/bench_gpu_engine.py --data-dir ../shared/datasets   # the real CIFAR-10 images
    python bench/bench_gpu_engine.py --quick --device cpu     # a smoke run on the CPU (tiny sizes)
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gdsoftmax.engine.config.schema import parse_config
from gdsoftmax.engine.data.images import Dataset, Split, load_dataset
from gdsoftmax.engine.loop.distributed import Distributed
from gdsoftmax.engine.loop.one_model import OneModelRun
from gdsoftmax.engine.models.registry import build_model
from gdsoftmax.engine.tasks.images import ImageClassification


def cifar_like(n: int, seed: int = 0) -> Dataset:
    """uint8 images of CIFAR's shape with random labels: enough to measure throughput."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    labels = torch.randint(10, (n,), generator=g)
    empty = Split(images[:0], labels[:0])
    mean, std = torch.tensor([0.49, 0.48, 0.45]), torch.tensor([0.25, 0.24, 0.26])
    return Dataset("cifar-like", Split(images, labels), empty, empty, 10, mean, std, 255.0)


class _TorchvisionStyle(torch.utils.data.Dataset):
    """Per-sample augmentation on the CPU, as torchvision's RandomCrop(32, 4) + RandomHorizontalFlip
    + ToTensor + Normalize do it (written out here so the baseline needs no torchvision transforms)."""

    def __init__(self, data: Dataset):
        self.images, self.labels = data.train.images.numpy(), data.train.labels.numpy()
        self.mean, self.std = data.mean.view(3, 1, 1), data.std.view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        padded = np.pad(self.images[i], ((0, 0), (4, 4), (4, 4)))
        dy, dx = np.random.randint(0, 9, size=2)  # noqa: NPY002 - each worker's own global RNG, as torchvision
        crop = padded[:, dy : dy + 32, dx : dx + 32]
        if np.random.rand() < 0.5:  # noqa: NPY002
            crop = crop[:, :, ::-1]
        x = (torch.from_numpy(crop.copy()).float() / 255 - self.mean) / self.std
        return x, int(self.labels[i])


def plain_loop(data: Dataset, model_name: str, device: torch.device, batch: int, warmup: int, steps: int,
               workers: int) -> float:
    """Images per second of the plain loop over ``steps`` timed steps."""
    model = build_model(model_name, data.image_shape, 10).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    loader = torch.utils.data.DataLoader(_TorchvisionStyle(data), batch_size=batch, shuffle=True, drop_last=True,
                                         num_workers=workers, pin_memory=device.type == "cuda",
                                         persistent_workers=workers > 0)
    model.train()
    done, start = 0, None
    while done < warmup + steps:
        for x, y in loader:
            if done == warmup:
                _synchronize(device)
                start = time.perf_counter()
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            done += 1
            if done == warmup + steps:
                break
    _synchronize(device)
    return steps * batch / (time.perf_counter() - start)


def engine_loop(data: Dataset, model_name: str, device: torch.device, batch: int, warmup: int, steps: int,
                **options) -> float:
    """Images per second of gdsoftmax's training step (OneModelRun.train_epoch) over ``steps`` steps."""
    config = parse_config({"model": {"name": model_name}, "data": {"augment": True},
                           "loss": {"beta": {"kind": "linear", "start": 0.1, "end": 1.0, "steps": 10_000}},
                           "train": {"batch_size": batch, "lr": 0.05, "weight_decay": 5e-4, **options}})
    run = OneModelRun(ImageClassification(), config, _first(data, max(1, warmup) * batch), Distributed(0, 1, device),
                      max(1, warmup))
    run.train_epoch(0)  # warm-up: compilation, autotuning, the allocator
    run.eval_data, run.steps_per_epoch = _first(data, steps * batch), steps  # same model, optimizer, graph
    _synchronize(device)
    start = time.perf_counter()
    run.train_epoch(1)
    _synchronize(device)
    return steps * batch / (time.perf_counter() - start)


def _first(data: Dataset, n: int) -> Dataset:
    """The data set with only its first ``n`` training images."""
    return Dataset(data.name, Split(data.train.images[:n], data.train.labels[:n]), data.val, data.test,
                   data.num_classes, data.mean, data.std, data.pixel_max)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--data-dir", help="read the real CIFAR-10 from here (default: synthetic CIFAR-shaped data)")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--warmup", type=int, default=30, help="untimed steps first (compilation, autotuning)")
    parser.add_argument("--steps", type=int, default=150, help="timed steps")
    parser.add_argument("--workers", type=int, default=8, help="DataLoader workers of the plain loop")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke run on the CPU")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    if args.quick:
        args.batch, args.warmup, args.steps, args.workers, args.model = 16, 1, 2, 0, "small_cnn"
    device = torch.device(args.device)
    n = (max(args.warmup, args.steps) + 1) * args.batch
    data = (load_dataset("cifar10", args.data_dir, download=False, val_size=0) if args.data_dir
            else cifar_like(max(n, 2 * args.batch)))
    data = _first(data, n)
    common = {"model_name": args.model, "batch": args.batch, "warmup": args.warmup, "steps": args.steps}
    rows = [("plain PyTorch loop, fp32, DataLoader", plain_loop(data, device=device, workers=args.workers,
                                                                 **common))]
    engine_data = data.to(device)
    rows.append(("gdsoftmax engine, fp32", engine_loop(engine_data, device=device, **common)))
    rows.append(("gdsoftmax engine, bf16 + channels_last + compile",
                 engine_loop(engine_data, device=device, precision="bf16", channels_last=True, compile=True,
                             **common)))
    base = rows[0][1]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    lines = [f"# Training throughput, {args.model}, batch {args.batch}, {data.name}",
             "", f"device: {name}; torch {torch.__version__}; {args.steps} timed steps after {args.warmup}", "",
             "| loop | images/s | ratio to the plain loop |", "|---|---|---|"]
    lines += [f"| {label} | {rate:,.0f} | {rate / base:.2f}x |" for label, rate in rows]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "gpu_engine" if device.type == "cuda" else "gpu_engine_cpu_smoke"
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    (out / f"{stem}.json").write_text(json.dumps({"device": name, "torch": torch.__version__, "args": vars(args),
                                                  "images_per_second": dict(rows)}, indent=2))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
