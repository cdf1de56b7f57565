"""Benchmark: which timm / torchvision models train fast on a CPU at 32x32, as the engine builds them.

For each candidate, the engine's own builder (gdsoftmax's classifier head on the library's pooled features,
``stem = "cifar"`` where the model has a ResNet stem) at (3, 32, 32) and 10 classes; then the training step the
engine takes (forward, the gdsoftmax loss, backward, SGD with momentum) on a batch of 128 random images. The
figure is the median over ``--rounds`` rounds of ``--steps`` timed steps, after two warm-up steps, as images per
second and as the seconds a 45,000-image epoch would take; the spread is the rounds' min and max. The CPU kind
(``torch.backends.cpu.get_cpu_capability()``) is printed with the table: the figures hold for that kind.
Run it on an idle machine.

    python bench/bench_library_models.py                 # about 3 minutes on 2 cores
    python bench/bench_library_models.py --quick         # a smoke run: two models, one round
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from gdsoftmax.engine.models.library import build_library_model
from gdsoftmax.loss import GradientDecayLoss

CANDIDATES = [
    ("timm:test_resnet", {}), ("timm:lcnet_050", {}), ("timm:mobilenetv3_small_050", {}),
    ("timm:mobilenetv3_small_100", {}), ("timm:regnetx_002", {}), ("timm:resnet10t", {"stem": "cifar"}),
    ("timm:ghostnet_050", {}), ("torchvision:mobilenet_v3_small", {}), ("torchvision:shufflenet_v2_x0_5", {}),
    ("torchvision:resnet18", {"stem": "cifar"}),
]
EPOCH_IMAGES = 45_000


def images_per_second(name: str, options: dict, steps: int, rounds: int, batch: int) -> tuple[int, list[float]]:
    torch.manual_seed(0)
    model = build_library_model(name, (3, 32, 32), 10, None, **options)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    criterion = GradientDecayLoss(beta=2.0)
    images, labels = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))

    def step():
        optimizer.zero_grad(set_to_none=True)
        criterion(model(images), labels).backward()
        optimizer.step()

    for _ in range(2):
        step()
    rates = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        rates.append(steps * batch / (time.perf_counter() - start))
    return sum(p.numel() for p in model.parameters()), rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    candidates = CANDIDATES[:2] if args.quick else CANDIDATES
    rounds = 1 if args.quick else args.rounds
    print(f"CPU kind: {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads, torch "
          f"{torch.__version__}; batch {args.batch} at 3x32x32, median of {rounds} rounds of {args.steps} steps")
    print("| model | options | parameters | images/s (median [min, max]) | s per 45,000-image epoch |")
    print("|---|---|---|---|---|")
    for name, options in candidates:
        try:
            parameters, rates = images_per_second(name, options, args.steps, rounds, args.batch)
        except (ValueError, RuntimeError) as error:
            print(f"| {name} | {options or ''} | — | refused: {str(error).splitlines()[0][:80]} | — |")
            continue
        median = statistics.median(rates)
        print(f"| `{name}` | {options or ''} | {parameters / 1e6:.2f} M | {median:,.0f} [{min(rates):,.0f}, "
              f"{max(rates):,.0f}] | {EPOCH_IMAGES / median:,.0f} |")


if __name__ == "__main__":
    main()
