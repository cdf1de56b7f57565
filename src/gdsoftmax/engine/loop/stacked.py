"""Stacked training: the runs of a sweep that differ only in beta and seed train as one model.

For small models most of a training step is per-operator overhead, so a sweep over beta (and
seeds) wastes its time launching tiny kernels. :class:`StackedRuns` is the training loop's
strategy for M such runs: their parameters are stacked along a new leading dimension
(``torch.func.stack_module_state``), the forward pass is batched matrix products for the MLPs
and ``vmap`` of the shared architecture otherwise, one fused kernel computes all M losses with a
beta per run, and SGD steps the stacked tensors (elementwise, so the same as one optimizer per
run), with gradient clipping per run. Everything else (evaluation, metric rows, checkpoints in
the single-run format, resumption) is the loop's, as for a run alone, so a run started stacked
resumes alone and the other way round. Results equal separate runs up to float rounding
(batched matrix products sum in another order).

Every config key is classified below: it may differ between stacked runs, must be equal across
them (any value works), or may make a run train alone. A test fails when a new key is in none
of these, so that no feature is silently ignored by stacked runs. Models must be stateless too
(no buffers, no dropout: BatchNorm's running statistics do not vmap).

>>> from gdsoftmax.engine.config.schema import parse_config
>>> a = parse_config({"name": "a", "loss": {"beta": 0.1}})
>>> b = parse_config({"name": "b", "loss": {"beta": 5.0}, "seed": 1})
>>> stacking_key(a) == stacking_key(b) != None
True
>>> reasons_to_train_alone(parse_config({"name": "c", "data": {"augment": True}}))
['data.augment: augmentation draws per run from its own generator inside the step']
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from gdsoftmax.engine.config.schema import ExperimentConfig, to_dict
from gdsoftmax.engine.data.images import Dataset, Split
from gdsoftmax.engine.models.registry import Classifier, build_model
from gdsoftmax.engine.recipe.lr import LearningRateSchedule
from gdsoftmax.engine.recipe.objectives import build_objective
from gdsoftmax.engine.recipe.optim import build_optimizer
from gdsoftmax.engine.rundir.checkpoint import capture_rng_state, restore_rng_state, seed_everything
from gdsoftmax.engine.rundir.records import Checkpoint
from gdsoftmax.engine.rundir.view import RunView
from gdsoftmax.engine.tasks.registry import task_name
from gdsoftmax.engine.workspace.user_code import is_import_path
from gdsoftmax.loss.fused import stacked_beta_loss
from gdsoftmax.loss.literal import shifted_exp_loss

__all__ = ["PER_RUN_KEYS", "SHARED_KEYS", "TRAIN_ALONE_WHEN", "StackedRuns", "is_stateless", "plan_stacks",
           "reasons_to_train_alone", "stacking_key"]

# keys whose values may differ between the runs of one stack
PER_RUN_KEYS = ("name", "seed", "loss.beta", "train.log", "launcher.partition", "launcher.gpus_per_node",
                "launcher.cpus_per_task", "launcher.mem_gb", "launcher.timeout_min", "launcher.array_parallelism")
# keys that must be equal across a stack (they form the stacking key); every value is supported
SHARED_KEYS = ("data.dataset", "data.input_scaling",
               "data.data_dir", "data.download", "data.val_size", "data.split_seed", "data.train_size", "model.name",
               "model.penultimate_dim", "model.options", "loss.options", "loss.tau", "loss.numerics", "train.epochs",
               "train.batch_size", "train.optimizer", "train.optimizer_options", "train.lr", "train.momentum",
               "train.weight_decay", "train.lr_schedule", "train.lr_milestones", "train.lr_gamma", "train.min_lr",
               "train.warmup_epochs", "train.warmup_steps", "train.grad_clip", "train.eval_batch_size",
               "train.test_every", "train.record_epochs", "train.device", "train.deterministic", "sweep", "tune",
               "data.context", "data.vocab_size", "train.iterations", "train.eval_every")
# keys with values that the stacked step does not implement: such a run trains alone
TRAIN_ALONE_WHEN = {
    "loss.name": (lambda c: c.loss.name != "gdsoftmax", "the stacked kernel computes the gdsoftmax loss only"),
    "loss.beta": (lambda c: c.loss.beta.is_adaptive, "adaptive beta moves each run's controller and learning rate"),
    "loss.label_smoothing": (lambda c: c.loss.label_smoothing > 0, "the stacked kernel has no label smoothing"),
    "loss.backend": (lambda c: c.loss.backend in ("composite", "native"),
                     "stacked runs compute the loss with the fused kernel"),
    "data.augment": (lambda c: c.data.augment, "augmentation draws per run from its own generator inside the step"),
    "train.track_margin": (lambda c: c.train.track_margin, "margins are tracked for runs trained alone"),
    "train.precision": (lambda c: c.train.precision != "fp32", "the stacked step runs in float32"),
    "train.channels_last": (lambda c: c.train.channels_last, "stacked models are MLPs, without image layouts"),
    "train.compile": (lambda c: c.train.compile, "the stacked step is not compiled"),
    "data.tokenizer": (lambda c: task_name(c) != "images", "language models train alone"),
    "loss.fused_linear": (lambda c: c.loss.fused_linear, "the fused linear loss is for language models"),
    "model.name": (lambda c: is_import_path(c.model.name), "the user's own module trains alone"),
}


def reasons_to_train_alone(config: ExperimentConfig) -> list[str]:
    """Why ``config`` cannot be trained stacked (empty if it can, model aside: see is_stateless)."""
    reasons = [f"{key}: {why}" for key, (applies, why) in TRAIN_ALONE_WHEN.items() if applies(config)]
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        reasons.append("data-parallel (torchrun) runs train alone")
    return reasons


def stacking_key(config: ExperimentConfig) -> str | None:
    """Configs with equal keys can train as one stacked model; None if this one cannot stack."""
    if reasons_to_train_alone(config):
        return None
    shared = to_dict(config)
    for key in PER_RUN_KEYS:
        *parents, leaf = key.split(".")
        node = shared
        for part in parents:
            node = node[part]
        del node[leaf]
    shared.pop("sweep", None)
    shared.pop("tune", None)
    return json.dumps(shared, sort_keys=True, default=str)


def is_stateless(model: nn.Module) -> bool:
    """No buffers and no dropout: the training forward pass is a pure function of the parameters."""
    return not any(True for _ in model.buffers()) and not any(
        isinstance(m, nn.modules.dropout._DropoutNd) for m in model.modules())


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
    """One run's slice of the stacked optimizer state, in its torch.optim class's own format (AdamW's
    step count is a 0-d tensor that all runs share)."""
    state = {key: {name: value[index].clone() if torch.is_tensor(value) and value.dim() > 0 else value
                   for name, value in entry.items()} for key, entry in stacked["state"].items()}
    return {"state": state, "param_groups": copy.deepcopy(stacked["param_groups"])}


def _stack_optimizer_states(states: list[dict]) -> dict:
    first = states[0]
    stacked = {key: {name: torch.stack([s["state"][key][name] for s in states])
                     if torch.is_tensor(value) and value.dim() > 0 else value
                     for name, value in entry.items()} for key, entry in first["state"].items()}
    return {"state": stacked, "param_groups": copy.deepcopy(first["param_groups"])}


class StackedRuns:
    """The training loop's strategy for M runs with equal :func:`stacking_key` (see the module doc)."""

    def __init__(self, configs: list[ExperimentConfig], data: Dataset, device: torch.device, steps_per_epoch: int):
        first = configs[0]
        if len({stacking_key(c) for c in configs}) != 1 or stacking_key(first) is None:
            raise ValueError("stacked runs need configs that differ only in name, seed and loss.beta "
                             "(see gdsoftmax.engine.loop.stacked.stacking_key)")
        self.configs, self.device, self.steps_per_epoch = configs, device, steps_per_epoch
        self.eval_data = _Normalized.of(data.to(device))  # every split normalised once, not per batch and run
        models, self.objectives, self.generators = [], [], []
        for config in configs:  # each built from its own seed, exactly as a run alone builds it
            seed_everything(config.seed)
            model = build_model(config.model.name, data.image_shape, data.num_classes,
                                config.model.penultimate_dim or None, **config.model.options)
            self.objectives.append(build_objective(
                config.loss.name, config.loss.options, model, beta=config.loss.beta.schedule(steps_per_epoch),
                tau=config.loss.tau, label_smoothing=0.0, backend=config.loss.backend,
                numerics=config.loss.numerics))
            if not is_stateless(model):
                raise ValueError(f"model {config.model.name!r} has buffers or dropout, so it cannot be stacked")
            models.append(model.to(device))
            self.generators.append(torch.Generator().manual_seed(config.seed))
        self.params, _ = stack_module_state(models)  # {name: (M, ...)}, leaves that require grad
        base = copy.deepcopy(models[0]).to("meta")
        self.members = [_Member(base, self.params, m) for m in range(len(configs))]
        self.forward = _matmul_forward(base) or vmap(lambda p, x: functional_call(base, p, (x,)))
        # SGD and AdamW update elementwise, so one optimizer over the stacked tensors is one per run
        self.optimizer = build_optimizer(self.params.values(), first.train)
        self.schedule = LearningRateSchedule(self.optimizer, first, steps_per_epoch)  # no per-run factors here
        self._optimizer_state = None

    def load(self, checkpoints: list[Checkpoint]) -> None:
        with torch.no_grad():
            for name, p in self.params.items():
                p.copy_(torch.stack([c.model[name] for c in checkpoints]))
        self.optimizer.load_state_dict(_stack_optimizer_states([c.optimizer for c in checkpoints]))
        for c, generator in zip(checkpoints, self.generators, strict=True):
            restore_rng_state(c.rng, generator)
        self.schedule.load(checkpoints[0].schedule, checkpoints[0].step)

    def state(self, m: int) -> tuple[dict, dict, dict, dict, dict]:
        """Run m's model state, optimizer state (its torch.optim class's format), RNG states, (no) scaler
        and learning-rate schedule."""
        if self._optimizer_state is None:
            self._optimizer_state = self.optimizer.state_dict()
        return (self.members[m].state_dict_copy(), _member_optimizer_state(self._optimizer_state, m),
                capture_rng_state(self.generators[m]), {}, self.schedule.state_dict())

    def learning_rates(self) -> list[float]:
        return [self.schedule.used] * len(self.configs)

    def train_epoch(self, epoch: int) -> torch.Tensor:
        """One epoch of every run; per run the sums of loss, CE, correct and count, and the first step
        with a non-finite loss (-1 if none), (M, 5)."""
        data, first, runs = self.eval_data, self.configs[0], len(self.configs)
        self.schedule.apply()  # equal for all: adaptive beta, the one source of per-run factors, trains alone
        inputs, labels = data.train.images, data.train.labels  # (N, C, H, W) float, already normalised
        n_train, batch_size, clip, tau = len(inputs), first.train.batch_size, first.train.grad_clip, first.loss.tau
        grads_of = list(self.params.values())
        totals = torch.zeros(runs, 4, dtype=torch.float64, device=self.device)  # loss, ce, correct, count
        first_bad = torch.full((runs, 1), -1.0, dtype=torch.float64, device=self.device)  # non-finite step
        orders = torch.stack([torch.randperm(n_train, generator=g) for g in self.generators]).to(self.device)
        for i in range(self.steps_per_epoch):
            step = epoch * self.steps_per_epoch + i
            index = orders[:, i * batch_size : (i + 1) * batch_size].reshape(-1)  # (M*b,)
            x = inputs.index_select(0, index).view(runs, -1, *inputs.shape[1:])  # (M, b, C, H, W)
            y = labels.index_select(0, index).view(runs, -1)  # (M, b)
            beta = torch.tensor([objective.beta_at(step) for objective in self.objectives], device=self.device)
            logits = self.forward(self.params, x)  # (M, b, K)
            if first.loss.numerics == "stable":
                losses = stacked_beta_loss(logits, y, beta, tau)  # (M,)
            else:  # the paper's Eq. 25 literally (a reproduction option)
                losses = shifted_exp_loss(logits, y, beta, tau)  # (M,)
            self.optimizer.zero_grad(set_to_none=True)
            losses.sum().backward()
            if clip > 0:
                _clip_per_run([p.grad for p in grads_of], clip)
            self.optimizer.step()
            self.schedule.step()
            with torch.no_grad():
                count = y.shape[1]
                ce = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(runs, -1).sum(1)
                correct = (logits.argmax(2) == y).sum(1)
                totals += torch.stack([(losses * count).double(), ce.double(), correct.double(),
                                       torch.full_like(ce, count, dtype=torch.float64)], dim=1)
                first_bad = torch.where(~losses.isfinite()[:, None] & (first_bad < 0), float(step), first_bad)
        self._optimizer_state = None
        return torch.cat([totals, first_bad], dim=1)


def plan_stacks(pending: list[tuple[str, ExperimentConfig, Path]], image_shape_of, max_runs: int) -> list[list]:
    """Split a sweep's pending cells into groups that train together (a group of one trains alone).

    Cells stack when their :func:`stacking_key` is equal, their model is stateless and they can
    resume from one epoch: the same checkpoint epoch, or, for runs cut between the checkpoint
    writes of a stack, the epoch before (their previous checkpoint). A group holds at most
    ``max_runs`` cells (balanced when split). ``image_shape_of(config)`` gives (image shape,
    number of classes) of the config's data.
    """
    by_key: dict[str, list] = {}
    plan: list[list] = []
    for item in pending:
        key = _group_key(item[1], image_shape_of) if max_runs > 1 else None
        if key is None:
            plan.append([item])
        else:
            if key not in by_key:
                by_key[key] = []
                plan.append(by_key[key])
            by_key[key].append(item)
    aligned = [part for group in plan for part in _align_epochs(group)]
    split = []
    for group in aligned:  # into the fewest parts of at most max_runs, sizes differing by at most one
        parts = math.ceil(len(group) / max(1, max_runs))
        size, extra = divmod(len(group), parts)
        bounds = [i * size + min(i, extra) for i in range(parts + 1)]
        split += [group[a:b] for a, b in itertools.pairwise(bounds)]
    return split


def _align_epochs(group: list) -> list[list]:
    """One group if every run can resume from the group's lowest checkpoint epoch, else one per epoch."""
    if len(group) == 1:
        return [group]
    try:
        offered = [RunView(run_dir).checkpoint_epochs() for _, _, run_dir in group]
    except Exception:  # an unreadable checkpoint is reported when that run starts
        return [[item] for item in group]
    start = min(current for current, _ in offered)
    if all(start in (current, previous) for current, previous in offered):
        return [group]
    by_epoch: dict[int, list] = {}
    for item, (current, _) in zip(group, offered, strict=True):
        by_epoch.setdefault(current, []).append(item)
    return list(by_epoch.values())


def _group_key(config: ExperimentConfig, image_shape_of) -> str | None:
    key = stacking_key(config)
    if key is None:
        return None
    shape, classes = image_shape_of(config)
    with torch.device("meta"):  # shapes only, no memory
        model = build_model(config.model.name, shape, classes, config.model.penultimate_dim or None,
                            **config.model.options)
    return key if is_stateless(model) else None
