"""Benchmark: stacked sweep training against the plain single-model training loop, MNIST FCNN.

Both sides are the project's real training loops with everything a run does per epoch
(training steps, per-step metrics, validation and test evaluation, metric rows, checkpoints):
``run_experiment`` for one run, ``train`` of six configs (stacked) for six runs of the paper's grid
(bench/mnist_six.toml).
Time per model-step = epoch wall time / (runs x steps per epoch); medians over the epochs after
the first (which pays one-off costs). ``--sweep`` also times the whole 6 x 100-epoch sweep
through ``gdsoftmax sweep``.

    python bench/bench_stacked.py --data-dir ../shared/datasets            # about 1 minute
    python bench/bench_stacked.py --data-dir ../shared/datasets --sweep    # + the 100-epoch sweep, ~3 min
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from gdsoftmax.engine.config.schema import load_config
from gdsoftmax.engine.data.images import load_dataset
from gdsoftmax.engine.loop.trainer import run_experiment, train
from gdsoftmax.engine.sweeps.grid import expand_sweep

CONFIG = Path(__file__).parent / "mnist_six.toml"


def epoch_seconds(run_dir: Path) -> list[float]:
    """Durations of epochs 2, 3, ... from the wall_time column of metrics.jsonl."""
    times = [json.loads(line)["wall_time"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [b - a for a, b in itertools.pairwise(times)]


def measure(data_dir: str, epochs: int = 4) -> dict:
    overrides = [f"train.epochs={epochs}", "train.record_epochs=[]", f"data.data_dir={data_dir!r}"]
    cells = expand_sweep(load_config(CONFIG, overrides))
    configs = [cell for _, cell in cells]
    for (name, cell) in cells:
        cell.name = name
    d = configs[0].data
    data = load_dataset(d.dataset, d.data_dir, download=False, val_size=d.val_size, split_seed=d.split_seed)
    steps = math.ceil(len(data.train) / configs[0].train.batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        single = Path(tmp) / "single"
        run_experiment(configs[2], single, data=data, progress=False)  # beta = 0.1, one run alone
        stacked = [Path(tmp) / "stacked" / c.name for c in configs]
        train(configs, stacked, data=data, progress=False)
        single_epochs, stacked_epochs = epoch_seconds(single), epoch_seconds(stacked[0])
    single_epoch, stacked_epoch = statistics.median(single_epochs), statistics.median(stacked_epochs)
    runs = len(configs)
    ratios = [b / (runs * a) for a, b in zip(single_epochs, stacked_epochs, strict=True)]  # epoch by epoch
    return {"runs": runs, "steps_per_epoch": steps, "epochs_timed": epochs - 1,
            "single_ms_per_model_step": 1e3 * single_epoch / steps,
            "stacked_ms_per_model_step": 1e3 * stacked_epoch / (runs * steps),
            "ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios)}


def time_sweep(data_dir: str) -> dict:
    """The whole 6 x 100-epoch sweep through the command line, as a user runs it."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "gdsoftmax", "sweep", str(CONFIG), "--data-dir", data_dir,
                        "--out", tmp, "--no-progress"], check=True, capture_output=True)
        seconds = time.perf_counter() - start
        results = [json.loads(p.read_text()) for p in sorted(Path(tmp).glob("*/*/result.json"))]
    return {"seconds": seconds, "runs": len(results), "epochs": results[0]["epochs"] if results else 0,
            "test_acc": {r["name"]: r["test_acc"] for r in results}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="../shared/datasets", help="folder holding MNIST")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per timed run (the first is not timed)")
    parser.add_argument("--sweep", action="store_true", help="also time the full 6 x 100-epoch sweep")
    args = parser.parse_args(argv)
    result = {"torch": torch.__version__, "threads": torch.get_num_threads(), **measure(args.data_dir, args.epochs)}
    if args.sweep:
        result["sweep"] = time_sweep(args.data_dir)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
