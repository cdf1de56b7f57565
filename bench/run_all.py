"""The benchmark suite: every performance target of the project, measured in one command.

    python bench/run_all.py --data-dir ../shared/datasets      # ~10 minutes on 2 cores
    python bench/run_all.py --quick                            # small shapes and the stacked ratio only

Runs bench_loss (fused beta-loss against eager F.cross_entropy), bench_linear (fused linear +
beta-loss against matmul then loss, 8192 x 1024 x 128,000) and bench_stacked (stacked sweep
training against the single-model loop on MNIST, and the whole 6 x 100-epoch sweep), then
writes bench/results/{loss,linear}.{json,md}, stacked.json and summary.{json,md}: one row per
target with the measured value, the target and whether it is met. Run it on an idle machine:
other processes on the same cores distort every ratio.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

import bench_linear  # the scripts beside this one
import bench_loss
import bench_stacked


def targets(loss_rows: list[dict], linear: dict | None, stacked: dict) -> list[dict]:
    """(requirement, measured, target, met) rows from the three benchmarks."""
    by = {(r["shape"], r["method"]): r for r in loss_rows}
    rows = []

    def add(what, value, limit, unit="×", at_least=False):
        if value is None:
            return
        met = value >= limit if at_least else value <= limit
        rows.append({"requirement": what, "measured": value, "target": limit, "unit": unit,
                     "direction": ">=" if at_least else "<=", "met": bool(met)})

    big = by.get(("8192x32000", "gradient_decay_loss β=0.1"))
    if big:
        add("β-loss 8192×32000, time / CE", big["time_vs_ce"], 0.6)
        add("β-loss 8192×32000, extra memory / logits", big["memory_leaf"], 1.1)
    inplace = by.get(("8192x32000", "fused in-place β=0.1"))
    if inplace:
        add("in-place 8192×32000, time / CE", inplace["time_vs_ce"], 0.25)
        add("in-place 8192×32000, extra memory / logits (logits from a matmul)", inplace["memory_matmul"], 0.15)
    for shape in ("100x10", "4096x10", "4096x1000"):
        add(f"β-loss {shape.replace('x', '×')}, time / CE", by[(shape, "gradient_decay_loss β=0.1")]["time_vs_ce"], 1.3)
    if linear:
        add("fused linear 8192×1024×128000, memory saving", 100 * linear["memory_saving"], 70, "%", at_least=True)
        add("fused linear 8192×1024×128000, time / matmul then loss", linear["time_ratio"], 1.25)
    add(f"stacked training ({stacked['runs']} runs), time per model-step / single loop", stacked["ratio"], 0.4)
    if "sweep" in stacked:
        add("6 configs × 100 epochs MNIST, wall time", stacked["sweep"]["seconds"], 180, "s")
    return rows


def summary_table(rows: list[dict]) -> str:
    lines = [f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32. Each ratio is against a "
             "baseline measured in the same run (medians of repeats; details in loss.md, linear.md, stacked.json).",
             "", "| requirement | measured | target | met |", "|---|---|---|---|"]
    for r in rows:
        value = f"{r['measured']:.0f} {r['unit']}" if r["unit"] != "×" else f"{r['measured']:.2f}×"
        target = f"{r['direction']} {r['target']:g}{'' if r['unit'] == '×' else ' ' + r['unit']}"
        target = target + "×" if r["unit"] == "×" else target
        lines.append(f"| {r['requirement']} | {value} | {target} | {'yes' if r['met'] else '**no**'} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="../shared/datasets", help="folder holding MNIST")
    parser.add_argument("--quick", action="store_true",
                        help="skip the large shapes, the fused linear case and the 100-epoch sweep")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    print("1/3 fused beta-loss against F.cross_entropy", flush=True)
    loss_rows = bench_loss.measure(quick=args.quick)
    (out / "loss.json").write_text(json.dumps({"torch": torch.__version__, "rows": loss_rows}, indent=2))
    (out / "loss.md").write_text(bench_loss.table(loss_rows))
    print(bench_loss.table(loss_rows))

    linear = None
    if not args.quick:
        print("2/3 fused linear + beta-loss against matmul then loss", flush=True)
        linear = bench_linear.measure()
        (out / "linear.json").write_text(json.dumps({"torch": torch.__version__, **linear}, indent=2))
        (out / "linear.md").write_text(bench_linear.table(linear))
        print(bench_linear.table(linear))

    print("3/3 stacked sweep training against the single-model loop", flush=True)
    stacked = bench_stacked.measure(args.data_dir)
    if not args.quick:
        stacked["sweep"] = bench_stacked.time_sweep(args.data_dir)
    (out / "stacked.json").write_text(json.dumps({"torch": torch.__version__, **stacked}, indent=2))
    print(json.dumps(stacked, indent=2))

    rows = targets(loss_rows, linear, stacked)
    (out / "summary.json").write_text(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(),
                                                  "quick": args.quick, "targets": rows}, indent=2))
    (out / "summary.md").write_text(summary_table(rows))
    print(summary_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
