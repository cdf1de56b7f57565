"""Benchmark: where a CIFAR-10 training epoch's time goes on a CPU, and what each engine option saves.

An epoch of the CIFAR-10 study (configs/cifar10_cpu.toml) is a training pass over 45,000 images,
an evaluation of validation and test (15,000), and on record epochs a pass over the training set
for the per-sample confidences. This script times, on the real CIFAR-10 images, in one process:

* the training step's phases (batch gather + augmentation, forward + loss, backward, clipping,
  optimizer) for the engine's defaults, to show where the time goes;
* the training pass per option, each added to the one before: float32 (the defaults), then
  ``channels_last``, then ``precision = "bf16"`` (autocast; the CPU's bf16 matrix units), then
  ``compile`` (torch.compile's CPU backend), through the engine's own training step;
* evaluation per variant: batches of 1000 (the default), of 250 (they stay in cache), and with
  batch norm folded into the convolutions (what the engine now does).

Each figure is the median over ``--rounds`` interleaved rounds, scaled from ``--steps`` timed steps
to a 45,000-image epoch. "Before" is the engine's defaults (fp32, eval batch 1000, no folding);
"after" is the study's settings (channels_last, bf16, eval batch 250, folding). Run it on an idle
machine; other processes on the same cores distort every figure.

    python bench/bench_cifar_epoch.py --data-dir ../shared/datasets           # ~5 minutes on 2 cores
    python bench/bench_cifar_epoch.py --model small_cnn --width 16 --batch 100  # the earlier CPU model
    python bench/bench_cifar_epoch.py --quick                                  # a smoke run, synthetic data
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from bench_gpu_engine import _first, cifar_like

from gdsoftmax.engine.config.schema import parse_config
from gdsoftmax.engine.data.images import crop_and_flip, draw_augmentation, load_dataset
from gdsoftmax.engine.loop.distributed import Distributed
from gdsoftmax.engine.loop.one_model import OneModelRun
from gdsoftmax.engine.tasks.images import ImageClassification, fold_batch_norm

TRAIN_IMAGES, EVAL_IMAGES, RECORD_IMAGES = 45_000, 15_000, 45_000
OPTION_STEPS = [  # cumulative: each row adds its option to the ones above
    ("float32 (engine defaults)", {}),
    ("+ channels_last", {"channels_last": True}),
    ("+ bf16 autocast", {"channels_last": True, "precision": "bf16"}),
    ("+ torch.compile", {"channels_last": True, "precision": "bf16", "compile": True}),
]
EVAL_VARIANTS = [("batch 1000 (default)", 1000, False), ("batch 250", 250, False),
                 ("batch 250, batch norm folded", 250, True)]


def make_run(data, args, **options) -> OneModelRun:
    config = parse_config({"model": {"name": args.model, "options": {"width": args.width}},
                           "data": {"augment": True},
                           "train": {"batch_size": args.batch, "lr": 0.05, "weight_decay": 5e-4, **options}})
    run = OneModelRun(ImageClassification(), config, _first(data, args.steps * args.batch),
                      Distributed(0, 1, torch.device("cpu")), args.steps)
    run.train_epoch(0)  # untimed: compilation, allocator, oneDNN primitive caches
    return run


def train_pass_seconds(run: OneModelRun, args) -> float:
    """Seconds for a 45,000-image training pass, from ``args.steps`` steps of the engine's loop."""
    start = time.perf_counter()
    run.train_epoch(1)
    return (time.perf_counter() - start) * TRAIN_IMAGES / (args.steps * args.batch)


def phase_seconds(run: OneModelRun, args) -> dict[str, float]:
    """The training step taken apart (the engine's step, phase by phase), scaled to a 45,000-image pass."""
    data, objective, generator = run.eval_data, run.objectives[0], torch.Generator().manual_seed(0)
    spent = dict.fromkeys(["batch + augmentation", "forward + loss", "backward", "gradient clipping", "optimizer"],
                          0.0)
    for step in range(args.steps):
        marks = [time.perf_counter()]
        index = torch.randint(len(data.train), (args.batch,), generator=generator)
        images = crop_and_flip(data.train.images[index], *draw_augmentation(generator, [args.batch]))
        x, y = data.normalize(images), data.train.labels[index]
        marks.append(time.perf_counter())
        loss, _ = objective(run.trained, x, y, step)
        marks.append(time.perf_counter())
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        marks.append(time.perf_counter())
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), 3.0)
        marks.append(time.perf_counter())
        run.optimizer.step()
        marks.append(time.perf_counter())
        for name, begin, end in zip(spent, marks, marks[1:], strict=False):
            spent[name] += end - begin
    scale = TRAIN_IMAGES / (args.steps * args.batch)
    return {name: seconds * scale for name, seconds in spent.items()}


@torch.inference_mode()
def eval_pass_seconds(run: OneModelRun, images: torch.Tensor, batch: int, fold: bool) -> float:
    """Seconds to compute the logits of 15,000 images (validation + test) in eval mode."""
    model = run.members[0]
    model.eval()
    evaluated = fold_batch_norm(model) if fold else model
    start = time.perf_counter()
    for i in range(0, len(images), batch):
        evaluated(run.eval_data.normalize(images[i : i + batch]))
    model.train()
    return (time.perf_counter() - start) * EVAL_IMAGES / len(images)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.environ.get("GDSOFTMAX_DATA_DIR", "../shared/datasets"),
                        help="folder holding CIFAR10/cifar10.npz")
    parser.add_argument("--model", default="resnet9")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30, help="timed training steps per round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    parser.add_argument("--epochs", type=int, default=8, help="epochs of the study (to spread the record passes)")
    parser.add_argument("--record-epochs", type=int, default=4, help="epochs with a per-sample record pass")
    parser.add_argument("--quick", action="store_true", help="synthetic data, a few steps, no compile: a smoke run")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    if args.quick:
        args.steps, args.rounds, args.batch = 2, 1, 16
        data = cifar_like(64)
    else:
        data = load_dataset("cifar10", args.data_dir, download=False, val_size=0)
    eval_images = data.train.images[: 40 * args.batch if args.quick else 5000]

    steps = OPTION_STEPS[:-1] if args.quick else OPTION_STEPS  # compiling takes a minute; smoke runs skip it
    runs = {label: make_run(data, args, **options) for label, options in steps}
    train, evals, phases = {label: [] for label in runs}, {label: [] for label, _, _ in EVAL_VARIANTS}, []
    for _ in range(args.rounds):
        for label, run in runs.items():
            train[label].append(train_pass_seconds(run, args))
        for label, batch, fold in EVAL_VARIANTS:
            evals[label].append(eval_pass_seconds(runs["+ bf16 autocast"], eval_images, batch, fold))
        phases.append(phase_seconds(runs["float32 (engine defaults)"], args))
    train_s = {label: statistics.median(v) for label, v in train.items()}
    eval_s = {label: statistics.median(v) for label, v in evals.items()}
    phase_s = {name: statistics.median(p[name] for p in phases) for name in phases[0]}
    # eval in fp32 for "before": the bf16 run's eval scaled by its train ratio would be a guess, so measure it
    fp32_eval = statistics.median(eval_pass_seconds(runs["float32 (engine defaults)"], eval_images, 1000, False)
                                  for _ in range(args.rounds))
    record_share = args.record_epochs / args.epochs * RECORD_IMAGES / EVAL_IMAGES  # record passes per epoch, in evals

    def epoch(train_seconds, eval_seconds):
        return train_seconds + eval_seconds * (1 + record_share)

    before = epoch(train_s["float32 (engine defaults)"], fp32_eval)
    after = epoch(train_s["+ bf16 autocast"], eval_s["batch 250, batch norm folded"])
    lines = [f"# A CIFAR-10 epoch on {torch.get_num_threads()} CPU threads: {args.model} width {args.width}, "
             f"batch {args.batch}", "",
             f"{platform.processor() or 'cpu'}; torch {torch.__version__}; {'synthetic' if args.quick else 'real'} "
             f"CIFAR-10; medians of {args.rounds} interleaved rounds of {args.steps} steps, scaled to "
             f"{TRAIN_IMAGES:,} training and {EVAL_IMAGES:,} evaluation images. An epoch = training pass + "
             f"evaluation + {record_share:.2f} evaluation-sized passes for the per-sample records "
             f"({args.record_epochs} of {args.epochs} epochs).", "",
             "## Where a float32 training pass goes", "", "| phase | seconds per epoch | share |", "|---|---|---|"]
    total = sum(phase_s.values())
    lines += [f"| {name} | {s:.1f} | {s / total:.0%} |" for name, s in phase_s.items()]
    lines += ["", "## Training pass, options added one by one", "",
              "| options | seconds per epoch | ratio to float32 |", "|---|---|---|"]
    base = train_s["float32 (engine defaults)"]
    lines += [f"| {label} | {s:.1f} | {s / base:.2f}× |" for label, s in train_s.items()]
    lines += ["", "## Evaluation of validation + test (bf16, channels_last)", "",
              "| variant | seconds | ratio to batch 1000 |", "|---|---|---|"]
    lines += [f"| {label} | {s:.2f} | {s / eval_s['batch 1000 (default)']:.2f}× |" for label, s in eval_s.items()]
    lines += ["", "## Epoch, before and after", "", "| | seconds per epoch | ratio |", "|---|---|---|",
              f"| before: float32, eval batch 1000, no folding | {before:.1f} | 1.00× |",
              f"| after: channels_last + bf16, eval batch 250, batch norm folded | {after:.1f} | "
              f"{after / before:.2f}× |"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "cifar_epoch_smoke" if args.quick else f"cifar_epoch_{args.model}_w{args.width}"
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    (out / f"{stem}.json").write_text(json.dumps(
        {"args": vars(args), "torch": torch.__version__, "threads": torch.get_num_threads(),
         "train_pass_s": train, "eval_s": evals, "fp32_eval_batch1000_s": fp32_eval, "phases_s": phase_s,
         "epoch_before_s": before, "epoch_after_s": after}, indent=2))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
