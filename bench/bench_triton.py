"""Benchmark on a GPU: the Triton β-loss and fused linear β-loss against Liger-Kernel, eager and compiled CE.

Forward + backward time (median of ``--reps`` after ``--warmup``, CUDA events) and peak extra
memory above the inputs (torch.cuda.max_memory_allocated) for, in the same process:

* logits (N, V) in bf16, class indices with 5 % ignored: ``F.cross_entropy`` (eager),
  ``torch.compile``d CE, Liger's cross-entropy, gdsoftmax's Triton β-loss (β = 0.1), and the
  β-loss composed on Liger's per-token CE (``log(expm1(CE) + β)``, gdsoftmax.loss.compose), at
  8192 × 32,000 and 8192 × 128,256;
* hidden (N, H) and LM head (V, H) in bf16, N = 8192, H = 4096, V = 128,256: gdsoftmax's fused
  linear β-loss against Liger's fused linear cross-entropy and matmul + CE.

Targets (issue 14): time <= 1.0x and peak memory <= 1.0x Liger's at each shape; time <= 0.5x eager CE.

    python bench/bench_triton.py                 # on a GPU; writes bench/results/triton_gpu.{md,json}
    TRITON_INTERPRET=1 python bench/bench_triton.py --quick   # a CPU smoke run of the code path

Liger-Kernel is optional (its rows are left out without it). On the project's GPU machines it is
not installed: carry its wheel (pure Python) as the device notes say, e.g.
``python3 -m pip download --no-deps --only-binary=:all: -d .whl liger-kernel==0.8.5``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from gdsoftmax import gradient_decay_loss
from gdsoftmax.loss.compose import beta_loss_from_ce
from gdsoftmax.loss.triton_linear import triton_fused_linear_loss

BETA = 0.1


def _liger():
    try:
        from liger_kernel.transformers import LigerCrossEntropyLoss, LigerFusedLinearCrossEntropyLoss
    except ImportError:
        return None
    return LigerCrossEntropyLoss, LigerFusedLinearCrossEntropyLoss


def measure(fn, make_inputs, device, warmup: int, reps: int) -> dict:
    """Median forward + backward milliseconds and peak memory above the inputs, in MB."""
    times = []
    for i in range(warmup + reps):
        inputs = make_inputs()
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        else:
            begin = time.perf_counter()
        loss = fn(*inputs)
        loss.backward()
        if device.type == "cuda":
            stop.record()
            torch.cuda.synchronize()
            elapsed = start.elapsed_time(stop)
            peak = (torch.cuda.max_memory_allocated() - base) / 2**20
        else:
            elapsed, peak = 1000 * (time.perf_counter() - begin), float("nan")
        if i >= warmup:
            times.append(elapsed)
        del loss, inputs
    return {"ms": statistics.median(times), "ms_min": min(times), "ms_max": max(times), "peak_mb": peak}


def logits_rows(n: int, v: int, device, dtype) -> list[dict]:
    torch.manual_seed(0)
    base = torch.randn(n, v, device=device, dtype=dtype)
    target = torch.randint(v, (n,), device=device)
    target[torch.rand(n, device=device) < 0.05] = -100

    def make():
        return base.clone().requires_grad_(), target

    methods = {"F.cross_entropy (eager)": lambda z, t: F.cross_entropy(z, t),
               "β-loss, Triton (gdsoftmax)": lambda z, t: gradient_decay_loss(z, t, BETA, backend="triton")}
    if device.type == "cuda":
        compiled = torch.compile(lambda z, t: F.cross_entropy(z, t))
        methods["torch.compile(F.cross_entropy)"] = compiled
    liger = _liger()
    if liger is not None:
        liger_ce = liger[0]()
        liger_none = liger[0](reduction="none")
        methods["Liger cross-entropy"] = lambda z, t: liger_ce(z, t)
        methods["β-loss composed on Liger CE"] = lambda z, t: _composed_mean(liger_none(z, t), t)
    return [{"shape": f"{n}x{v}", "method": name, **measure(fn, make, device, ARGS.warmup, ARGS.reps)}
            for name, fn in methods.items()]


def _composed_mean(per_token_ce, target):
    kept = target != -100
    return beta_loss_from_ce(per_token_ce.float(), BETA)[kept].mean()


def linear_rows(n: int, h: int, v: int, device, dtype) -> list[dict]:
    torch.manual_seed(0)
    hidden, weight = torch.randn(n, h, device=device, dtype=dtype) / h**0.5, torch.randn(v, h, device=device,
                                                                                         dtype=dtype)
    target = torch.randint(v, (n,), device=device)

    def make():
        return hidden.clone().requires_grad_(), weight.clone().requires_grad_(), target

    methods = {"matmul + F.cross_entropy": lambda x, w, t: F.cross_entropy((x @ w.T).float(), t),
               "fused linear β-loss, Triton (gdsoftmax)": lambda x, w, t: triton_fused_linear_loss(x, w, t, BETA)}
    liger = _liger()
    if liger is not None:
        flce = liger[1]()
        methods["Liger fused linear cross-entropy"] = lambda x, w, t: flce(w, x, t)
    return [{"shape": f"{n}x{h}x{v}", "method": name, **measure(fn, make, device, ARGS.warmup, ARGS.reps)}
            for name, fn in methods.items()]


def table(rows: list[dict]) -> list[str]:
    lines = ["| shape | method | ms [min–max] | peak extra MB | time / eager | time / Liger | memory / Liger |",
             "|---|---|---|---|---|---|---|"]
    for shape in dict.fromkeys(r["shape"] for r in rows):
        group = [r for r in rows if r["shape"] == shape]
        eager = group[0]
        liger = next((r for r in group if r["method"].startswith("Liger")), None)
        for r in group:
            vs_liger = f"{r['ms'] / liger['ms']:.2f}×" if liger else "—"
            mem_liger = f"{r['peak_mb'] / liger['peak_mb']:.2f}×" if liger and liger["peak_mb"] > 0 else "—"
            lines.append(f"| {shape} | {r['method']} | {r['ms']:.2f} [{r['ms_min']:.2f}–{r['ms_max']:.2f}] | "
                         f"{r['peak_mb']:.0f} | {r['ms'] / eager['ms']:.2f}× | {vs_liger} | {mem_liger} |")
    return lines


def main() -> int:
    global ARGS
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="tiny shapes: a smoke run (CPU with TRITON_INTERPRET=1)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ARGS = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16
    if ARGS.quick:
        ARGS.warmup, ARGS.reps = 0, 1
        rows = logits_rows(8, 50, device, dtype) + linear_rows(8, 16, 50, device, dtype)
    else:
        rows = (logits_rows(8192, 32_000, device, dtype) + logits_rows(8192, 128_256, device, dtype)
                + linear_rows(8192, 4096, 128_256, device, dtype))
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu (interpreter smoke run)"
    lines = [f"# Triton β-loss against Liger-Kernel and CE, bf16, β = {BETA}", "",
             f"{name}; torch {torch.__version__}; median of {ARGS.reps} after {ARGS.warmup} warm-up; forward + "
             "backward; peak memory above the inputs", "", *table(rows)]
    out = Path(ARGS.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "triton_gpu" if device.type == "cuda" and not ARGS.quick else "triton_smoke"
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    (out / f"{stem}.json").write_text(json.dumps({"device": name, "rows": rows}, indent=2))
    print("\n".join(lines))
    return 0


ARGS = argparse.Namespace()

if __name__ == "__main__":
    raise SystemExit(main())
