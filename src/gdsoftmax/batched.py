"""Stacked training: the cells of a sweep that differ only in beta and seed train as one model.

For small models most of a training step is per-operator overhead, so a sweep over beta (and
seeds) wastes its time launching tiny kernels. Here M runs with the same data, architecture and
recipe are trained together: their parameters are stacked along a new leading dimension
(``torch.func.stack_module_state``), the forward pass is batched matrix products for the MLPs
and ``vmap`` of the shared architecture otherwise, one fused kernel computes all M losses with
a beta per run, and SGD steps the stacked tensors (elementwise, so the same as one optimizer per
run), with gradient clipping per run.

Each run keeps everything that makes it itself: its seed (initial weights and data order), its
beta schedule, its run directory with the same files :mod:`gdsoftmax.trainer` writes, and its own
checkpoint in the trainer's format, so a run started stacked resumes alone and the other way round.
Results equal separate runs up to float rounding (batched matrix products sum in another order).

Stacking applies to the gdsoftmax loss with a fixed or scheduled beta (not the PID controller),
no label smoothing, no augmentation, no margin tracking, one process, and models without
buffers or dropout (the FCNNs; BatchNorm's running statistics do not vmap).

>>> from gdsoftmax.config import parse_config
>>> a = parse_config({"name": "a", "loss": {"beta": 0.1}})
>>> b = parse_config({"name": "b", "loss": {"beta": 5.0}, "seed": 1})
>>> stacking_key(a) == stacking_key(b) != None
True
>>> stacking_key(parse_config({"name": "c", "data": {"augment": True}})) is None
True
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap
from tqdm.auto import tqdm

from gdsoftmax.checkpoint import capture_rng_state, load_checkpoint, restore_rng_state
from gdsoftmax.config import ExperimentConfig, resolve_beta, to_dict
from gdsoftmax.data import Dataset, Split
from gdsoftmax.fused import _chunk_loss
from gdsoftmax.models import Classifier, build_model
from gdsoftmax.objectives import build_objective
from gdsoftmax.trainer import (
    _Distributed,
    _seed_everything,
    evaluation_scores,
    finish_run,
    learning_rate,
    open_run_directory,
    per_sample_record,
    write_epoch,
)

__all__ = ["is_stateless", "run_stacked", "stacked_beta_loss", "stacking_key"]


def stacking_key(config: ExperimentConfig) -> str | None:
    """Configs with equal keys can train as one stacked model; None if this one cannot stack."""
    beta = config.loss.beta
    if config.loss.name != "gdsoftmax" or (isinstance(beta, dict) and beta.get("kind") == "pid"):
        return None
    if config.loss.label_smoothing or config.data.augment or config.train.track_margin:
        return None
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return None
    shared = to_dict(config)
    del shared["name"], shared["seed"], shared["loss"]["beta"]
    shared.pop("sweep", None)
    return json.dumps(shared, sort_keys=True, default=str)


def is_stateless(model: nn.Module) -> bool:
    """No buffers and no dropout: the training forward pass is a pure function of the parameters."""
    return not any(True for _ in model.buffers()) and not any(
        isinstance(m, nn.modules.dropout._DropoutNd) for m in model.modules())


class _StackedBetaLoss(torch.autograd.Function):
    """Per-run mean beta-losses of stacked logits; the gradient is written in the forward pass."""

    @staticmethod
    def forward(ctx, logits, target, beta, tau):
        m, b, k = logits.shape
        flat = logits.reshape(m * b, k)  # (M*B, K)
        grad = torch.empty_like(flat)
        beta_rows = beta.to(logits.dtype).repeat_interleave(b).unsqueeze(1)  # (M*B, 1)
        rows = _chunk_loss(flat, grad, target.reshape(m * b, 1), 1.0 / b, beta_rows, tau, 1.0)
        ctx.save_for_backward(grad)
        return rows.view(m, b).sum(1)  # (M,)

    @staticmethod
    def backward(ctx, grad_output):
        if torch.is_grad_enabled():
            raise RuntimeError("stacked_beta_loss has no double backward")
        (grad,) = ctx.saved_tensors
        m = grad_output.shape[0]
        return grad.view(m, -1, grad.shape[1]) * grad_output.view(m, 1, 1), None, None, None


def stacked_beta_loss(logits: torch.Tensor, target: torch.Tensor, beta: torch.Tensor, tau: float = 1.0):
    """Mean beta-loss of each of M runs: logits (M, B, K), target (M, B), beta (M,) -> (M,).

    >>> from gdsoftmax import gradient_decay_loss
    >>> z, t = torch.randn(2, 5, 3), torch.randint(3, (2, 5))
    >>> losses = stacked_beta_loss(z, t, torch.tensor([0.1, 4.0]))
    >>> torch.allclose(losses[1], gradient_decay_loss(z[1], t[1], 4.0))
    True
    """
    if logits.dim() != 3 or target.shape != logits.shape[:2] or beta.shape != logits.shape[:1]:
        raise ValueError(f"need logits (M, B, K), target (M, B) and beta (M,); got {tuple(logits.shape)}, "
                         f"{tuple(target.shape)} and {tuple(beta.shape)}")
    return _StackedBetaLoss.apply(logits.contiguous(), target.long(), beta, float(tau))


class _Normalized(Dataset):
    """A data set whose images are stored normalised (float); ``normalize`` passes them through."""

    @classmethod
    def of(cls, data: Dataset) -> _Normalized:
        splits = [Split(data.normalize(s.images), s.labels) for s in (data.train, data.val, data.test)]
        return cls(data.name, *splits, data.num_classes, data.mean, data.std, data.pixel_max)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return images

    def to(self, device) -> _Normalized:
        return self


class _Member(nn.Module):
    """Run ``index`` of a stacked model, callable like the original model (for evaluation)."""

    def __init__(self, base: nn.Module, params: dict, index: int):
        super().__init__()
        self.base, self.params, self.index = base, params, index

    def forward(self, x, return_features: bool = False):
        weights = {name: p[self.index] for name, p in self.params.items()}
        return functional_call(self.base, weights, (x,), {"return_features": return_features})

    def state_dict_copy(self) -> dict:
        return {name: p[self.index].detach().clone() for name, p in self.params.items()}


def _matmul_forward(model: nn.Module):
    """A forward over stacked parameters by batched matrix products, for the MLP classifiers
    (Flatten / Linear / ReLU chains); None for any other model, which then goes through vmap.
    Same arithmetic as vmap, fewer operator calls (about 15 % of a step on MNIST)."""
    if not isinstance(model, Classifier) or not isinstance(model.body, nn.Sequential):
        return None
    prefix = {module: name for name, module in model.named_modules()}
    steps = []
    for module in [*model.body, model.bottleneck, model.classifier]:
        if isinstance(module, nn.Linear):
            steps.append(prefix[module])
        elif isinstance(module, nn.ReLU) or (isinstance(module, nn.Flatten) and
                                             (module.start_dim, module.end_dim) == (1, -1)):
            steps.append(type(module))
        elif not isinstance(module, nn.Identity):
            return None

    def forward(params: dict, x: torch.Tensor) -> torch.Tensor:  # x (M, B, ...) -> logits (M, B, K)
        for step in steps:
            if step is nn.Flatten:
                x = x.flatten(2)
            elif step is nn.ReLU:
                x = x.relu()
            else:
                weight, bias = params[f"{step}.weight"].transpose(1, 2), params.get(f"{step}.bias")
                x = torch.bmm(x, weight) if bias is None else torch.baddbmm(bias.unsqueeze(1), x, weight)
        return x

    return forward


def _clip_per_run(grads: list[torch.Tensor], max_norm: float) -> None:
    """clip_grad_norm_ for each run separately: grads are stacked (M, ...)."""
    m = grads[0].shape[0]
    # the same reductions in the same order as clip_grad_norm_ on one run's gradients, so that
    # clipping does not make a stacked run drift from a separate one by rounding
    per_tensor = torch.stack([g.reshape(m, -1).norm(dim=1) for g in grads], dim=1)  # (M, P), rows contiguous
    norms = torch.linalg.vector_norm(per_tensor, dim=1)  # (M,)
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.view(m, *[1] * (g.dim() - 1)))


def _member_optimizer_state(stacked: dict, index: int) -> dict:
    """One run's slice of the stacked optimizer state, in torch.optim.SGD's own format."""
    state = {key: {name: value[index].clone() if torch.is_tensor(value) and value.dim() > 0 else value
                   for name, value in entry.items()} for key, entry in stacked["state"].items()}
    return {"state": state, "param_groups": copy.deepcopy(stacked["param_groups"])}


def _stack_optimizer_states(states: list[dict]) -> dict:
    first = states[0]
    stacked = {key: {name: torch.stack([s["state"][key][name] for s in states]) if torch.is_tensor(value) else value
                     for name, value in entry.items()} for key, entry in first["state"].items()}
    return {"state": stacked, "param_groups": copy.deepcopy(first["param_groups"])}


def run_stacked(configs: list[ExperimentConfig], run_dirs: list[str | Path], data: Dataset, *,
                progress: bool = True) -> list[dict]:
    """Train ``configs`` (equal :func:`stacking_key`, all new or all at the same checkpoint epoch)
    as one stacked model, each in its run directory; return their summaries."""
    first, run_dirs = configs[0], [Path(d) for d in run_dirs]
    if len({stacking_key(c) for c in configs}) != 1 or stacking_key(first) is None:
        raise ValueError("run_stacked needs configs that differ only in name, seed and loss.beta "
                         "(see gdsoftmax.batched.stacking_key)")
    device = _Distributed.from_environment(first.train.device).device
    data = _Normalized.of(data.to(device))  # every split normalised once, not once per batch and run
    n_train, batch_size = len(data.train), first.train.batch_size
    steps_per_epoch, runs = math.ceil(n_train / batch_size), len(configs)

    # ---- models: each built from its own seed, exactly as a separate run builds it
    models, schedules, generators = [], [], []
    for config in configs:
        _seed_everything(config.seed)
        model = build_model(config.model.name, data.image_shape, data.num_classes,
                            config.model.penultimate_dim or None, **config.model.options)
        objective = build_objective(config.loss.name, config.loss.options, model,
                                    beta=resolve_beta(config.loss.beta, steps_per_epoch), tau=config.loss.tau,
                                    label_smoothing=0.0)
        if not is_stateless(model):
            raise ValueError(f"model {config.model.name!r} has buffers or dropout, so it cannot be stacked")
        models.append(model.to(device))
        schedules.append(objective.beta_at)
        generators.append(torch.Generator().manual_seed(config.seed))
    params, _ = stack_module_state(models)  # {name: (M, ...)}, leaves that require grad
    base = copy.deepcopy(models[0]).to("meta")
    members = [_Member(base, params, m) for m in range(runs)]
    forward = _matmul_forward(base) or vmap(lambda p, x: functional_call(base, p, (x,)))
    optimizer = torch.optim.SGD(params.values(), lr=first.train.lr, momentum=first.train.momentum,
                                weight_decay=first.train.weight_decay)
    del models

    # ---- resume: every run from its own checkpoint, all at the same epoch
    start_epoch, elapsed, records = 0, [0.0] * runs, [{} for _ in range(runs)]
    paths = [d / "checkpoint.pt" for d in run_dirs]
    if any(p.exists() for p in paths):
        states = [load_checkpoint(p, map_location=device) if p.exists() else {"epoch": 0} for p in paths]
        epochs = {int(s["epoch"]) for s in states}
        if len(epochs) != 1:
            raise ValueError(f"runs to stack are at different epochs {sorted(epochs)}; resume them separately")
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(torch.stack([s["model"][name] for s in states]))
        optimizer.load_state_dict(_stack_optimizer_states([s["optimizer"] for s in states]))
        for s, generator in zip(states, generators, strict=True):
            restore_rng_state(s["rng"], generator)
        start_epoch, elapsed = epochs.pop(), [float(s["elapsed"]) for s in states]
        records = [{int(k): v for k, v in s["records"].items()} for s in states]
    for config, run_dir in zip(configs, run_dirs, strict=True):
        run_dir.mkdir(parents=True, exist_ok=True)
        open_run_directory(run_dir, config, start_epoch)

    # ---- train: one step moves all runs
    inputs = data.train.images  # (N, C, H, W) float, already normalised
    labels, tau, clip = data.train.labels, first.loss.tau, first.train.grad_clip
    grads_of = list(params.values())
    record_epochs = {e for e in first.train.record_epochs if e <= first.train.epochs} | {first.train.epochs}
    started = time.perf_counter()
    bar = tqdm(range(start_epoch, first.train.epochs), desc=f"{runs} runs stacked", initial=start_epoch,
               total=first.train.epochs, disable=not progress, leave=False, unit="epoch")
    for epoch in bar:
        epoch_lr = learning_rate(first, epoch)
        for group in optimizer.param_groups:
            group["lr"] = epoch_lr
        totals = torch.zeros(runs, 4, dtype=torch.float64, device=device)  # loss, ce, correct, count
        orders = torch.stack([torch.randperm(n_train, generator=g) for g in generators]).to(device)  # (M, N)
        for i in range(steps_per_epoch):
            step = epoch * steps_per_epoch + i
            index = orders[:, i * batch_size : (i + 1) * batch_size].reshape(-1)  # (M*b,)
            x = inputs.index_select(0, index).view(runs, -1, *inputs.shape[1:])  # (M, b, C, H, W)
            y = labels.index_select(0, index).view(runs, -1)  # (M, b)
            beta = torch.tensor([schedule(step) for schedule in schedules], device=device)
            logits = forward(params, x)  # (M, b, K)
            losses = stacked_beta_loss(logits, y, beta, tau)  # (M,)
            optimizer.zero_grad(set_to_none=True)
            losses.sum().backward()
            if clip > 0:
                _clip_per_run([p.grad for p in grads_of], clip)
            optimizer.step()
            with torch.no_grad():
                count = y.shape[1]
                ce = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(runs, -1).sum(1)
                correct = (logits.argmax(2) == y).sum(1)
                totals += torch.stack([(losses * count).double(), ce.double(), correct.double(),
                                       torch.full_like(ce, count, dtype=torch.float64)], dim=1)

        sums, stacked_state = totals.tolist(), optimizer.state_dict()
        last_step = (epoch + 1) * steps_per_epoch - 1
        for m, (config, run_dir, member) in enumerate(zip(configs, run_dirs, members, strict=True)):
            loss_sum, ce_sum, correct, count = sums[m]
            scores, _, _ = evaluation_scores(member, data, config)
            if epoch + 1 in record_epochs:
                records[m][epoch + 1] = per_sample_record(member, data, config)
            row = {"epoch": epoch + 1, "step": (epoch + 1) * steps_per_epoch, "beta": schedules[m](last_step),
                   "lr": epoch_lr, "train_loss": loss_sum / count, "train_ce": ce_sum / count,
                   "train_acc": correct / count, **scores,
                   "wall_time": elapsed[m] + time.perf_counter() - started}
            write_epoch(run_dir, row, {
                "model": member.state_dict_copy(), "optimizer": _member_optimizer_state(stacked_state, m),
                "epoch": epoch + 1, "step": (epoch + 1) * steps_per_epoch, "lr": epoch_lr,
                "elapsed": row["wall_time"], "rng": capture_rng_state(generators[m]),
                "records": {str(k): v for k, v in records[m].items()}, "lr_factor": 1.0, "controller": {},
            })
        bar.set_postfix(runs=runs)
    bar.close()
    return [finish_run(run_dir, config, member, data, rec, stacked_runs=runs)
            for config, run_dir, member, rec in zip(configs, run_dirs, members, records, strict=True)]


def plan_stacks(pending: list[tuple[str, ExperimentConfig, Path]], image_shape_of, max_runs: int) -> list[list]:
    """Split a sweep's pending cells into groups that train together (a group of one trains alone).

    Cells stack when their :func:`stacking_key` is equal, their model is stateless and they are
    at the same checkpoint epoch; a group holds at most ``max_runs`` cells (balanced when split).
    ``image_shape_of(config)`` gives (image shape, number of classes) of the config's data.
    """
    groups: dict[tuple, list] = {}
    plan: list[list] = []
    for item in pending:
        key = _group_key(item[1], item[2], image_shape_of) if max_runs > 1 else None
        if key is None:
            plan.append([item])
        else:
            if key not in groups:
                groups[key] = []
                plan.append(groups[key])
            groups[key].append(item)
    split = []
    for group in plan:  # into the fewest parts of at most max_runs, sizes differing by at most one
        parts = math.ceil(len(group) / max(1, max_runs))
        size, extra = divmod(len(group), parts)
        bounds = [i * size + min(i, extra) for i in range(parts + 1)]
        split += [group[a:b] for a, b in itertools.pairwise(bounds)]
    return split


def _group_key(config: ExperimentConfig, run_dir: Path, image_shape_of) -> tuple | None:
    key = stacking_key(config)
    if key is None:
        return None
    shape, classes = image_shape_of(config)
    with torch.device("meta"):  # shapes only, no memory
        model = build_model(config.model.name, shape, classes, config.model.penultimate_dim or None,
                            **config.model.options)
    if not is_stateless(model):
        return None
    checkpoint = run_dir / "checkpoint.pt"
    if not checkpoint.exists():
        return key, 0
    try:
        return key, int(load_checkpoint(checkpoint)["epoch"])
    except Exception:  # an unreadable checkpoint is reported by the single-run path
        return None
