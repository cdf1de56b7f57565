"""Benchmark: fused linear + beta-loss against "matmul, then the loss", forward + backward.

Time: medians of repeats at a mid size, both methods in the same process. Memory and time at
the full size (default N = 8192, H = 1024, V = 128,000): one run per method, each in a fresh
process whose high-water mark is reset after the inputs exist (Linux /proc).

    python bench/bench_linear.py            # writes bench/results/linear.{json,md}; ~3 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from gdsoftmax import gradient_decay_loss
from gdsoftmax.fused import fused_linear_gradient_decay_loss

RUN_ONE = """
import sys, time, torch
from gdsoftmax import gradient_decay_loss
from gdsoftmax.fused import fused_linear_gradient_decay_loss
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


def median_seconds(method: str, hidden, weight, target, repeats: int) -> float:
    def run():
        x, w = hidden.clone().requires_grad_(True), weight.clone().requires_grad_(True)
        loss = gradient_decay_loss(x @ w.T, target, 0.1) if method == "matmul then loss" else \
            fused_linear_gradient_decay_loss(x, w, target, 0.1)
        loss.backward()

    run()  # warm-up
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", default="8192,1024,128000", help="N,H,V of the full-size run")
    parser.add_argument("--mid", default="2048,1024,32000", help="N,H,V of the timed repeats")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    n, h, v = (int(x) for x in args.mid.split(","))
    torch.manual_seed(0)
    hidden, weight, target = torch.randn(n, h) / h**0.5, torch.randn(v, h), torch.randint(v, (n,))
    mid = {m: median_seconds(m, hidden, weight, target, args.repeats) for m in CALLS}
    del hidden, weight
    n_full, h_full, v_full = (int(x) for x in args.full.split(","))
    full = {}
    for method, call in CALLS.items():
        code = RUN_ONE.format(n=n_full, h=h_full, v=v_full, call=call)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        seconds, extra = (float(x) for x in out.split())
        full[method] = {"seconds": seconds, "peak_extra_gb": extra / 1e9}
    base_mid, base_full = mid["matmul then loss"], full["matmul then loss"]
    lines = [f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, forward + backward, β = 0.1.", "",
             f"| method | time, median of {args.repeats} at N,H,V = {args.mid} | ratio | time at {args.full} "
             "(one run) | ratio | peak extra memory | vs matmul then loss |", "|---|---|---|---|---|---|---|"]
    for method in CALLS:
        f = full[method]
        lines.append(f"| {method} | {mid[method]:.3f} s | {mid[method] / base_mid:.2f} | {f['seconds']:.1f} s | "
                     f"{f['seconds'] / base_full['seconds']:.2f} | {f['peak_extra_gb']:.2f} GB | "
                     f"{100 * (1 - f['peak_extra_gb'] / base_full['peak_extra_gb']):.0f} % lower |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "linear.json").write_text(json.dumps({"mid": mid, "full": full, "torch": torch.__version__}, indent=2))
    (out / "linear.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
