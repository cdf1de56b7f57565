"""Benchmark: gradient_decay_loss against eager F.cross_entropy, forward + backward.

Times are medians of repeats, and every ratio is against F.cross_entropy measured in the same
process, side by side. Peak extra memory is measured in a fresh subprocess per case (the peak
resident set size during the call minus what the inputs already took), relative to the size of
the logits.

    python bench/bench_loss.py                 # all shapes; writes bench/results/loss.{json,md}
    python bench/bench_loss.py --quick         # small shapes only
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
import torch.nn.functional as F

from gdsoftmax import gradient_decay_loss
from gdsoftmax.fused import fused_gradient_decay_loss

SHAPES = [(100, 10), (4096, 10), (4096, 1000), (8192, 32000)]
METHODS = {
    "F.cross_entropy": lambda x, t: F.cross_entropy(x, t),
    "gradient_decay_loss β=0.1": lambda x, t: gradient_decay_loss(x, t, 0.1),
    "fused β=0.1": lambda x, t: fused_gradient_decay_loss(x, t, 0.1),
    "fused in-place β=0.1": lambda x, t: fused_gradient_decay_loss(x, t, 0.1, inplace=True),
}
CALLS = {  # the same calls, as source for the memory subprocess
    "F.cross_entropy": "F.cross_entropy(x, t)",
    "gradient_decay_loss β=0.1": "gradient_decay_loss(x, t, 0.1)",
    "fused β=0.1": "fused_gradient_decay_loss(x, t, 0.1)",
    "fused in-place β=0.1": "fused_gradient_decay_loss(x, t, 0.1, inplace=True)",
}


def median_seconds(fn, logits, target, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        x = logits.detach().requires_grad_(True)
        start = time.perf_counter()
        fn(x, target).backward()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_extra_memory(method: str, n: int, c: int) -> float:
    """Peak RSS growth of one forward+backward, in units of the logits' size (fresh process, Linux)."""
    # A child inherits its parent's high-water mark across fork and exec, so the child resets its
    # own (clear_refs 5) and reads VmHWM, in kB, from /proc (Linux).
    code = f"""
import torch, torch.nn.functional as F
from gdsoftmax import gradient_decay_loss
from gdsoftmax.fused import fused_gradient_decay_loss
def status(key):
    line = next(l for l in open('/proc/self/status') if l.startswith(key))
    return int(line.split()[1]) * 1024
torch.manual_seed(0)
x = torch.randn({n}, {c}).requires_grad_(True)
t = torch.randint({c}, ({n},))
open('/proc/self/clear_refs', 'w').write('5')
before = status('VmRSS')
loss = {CALLS[method]}
loss.backward()
print((status('VmHWM') - before) / (x.numel() * 4))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="skip the 8192 x 32000 case")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"), help="folder for loss.json/md")
    args = parser.parse_args(argv)
    shapes = SHAPES[:-1] if args.quick else SHAPES
    rows = []
    for n, c in shapes:
        torch.manual_seed(0)
        logits, target = torch.randn(n, c), torch.randint(c, (n,))
        repeats = 5 if n * c > 10**8 else 50
        for fn in METHODS.values():  # warm-up
            median_seconds(fn, logits, target, 2)
        times = {name: median_seconds(fn, logits, target, repeats) for name, fn in METHODS.items()}
        # RSS moves in allocator-sized steps: only logits much larger than that (1 GB at
        # 8192 x 32000) give a meaningful reading
        memory = {name: peak_extra_memory(name, n, c) for name in METHODS} if n * c >= 10**8 else {}
        base = times["F.cross_entropy"]
        for name, seconds in times.items():
            rows.append({"shape": f"{n}x{c}", "method": name, "median_ms": 1e3 * seconds,
                         "time_vs_ce": seconds / base, "peak_extra_memory_vs_logits": memory.get(name)})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "rows": rows}
    (out / "loss.json").write_text(json.dumps(meta, indent=2))
    lines = [f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, forward + backward, "
             "median of repeats; ratios against F.cross_entropy in the same run.", "",
             "| shape | method | median ms | time / CE | peak extra memory / logits |", "|---|---|---|---|---|"]
    for r in rows:
        memory = "—" if r["peak_extra_memory_vs_logits"] is None else f"{r['peak_extra_memory_vs_logits']:.2f}"
        lines.append(f"| {r['shape']} | {r['method']} | {r['median_ms']:.3f} | {r['time_vs_ce']:.2f} | {memory} |")
    (out / "loss.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
