"""Benchmark: gradient_decay_loss against eager F.cross_entropy, forward + backward.

Times are medians of repeats of loss + gradient (torch.autograd.grad with respect to the
logits), and every ratio is against F.cross_entropy measured in the same process, side by
side. Peak extra memory is measured in a fresh subprocess per case (the peak resident set size
during the call minus what the inputs already took), relative to the size of the logits, for
two producers of the logits: a leaf tensor (the gradient must land in its ``.grad``, so an
in-place gradient is copied there) and the output of a matmul, as in a model (the gradient
flows on into the matmul's backward, so an in-place gradient needs no copy).

A "floor" row at the small shapes shows what the least possible Python-level composition
costs: F.cross_entropy on logits with log beta added at the target (the same loss), no checks.

    python bench/bench_loss.py                 # all shapes; writes bench/results/loss.{json,md}
    python bench/bench_loss.py --quick         # small shapes only
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from gdsoftmax import gradient_decay_loss
from gdsoftmax.loss import native
from gdsoftmax.loss.functional import NATIVE_MAX_ELEMENTS
from gdsoftmax.loss.fused import fused_gradient_decay_loss

SHAPES = [(100, 10), (4096, 10), (4096, 1000), (8192, 32000)]
LOG_BETA = math.log(0.1)


def _floor(x, t):
    """The beta-loss as F.cross_entropy of z + log(beta) at the target, plus log(beta): three ops
    around one fused C++ call, no input checks (for the floor row only)."""
    shifted = x.scatter_add(1, t.unsqueeze(1), torch.full((), LOG_BETA).expand(len(t), 1))
    return F.cross_entropy(shifted, t) + LOG_BETA


METHODS = {
    "F.cross_entropy": lambda x, t: F.cross_entropy(x, t),
    "gradient_decay_loss β=0.1": lambda x, t: gradient_decay_loss(x, t, 0.1),
    "fused β=0.1": lambda x, t: fused_gradient_decay_loss(x, t, 0.1),
    "fused in-place β=0.1": lambda x, t: fused_gradient_decay_loss(x, t, 0.1, inplace=True),
}
FLOOR = "floor: CE(z + log β at target), no checks"
CALLS = {  # the same calls, as source for the memory subprocess
    "F.cross_entropy": "F.cross_entropy(x, t)",
    "gradient_decay_loss β=0.1": "gradient_decay_loss(x, t, 0.1)",
    "fused β=0.1": "fused_gradient_decay_loss(x, t, 0.1)",
    "fused in-place β=0.1": "fused_gradient_decay_loss(x, t, 0.1, inplace=True)",
}
PRODUCERS = {  # how the memory subprocess makes the logits x, before the high-water mark is reset
    "leaf": "x = torch.randn({n}, {c}).requires_grad_(True)",
    "matmul": "w = (torch.randn({c}, 16) / 4).requires_grad_(True); x = torch.randn({n}, 16) @ w.T",
}


def median_seconds(fn, logits, target, repeats: int) -> float:
    """Median time of loss + gradient. The gradient is taken with autograd.grad, as a layer
    below the logits would receive it, rather than accumulated into a leaf's .grad (which for an
    in-place gradient, living in the logits' own buffer, would add a full copy)."""
    times = []
    for _ in range(repeats):
        x = logits.clone().requires_grad_(True)  # a fresh copy: the in-place method overwrites it
        start = time.perf_counter()
        torch.autograd.grad(fn(x, target), x)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_extra_memory(method: str, n: int, c: int, producer: str = "leaf") -> float:
    """Peak RSS growth of one forward+backward, in units of the logits' size (fresh process, Linux)."""
    # A child inherits its parent's high-water mark across fork and exec, so the child resets its
    # own (clear_refs 5) and reads VmHWM, in kB, from /proc (Linux).
    make = PRODUCERS[producer].format(n=n, c=c)
    code = f"""
import torch, torch.nn.functional as F
from gdsoftmax import gradient_decay_loss
from gdsoftmax.loss.fused import fused_gradient_decay_loss
def status(key):
    line = next(l for l in open('/proc/self/status') if l.startswith(key))
    return int(line.split()[1]) * 1024
torch.manual_seed(0)
{make}
t = torch.randint({c}, ({n},))
open('/proc/self/clear_refs', 'w').write('5')
before = status('VmRSS')
loss = {CALLS[method]}
loss.backward()
print((status('VmHWM') - before) / (x.numel() * 4))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


def native_status() -> str:
    """Build the optional C++ operator (gdsoftmax.native) so that gradient_decay_loss can use it."""
    try:
        native.build()
    except Exception as error:  # measured without it, and the table says so
        return f"not built ({str(error).splitlines()[0][:80]})"
    return f"built; gradient_decay_loss uses it up to {NATIVE_MAX_ELEMENTS} elements"


def measure(quick: bool = False, rounds: int = 7) -> list[dict]:
    """One row per (shape, method): median ms, the ratio to CE (median over interleaved rounds, each
    round's ratio taken against CE timed in that same round) with its min-max spread, and peak extra
    memory / logits."""
    status = native_status()
    rows = []
    for n, c in SHAPES[:-1] if quick else SHAPES:
        torch.manual_seed(0)
        logits, target = torch.randn(n, c), torch.randint(c, (n,))
        repeats = 5 if n * c > 10**8 else 50
        methods = dict(METHODS, **({FLOOR: _floor} if n * c <= 10**4 else {}))
        for fn in methods.values():  # warm-up
            median_seconds(fn, logits, target, 2)
        # interleave the methods over several rounds so that drift hits them all alike
        samples = {name: [] for name in methods}
        for _ in range(rounds if n * c <= 10**8 else max(3, rounds // 2)):
            for name, fn in methods.items():
                samples[name].append(median_seconds(fn, logits, target, repeats))
        times = {name: statistics.median(values) for name, values in samples.items()}
        ratios = {name: [a / b for a, b in zip(values, samples["F.cross_entropy"], strict=True)]
                  for name, values in samples.items()}
        # RSS moves in allocator-sized steps: only logits much larger than that (1 GB at
        # 8192 x 32000) give a meaningful reading
        big = n * c >= 10**8
        for name, seconds in times.items():
            rows.append({"shape": f"{n}x{c}", "method": name, "median_ms": 1e3 * seconds, "native": status,
                         "time_vs_ce": statistics.median(ratios[name]), "time_vs_ce_min": min(ratios[name]),
                         "time_vs_ce_max": max(ratios[name]), "rounds": len(ratios[name]),
                         "memory_leaf": peak_extra_memory(name, n, c, "leaf") if big and name in CALLS else None,
                         "memory_matmul": peak_extra_memory(name, n, c, "matmul") if big and name in CALLS else None})
    return rows


def machine() -> str:
    """The CPU, its vector capability, torch's build and threads: what every figure here depends on."""
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "unknown CPU") if Path("/proc/cpuinfo").exists() else "unknown"
    return (f"{model} ({torch.backends.cpu.get_cpu_capability()}), torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads")


def table(rows: list[dict]) -> str:
    lines = [f"{machine()}, float32, forward + backward, median of repeats; time / CE is the median over "
             "interleaved rounds of each round's ratio against F.cross_entropy, with its min–max. Peak extra "
             "memory in units of the logits, for logits that are a leaf tensor / the output of a matmul. "
             f"C++ operator: {rows[0]['native'] if rows else '—'}.", "",
             "| shape | method | median ms | time / CE [min–max] | extra memory, leaf | extra memory, from matmul |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        leaf = "—" if r["memory_leaf"] is None else f"{r['memory_leaf']:.2f}"
        matmul = "—" if r["memory_matmul"] is None else f"{r['memory_matmul']:.2f}"
        spread = f"{r['time_vs_ce']:.2f} [{r['time_vs_ce_min']:.2f}–{r['time_vs_ce_max']:.2f}]"
        lines.append(f"| {r['shape']} | {r['method']} | {r['median_ms']:.3f} | {spread} | {leaf} | {matmul} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="skip the 8192 x 32000 case")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"), help="folder for loss.json/md")
    args = parser.parse_args(argv)
    rows = measure(args.quick)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "loss.json").write_text(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(),
                                               "rows": rows}, indent=2))
    (out / "loss.md").write_text(table(rows))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
