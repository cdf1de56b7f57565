"""One training run: config -> data -> model -> train -> metrics -> files.

Files in the run directory:

* ``config.toml``      the resolved config (rerun with ``gdsoftmax train run_dir/config.toml``)
* ``metrics.jsonl``    one row per epoch: loss as optimised, plain train CE, accuracies, beta, lr, time
* ``checkpoint.pt``    model, optimizer, epoch, step, every RNG state; written atomically each epoch
* ``samples.npz``      per training sample, true-class probability and correctness at chosen epochs
* ``predictions.npz``  final validation and test logits (and 2-D features when the model has them)
* ``result.json``      the summary; its presence marks the run finished

A run killed at any moment resumes from its last checkpoint and ends bit-identical to one that
was never interrupted: data order and augmentation come from a generator saved in the checkpoint,
and metric rows written after that checkpoint are dropped on resume, so none is duplicated.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import tomli_w
import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm.auto import tqdm

from gdsoftmax.adaptive import PIDController, gradient_scale
from gdsoftmax.checkpoint import (
    atomic_write_bytes,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from gdsoftmax.config import ExperimentConfig, resolve_beta, to_dict
from gdsoftmax.data import Dataset, augment_batch, load_dataset
from gdsoftmax.margins import margin_statistics
from gdsoftmax.models import build_model
from gdsoftmax.objectives import build_objective

__all__ = ["learning_rate", "run_experiment"]


def learning_rate(config: ExperimentConfig, epoch: int) -> float:
    """The paper's step decay: lr * gamma^(number of milestone fractions already passed). Pure in ``epoch``."""
    passed = sum(epoch >= round(m * config.train.epochs) for m in config.train.lr_milestones)
    return config.train.lr * config.train.lr_gamma**passed


def run_experiment(config: ExperimentConfig, run_dir: str | Path, *, data: Dataset | None = None,
                   progress: bool = True) -> dict:
    """Train one config in ``run_dir`` (resuming if it holds a checkpoint); return the summary."""
    run_dir = Path(run_dir)
    world = _Distributed.from_environment(config.train.device)
    if world.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    _seed_everything(config.seed)

    # ---- data
    if data is None:
        d = config.data
        data = load_dataset(d.dataset, d.data_dir or None, download=d.download, val_size=d.val_size,
                            split_seed=d.split_seed)
    data = data.to(world.device)
    n_train, batch_size = len(data.train), config.train.batch_size
    steps_per_epoch = math.ceil(n_train / batch_size)

    # ---- model, loss, optimizer
    model = build_model(config.model.name, data.image_shape, data.num_classes,
                        config.model.penultimate_dim or None, **config.model.options)
    objective = build_objective(config.loss.name, config.loss.options, model,  # may install a margin head
                                beta=resolve_beta(config.loss.beta, steps_per_epoch), tau=config.loss.tau,
                                label_smoothing=config.loss.label_smoothing)
    model = model.to(world.device)
    trained = world.wrap(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.train.lr, momentum=config.train.momentum,
                                weight_decay=config.train.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)  # data order and augmentation
    record_epochs = sorted({e for e in config.train.record_epochs if e <= config.train.epochs} | {config.train.epochs})

    controller = objective.beta_at if isinstance(getattr(objective, "beta_at", None), PIDController) else None
    lr_factor = 1.0  # adaptive beta with lr_compensation rescales the step size

    # ---- resume
    start_epoch, elapsed, records = 0, 0.0, {}
    checkpoint_path = run_dir / "checkpoint.pt"
    if checkpoint_path.exists():
        state = load_checkpoint(checkpoint_path, map_location=world.device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        restore_rng_state(state["rng"], generator)
        start_epoch, elapsed = int(state["epoch"]), float(state["elapsed"])
        records = {int(k): v for k, v in state["records"].items()}
        lr_factor = float(state.get("lr_factor", 1.0))
        if controller is not None:
            controller.load_state_dict(state["controller"])
    if world.is_main:
        open_run_directory(run_dir, config, start_epoch)

    # ---- train
    started = time.perf_counter() - elapsed
    bar = tqdm(range(start_epoch, config.train.epochs), desc=config.name, initial=start_epoch,
               total=config.train.epochs, disable=not (progress and world.is_main), leave=False, unit="epoch")
    for epoch in bar:
        epoch_lr = learning_rate(config, epoch) * lr_factor
        for group in optimizer.param_groups:
            group["lr"] = epoch_lr
        trained.train()
        totals = torch.zeros(4, dtype=torch.float64, device=world.device)  # loss, ce, correct, count
        order = torch.randperm(n_train, generator=generator)
        for i in range(steps_per_epoch):
            step = epoch * steps_per_epoch + i
            index = order[i * batch_size : (i + 1) * batch_size].to(world.device)
            images = data.train.images[index]  # (B, C, H, W) uint8, the global batch
            if config.data.augment:
                images = augment_batch(images, generator)
            mine = slice(world.rank, None, world.size)  # this process's share of the global batch
            x, y = data.normalize(images[mine]), data.train.labels[index][mine]
            loss, logits = objective(trained, x, y, step)  # logits (b, K)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.train.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.train.grad_clip)
            optimizer.step()
            with torch.no_grad():
                # device tensors only: no host sync inside the step loop
                totals += torch.stack([(loss * len(y)).double(), F.cross_entropy(logits, y, reduction="sum").double(),
                                       (logits.argmax(1) == y).sum().double(), totals.new_tensor(float(len(y)))])
        world.all_reduce(totals)
        loss_sum, ce_sum, correct, count = totals.tolist()

        scores, val, val_logits = evaluation_scores(model, data, config)
        if controller is not None:  # adaptive beta: one PID step on the validation calibration gap
            controller.update(val["conf"] - val["acc"])
            if controller.lr_compensation:
                lr_factor = 1.0 / gradient_scale(val_logits, data.val.labels, controller(0), config.loss.tau)
        margins = {}
        if config.train.track_margin:
            stats = margin_statistics(model, data.normalize(data.train.images), data.train.labels)
            margins = {f"train_{k}": v for k, v in stats.items() if k != "order"}
        if epoch + 1 in record_epochs:
            records[epoch + 1] = per_sample_record(model, data, config)
        row = {"epoch": epoch + 1, "step": (epoch + 1) * steps_per_epoch, "beta": getattr(objective, "beta", None),
               "lr": epoch_lr, "train_loss": loss_sum / count, "train_ce": ce_sum / count,
               "train_acc": correct / count, **scores, **margins, "wall_time": time.perf_counter() - started}
        bar.set_postfix(loss=f"{row['train_loss']:.3f}", test_acc=f"{row['test_acc']:.4f}")
        if world.is_main:
            write_epoch(run_dir, row, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch + 1,
                "step": (epoch + 1) * steps_per_epoch, "lr": epoch_lr,
                "elapsed": row["wall_time"], "rng": capture_rng_state(generator),
                "records": {str(k): v for k, v in records.items()}, "lr_factor": lr_factor,
                "controller": controller.state_dict() if controller is not None else {},
            })
        world.barrier()
    bar.close()

    # ---- final files
    summary = finish_run(run_dir, config, model, data, records) if world.is_main else _summary(config, [])
    world.close()
    return summary


# ---- the steps around training, shared with gdsoftmax.batched ---------------------------------


def open_run_directory(run_dir: Path, config: ExperimentConfig, start_epoch: int) -> None:
    """Write the resolved config and drop metric rows from after the checkpoint being resumed."""
    atomic_write_bytes(run_dir / "config.toml", tomli_w.dumps(_toml_safe(to_dict(config))).encode())
    rows = _metric_rows_up_to(run_dir / "metrics.jsonl", start_epoch)
    atomic_write_bytes(run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode())


def evaluation_scores(model, data: Dataset, config: ExperimentConfig) -> tuple[dict, dict, torch.Tensor]:
    """The metric-row entries for validation and test, the validation metrics and logits (N, K)."""
    (val, val_logits), (test, _) = evaluate(model, data, "val", config), evaluate(model, data, "test", config)
    scores = {"val_ce": val["ce"], "val_acc": val["acc"], "test_ce": test["ce"], "test_acc": test["acc"]}
    return scores, val, val_logits


def write_epoch(run_dir: Path, row: dict, checkpoint: dict) -> None:
    """The row first, then the checkpoint: a crash in between re-runs this epoch and the resume
    drops this row, so rows are never missing nor duplicated."""
    _append_line(run_dir / "metrics.jsonl", json.dumps(row))
    save_checkpoint(run_dir / "checkpoint.pt", checkpoint)


def finish_run(run_dir: Path, config: ExperimentConfig, model, data: Dataset, records: dict,
               stacked_runs: int = 1) -> dict:
    """Write samples.npz, predictions.npz and, last, result.json (which marks the run finished)."""
    summary = _summary(config, _metric_rows_up_to(run_dir / "metrics.jsonl", config.train.epochs))
    summary["stacked_runs"] = stacked_runs  # > 1: wall_time is that of the whole stack
    _save_npz(run_dir / "samples.npz", epochs=np.array(sorted(records)),
              p_true=np.stack([records[e]["p_true"].numpy() for e in sorted(records)]),
              correct=np.stack([records[e]["correct"].numpy() for e in sorted(records)]),
              labels=data.train.labels.cpu().numpy())
    _save_npz(run_dir / "predictions.npz", **final_predictions(model, data, config))
    atomic_write_bytes(run_dir / "result.json", json.dumps(summary, indent=2).encode())
    return summary


@torch.no_grad()
def _forward_all(model, data: Dataset, split_name: str, config: ExperimentConfig, features: bool = False):
    """Logits (N, K) (and features (N, D)) of a whole split in eval mode."""
    split = getattr(data, split_name)
    was_training = model.training
    model.eval()
    outputs = []
    for start in range(0, len(split), config.train.eval_batch_size):
        x = data.normalize(split.images[start : start + config.train.eval_batch_size])
        outputs.append(model(x, return_features=True) if features else (model(x), None))
    model.train(was_training)
    logits = torch.cat([o[0] for o in outputs]) if outputs else torch.zeros(0, data.num_classes)
    feats = torch.cat([o[1] for o in outputs]) if features and outputs else None
    return logits, feats


def evaluate(model, data: Dataset, split_name: str, config: ExperimentConfig) -> tuple[dict, torch.Tensor]:
    """Accuracy, plain cross-entropy and mean confidence of a split (NaN when empty), and its logits (N, K)."""
    logits, _ = _forward_all(model, data, split_name, config)
    labels = getattr(data, split_name).labels
    if len(labels) == 0:
        return {"acc": float("nan"), "ce": float("nan"), "conf": float("nan")}, logits
    metrics = {"acc": (logits.argmax(1) == labels).float().mean().item(),
               "ce": F.cross_entropy(logits, labels).item(),
               "conf": torch.softmax(logits / config.loss.tau, 1).amax(1).mean().item()}
    return metrics, logits


def per_sample_record(model, data: Dataset, config: ExperimentConfig) -> dict:
    """For every training sample: p_true = softmax(z / tau)_y (float16) and whether it is classified right."""
    logits, _ = _forward_all(model, data, "train", config)
    labels = data.train.labels
    p_true = torch.softmax(logits / config.loss.tau, 1).gather(1, labels[:, None]).squeeze(1)
    return {"p_true": p_true.half().cpu(), "correct": (logits.argmax(1) == labels).cpu()}


def final_predictions(model, data: Dataset, config: ExperimentConfig) -> dict:
    arrays = {}
    for split in ("val", "test"):
        logits, feats = _forward_all(model, data, split, config, features=True)
        arrays[f"{split}_logits"] = logits.cpu().numpy()
        arrays[f"{split}_labels"] = getattr(data, split).labels.cpu().numpy()
        if feats is not None and feats.shape[1] <= 16:  # low-dimensional features are what plots need
            arrays[f"{split}_features"] = feats.cpu().numpy()
    return arrays


def _summary(config: ExperimentConfig, rows: list[dict]) -> dict:
    last = rows[-1] if rows else {}
    best = max(rows, key=lambda r: r["val_acc"] if not math.isnan(r["val_acc"]) else -1) if rows else {}
    return {"name": config.name, "seed": config.seed, "beta": config.loss.beta, "epochs": len(rows),
            "test_acc": last.get("test_acc"), "test_ce": last.get("test_ce"), "train_ce": last.get("train_ce"),
            "train_acc": last.get("train_acc"), "best_val_acc": best.get("val_acc"),
            "best_val_epoch": best.get("epoch"), "wall_time": last.get("wall_time")}


def _metric_rows_up_to(path: Path, epoch: int) -> list[dict]:
    """Rows with epoch <= ``epoch``; a torn last line from a crash is skipped."""
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if row.get("epoch", math.inf) <= epoch:
                rows.append(row)
    return rows


def _append_line(path: Path, line: str) -> None:
    with open(path, "a") as handle:
        handle.write(line + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _save_npz(path: Path, **arrays) -> None:
    import io

    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def _toml_safe(value):
    """TOML has no null; drop None values (all of ours have defaults)."""
    if isinstance(value, dict):
        return {k: _toml_safe(v) for k, v in value.items() if v is not None}
    return value


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - seeds the global RNG that other code may use
    random.seed(seed)


class _Distributed:
    """Single process, or one rank of a torchrun launch (gloo on CPU, nccl on GPU)."""

    def __init__(self, rank: int, size: int, device: torch.device):
        self.rank, self.size, self.device = rank, size, device
        self.is_main = rank == 0

    @classmethod
    def from_environment(cls, device_name: str) -> _Distributed:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        if device_name == "auto":
            device_name = "cuda" if torch.cuda.is_available() else "cpu"
        cuda = device_name.startswith("cuda")
        if cuda and not torch.cuda.is_available():
            raise ValueError(f"train.device is {device_name!r} but no CUDA device is available here; "
                             "use train.device=auto (or cpu)")
        if size == 1:
            return cls(0, 1, torch.device(device_name))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device(f"cuda:{local_rank}") if cuda else torch.device("cpu")
        if not dist.is_initialized():
            dist.init_process_group("nccl" if cuda else "gloo")
        return cls(dist.get_rank(), size, device)

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        if self.size == 1:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def all_reduce(self, tensor: torch.Tensor) -> None:
        if self.size > 1:
            dist.all_reduce(tensor)

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()

    def close(self) -> None:
        if self.size > 1 and dist.is_initialized():
            dist.destroy_process_group()

