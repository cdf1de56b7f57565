"""The benchmark suite: every performance target of the project, measured in one command.

    python bench/run_all.py --data-dir ../shared/datasets      # ~10 minutes on 2 cores
    python bench/run_all.py --quick                            # small shapes and the stacked ratio only
    python bench/run_all.py --compare earlier/summary.json     # also: does each figure reproduce that run's?

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

    def add(what, value, limit, unit="×", at_least=False, spread=None):
        if value is None:
            return
        met = value >= limit if at_least else value <= limit
        low, high = spread if spread is not None else (value, value)
        rows.append({"requirement": what, "measured": value, "min": low, "max": high, "target": limit,
                     "unit": unit, "direction": ">=" if at_least else "<=", "met": bool(met)})

    def ratio(row):
        return {"value": row["time_vs_ce"], "spread": (row["time_vs_ce_min"], row["time_vs_ce_max"])}

    big = by.get(("8192x32000", "gradient_decay_loss β=0.1"))
    if big:
        add("β-loss 8192×32000, time / CE", limit=0.6, **ratio(big))
        add("β-loss 8192×32000, extra memory / logits", big["memory_leaf"], 1.1)
    inplace = by.get(("8192x32000", "fused in-place β=0.1"))
    if inplace:
        add("in-place 8192×32000, time / CE", limit=0.25, **ratio(inplace))
        add("in-place 8192×32000, extra memory / logits (logits from a matmul)", inplace["memory_matmul"], 0.15)
    for shape in ("100x10", "4096x10", "4096x1000"):
        row = by[(shape, "gradient_decay_loss β=0.1")]
        add(f"β-loss {shape.replace('x', '×')}, time / CE", limit=1.3, **ratio(row))
    if linear:
        add("fused linear 8192×1024×128000, memory saving", 100 * linear["memory_saving"], 70, "%", at_least=True,
            spread=(100 * linear["memory_saving_min"], 100 * linear["memory_saving_max"]))
        add("fused linear 8192×1024×128000, time / matmul then loss", linear["time_ratio"], 1.25,
            spread=(linear["time_ratio_min"], linear["time_ratio_max"]))
    add(f"stacked training ({stacked['runs']} runs), time per model-step / single loop", stacked["ratio"], 0.4,
        spread=(stacked["ratio_min"], stacked["ratio_max"]))
    if "sweep" in stacked:
        add("6 configs × 100 epochs MNIST, wall time", stacked["sweep"]["seconds"], 180, "s")
    return rows


def _figure(value: float, unit: str) -> str:
    return f"{value:.2f}×" if unit == "×" else f"{value:.0f} {unit}"


def reproduces(first: dict, second: dict) -> bool:
    """Two runs agree when their min–max spreads overlap (single readings: within 10 % of each other)."""
    if first["min"] == first["max"] and second["min"] == second["max"]:
        return abs(first["measured"] - second["measured"]) <= 0.1 * abs(first["measured"])
    return first["min"] <= second["max"] and second["min"] <= first["max"]


def summary_table(rows: list[dict], earlier: list[dict] | None = None) -> str:
    """The targets, each median with its spread; with ``earlier`` (a previous run's rows) a column for
    that run and whether the two reproduce each other."""
    lines = [f"{bench_loss.machine()}, float32. Each ratio is against a baseline measured in the same run; "
             "the figure is the median over interleaved rounds (loss), fresh processes (linear) or epochs "
             "(stacked), with its min–max in brackets (details in loss.md, linear.md, stacked.json).", ""]
    previous = {r["requirement"]: r for r in earlier or []}
    head = "| requirement | measured [min–max] | target | met |" + (" earlier run | reproduces |" if earlier else "")
    lines += [head, "|---|---|---|---|" + ("---|---|" if earlier else "")]
    for r in rows:
        value = f"{_figure(r['measured'], r['unit'])}"
        if r["min"] != r["max"]:
            value += f" [{_figure(r['min'], r['unit'])}–{_figure(r['max'], r['unit'])}]"
        target = f"{r['direction']} {r['target']:g}{'' if r['unit'] == '×' else ' ' + r['unit']}"
        target = target + "×" if r["unit"] == "×" else target
        line = f"| {r['requirement']} | {value} | {target} | {'yes' if r['met'] else '**no**'} |"
        if earlier:
            other = previous.get(r["requirement"])
            line += (f" {_figure(other['measured'], other['unit'])} | {'yes' if reproduces(r, other) else '**no**'} |"
                     if other else " — | — |")
        lines.append(line)
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="../shared/datasets", help="folder holding MNIST")
    parser.add_argument("--quick", action="store_true",
                        help="skip the large shapes, the fused linear case and the 100-epoch sweep")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--compare", help="a summary.json of an earlier run: adds its figures and whether they "
                                          "reproduce within their spreads")
    args = parser.parse_args(argv)
    earlier = json.loads(Path(args.compare).read_text())["targets"] if args.compare else None
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
    (out / "summary.json").write_text(json.dumps({"machine": bench_loss.machine(), "torch": torch.__version__,
                                                  "threads": torch.get_num_threads(), "quick": args.quick,
                                                  "targets": rows}, indent=2))
    (out / "summary.md").write_text(summary_table(rows, earlier))
    print(summary_table(rows, earlier))
    return 0


if __name__ == "__main__":
    sys.exit(main())
