"""Benchmark: the CIFAR-10 study's training step at each precision, on the CPU kind this runs on.

``train.precision = "bf16"`` halves a training pass on a CPU with bf16 units (AMX or AVX512-BF16)
and makes it many times slower where bf16 is emulated (AVX2 only). ``"auto"`` picks bf16 only where
it is native. This script times the engine's own training step (``OneModelRun.train_epoch``) for
``configs/cifar10_cpu.toml``'s model (ResNet-9, width 16, batch 128, channels_last) at "fp32",
"bf16" and "auto", interleaved over rounds, and prints each one's median seconds per step and its
ratio to fp32 measured in the same round, with the min-max spread. The first line names the CPU
kind, which is what the figures hold for. To measure as on an AVX2-only CPU on one that has more:

    python bench/bench_precision.py                                               # this CPU as it is
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python bench/bench_precision.py  # as on AVX2 only
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from bench_gpu_engine import cifar_like

from gdsoftmax.engine.config.schema import parse_config
from gdsoftmax.engine.loop.distributed import Distributed
from gdsoftmax.engine.loop.one_model import OneModelRun
from gdsoftmax.engine.recipe.acceleration import no_native_bf16, resolve_precision
from gdsoftmax.engine.tasks.images import ImageClassification

PRECISIONS = ("fp32", "bf16", "auto")


def cpu_kind() -> str:
    units = torch.cpu.get_capabilities()
    found = [name for name in ("amx_bf16", "avx512_bf16") if units.get(name)]
    why = no_native_bf16(torch.device("cpu"))
    return (f"{units.get('cpu_name', 'CPU')}, torch dispatch {torch.backends.cpu.get_cpu_capability()}, "
            f"bf16 units: {', '.join(found) or 'none'}; native bf16: {'yes' if why is None else 'no (' + why + ')'}")


def make_run(data, precision: str, args) -> OneModelRun:
    config = parse_config({"model": {"name": "resnet9", "options": {"width": 16}}, "data": {"augment": True},
                           "train": {"batch_size": args.batch, "lr": 0.05, "weight_decay": 5e-4,
                                     "channels_last": True, "precision": precision, "device": "cpu"}})
    run = OneModelRun(ImageClassification(), config, data, Distributed(0, 1, torch.device("cpu")), args.steps)
    run.train_epoch(0)  # untimed: allocator and oneDNN primitive caches
    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=6, help="timed training steps per round and precision")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; medians are reported")
    parser.add_argument("--out", help="also write the figures as JSON to this file")
    args = parser.parse_args()
    torch.manual_seed(0)
    data = cifar_like(args.batch * args.steps)  # CIFAR-shaped synthetic images: the step's cost, not its data
    runs = {p: make_run(data, p, args) for p in PRECISIONS}
    seconds = {p: [] for p in PRECISIONS}
    for round_ in range(args.rounds):
        for p in PRECISIONS:
            start = time.perf_counter()
            runs[p].train_epoch(1 + round_)
            seconds[p].append((time.perf_counter() - start) / args.steps)
    kind = cpu_kind()
    print(kind)
    print(f"ResNet-9 width 16, batch {args.batch}, channels_last; {args.rounds} rounds x {args.steps} steps")
    rows = {}
    for p in PRECISIONS:
        ratios = [a / b for a, b in zip(seconds[p], seconds["fp32"], strict=True)]
        used = resolve_precision(p, torch.device("cpu")) if p != "bf16" else "bf16"
        rows[p] = {"trains_in": used, "ms_per_step": 1000 * statistics.median(seconds[p]),
                   "ratio_to_fp32": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios)}
        r = rows[p]
        print(f"precision = {p!r:7} (trains in {used}): {r['ms_per_step']:8.1f} ms/step, "
              f"{r['ratio_to_fp32']:.2f}x fp32 [{r['ratio_min']:.2f}-{r['ratio_max']:.2f}]")
    if args.out:
        Path(args.out).write_text(json.dumps({"cpu": kind, "torch": torch.__version__, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
