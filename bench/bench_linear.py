"""Benchmark: fused linear + beta-loss against "matmul, then the loss", forward + backward.

At the full size (default N = 8192, H = 1024, V = 128,000) each run is one forward+backward in a
fresh process whose high-water mark is reset after the inputs exist (Linux /proc); the two
methods alternate for ``--repeats`` rounds, and the table gives the median time and the median
peak extra memory of each, with ratios against "matmul then loss" of the same rounds.

    python bench/bench_linear.py            # writes bench/results/linear.{json,md}; ~4 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import torch

RUN_ONE = """
import sys, time, torch
from gdsoftmax import gradient_decay_loss
from gdsoftmax.loss.fused import fused_linear_gradient_decay_loss
def status(key):
    return int(next(l for l in open('/proc/self/status') if l.startswith(key)).split()[1]) * 1024
n, h, v = {n}, {h}, {v}
torch.manual_seed(0)
x = (torch.randn(n, h) / h ** 0.5).requires_grad_(True)
w = torch.randn(v, h).requires_grad_(True)
t = torch.randint(v, (n,))
open('/proc/self/clear_refs', 'w').write('5')
before = status('VmRSS')
start = time.perf_counter()
{call}.backward()
print(time.perf_counter() - start, status('VmHWM') - before)
"""
CALLS = {"matmul then loss": "gradient_decay_loss(x @ w.T, t, 0.1)",
         "fused linear": "fused_linear_gradient_decay_loss(x, w, t, 0.1)"}


def run_once(method: str, n: int, h: int, v: int) -> tuple[float, float]:
    """(seconds, peak extra bytes) of one forward+backward in a fresh process."""
    code = RUN_ONE.format(n=n, h=h, v=v, call=CALLS[method])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    seconds, extra = (float(x) for x in out.split())
    return seconds, extra


def measure(size: tuple[int, int, int] = (8192, 1024, 128000), repeats: int = 3) -> dict:
    samples = {method: [] for method in CALLS}
    for _ in range(repeats):
        for method in CALLS:
            samples[method].append(run_once(method, *size))
    result = {"N,H,V": list(size), "repeats": repeats}
    for method, runs in samples.items():
        result[method] = {"seconds": statistics.median(t for t, _ in runs),
                          "peak_extra_gb": statistics.median(m for _, m in runs) / 1e9,
                          "all_seconds": [t for t, _ in runs]}
    ratios = [f[0] / b[0] for f, b in zip(samples["fused linear"], samples["matmul then loss"], strict=True)]
    savings = [1 - f[1] / b[1] for f, b in zip(samples["fused linear"], samples["matmul then loss"], strict=True)]
    result["time_ratio"], result["time_ratio_min"], result["time_ratio_max"] = (
        statistics.median(ratios), min(ratios), max(ratios))
    result["memory_saving"], result["memory_saving_min"], result["memory_saving_max"] = (
        statistics.median(savings), min(savings), max(savings))
    return result


def table(result: dict) -> str:
    n, h, v = result["N,H,V"]
    lines = [f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, forward + backward, β = 0.1, "
             f"N = {n}, H = {h}, V = {v}; medians of {result['repeats']} runs per method, each in a fresh process.", "",
             "| method | median time | time / matmul then loss | peak extra memory | vs matmul then loss |",
             "|---|---|---|---|---|"]
    base = result["matmul then loss"]
    for method in CALLS:
        r = result[method]
        saving = 100 * (1 - r["peak_extra_gb"] / base["peak_extra_gb"])
        lines.append(f"| {method} | {r['seconds']:.1f} s | {r['seconds'] / base['seconds']:.2f} | "
                     f"{r['peak_extra_gb']:.2f} GB | {saving:.0f} % lower |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="8192,1024,128000", help="N,H,V")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    result = measure(tuple(int(x) for x in args.size.split(",")), args.repeats)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "linear.json").write_text(json.dumps({"torch": torch.__version__, **result}, indent=2))
    (out / "linear.md").write_text(table(result))
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
