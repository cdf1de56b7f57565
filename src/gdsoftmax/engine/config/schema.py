"""Experiment configs: TOML files, validated into dataclasses, with dotted overrides and sweeps.

A config names everything a run needs; defaults are the ICLR version's deep-model recipe (SGD, momentum 0.9,
weight decay 1e-4, batch 100, lr / 10 at 50 % and 75 % of the epochs, gradient clipping at 3).

>>> config = parse_config({"name": "demo", "train": {"epochs": 3}, "loss": {"beta": 0.1}})
>>> config.train.epochs, config.train.momentum, config.loss.beta.constant
(3, 0.9, 0.1)
>>> parse_config({"train": {"epoch": 3}})
Traceback (most recent call last):
...
gdsoftmax.engine.config.checks.ConfigError: unknown key 'train.epoch'; valid keys in [train]: ...
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w

from gdsoftmax.engine.config.beta import BetaSetting
from gdsoftmax.engine.config.checks import (  # re-exported: the names a config's values are checked against
    INPUT_SCALINGS,
    LOGGERS,
    LR_SCHEDULES,
    PRECISIONS,
    RUN_NAME_RULE,
    ConfigError,
    check_values,
    is_run_name,
)
from gdsoftmax.engine.config.file import ConfigFileError, read_config_file

__all__ = ["INPUT_SCALINGS", "LOGGERS", "LR_SCHEDULES", "PRECISIONS", "RUN_NAME_RULE", "ConfigError",
           "ExperimentConfig", "apply_assignments", "config_to_toml", "is_run_name", "load_config", "parse_config",
           "parse_config_with", "to_dict"]


@dataclass
class DataConfig:
    dataset: str = "digits"  # the data set; "digits" is scikit-learn's, embedded (no download)
    data_dir: str = ""  # "" means $GDSOFTMAX_DATA_DIR, then ./data
    download: bool = True  # download through torchvision when the files are missing from data_dir
    val_size: int | float = 0.1  # samples, or a fraction of the training split
    split_seed: int = 0  # seeds the validation split and the training subset, apart from the run's seed
    train_size: int | float = 0  # 0: every training sample left after validation; else a class-stratified subset
    augment: bool = False  # random crop (padding 4) + horizontal flip
    input_scaling: str = "standardize"  # per channel with the training statistics; "unit": [0, 1]; "raw": [0, 255]
    # text corpora ("tinyshakespeare" or "text:PATH"; gdsoftmax.engine.data.text):
    context: int = 64  # text: the window length, in tokens, of training and evaluation
    tokenizer: str = "char"  # text: "char", "bpe" (trained on the training split) or a tokenizer.json path
    vocab_size: int = 8192  # text: the vocabulary size of a "bpe" tokenizer


@dataclass
class ModelConfig:
    name: str = "fcnn"  # the model; "fcnn" is the paper's MNIST network (50, 20); or "timm:NAME", "torchvision:NAME"
    penultimate_dim: int = 0  # 0: none; 2 gives the paper's 2-D feature plots
    options: dict = field(default_factory=dict)  # constructor options, e.g. {width = 32}; {stem = "cifar"} (library)


@dataclass
class LossConfig:
    name: str = "gdsoftmax"  # or a baseline: focal, flsd53, logitnorm, label_smoothing, cosface, arcface, ...
    options: dict = field(default_factory=dict)  # the baseline's options, e.g. {gamma = 2.0} for focal
    # a number, a schedule table (ramps may give "epochs" instead of "steps") or {kind = "pid", ...}
    beta: BetaSetting = field(default_factory=lambda: BetaSetting(1.0))
    tau: float = 1.0  # the temperature τ: logits are divided by it
    label_smoothing: float = 0.0  # as F.cross_entropy's; the loss is then J's expectation
    backend: str = "auto"  # the loss kernel: auto, composite, fused or native (gdsoftmax.loss.functional)
    # "stable" (logsumexp) or "paper-u70": the paper's Eq. 25 literally, e^{z-70} in float32, a
    # reproduction option (gdsoftmax.loss.literal); gdsoftmax loss only
    numerics: str = "stable"
    # language models: the output layer and the β-loss in one pass that never holds the (tokens x vocabulary)
    fused_linear: bool = False  # text: the fused linear β-loss (no logits held); the gdsoftmax loss only


@dataclass
class TrainConfig:
    epochs: int = 100  # training epochs; a larger value extends a finished run whose past lr stays the same
    # text runs count steps instead; an "epoch" of their rows and checkpoints is one round of eval_every steps
    iterations: int = 0  # text: training steps in all (epochs is set to iterations / eval_every)
    eval_every: int = 250  # text: steps between evaluations on the whole validation split
    batch_size: int = 100  # the global batch (split across processes under torchrun)
    optimizer: str = "sgd"  # from torch.optim: "sgd" or "adamw"
    optimizer_options: dict = field(default_factory=dict)  # its other arguments, e.g. {betas = [0.9, 0.99]}
    lr: float = 1e-3  # the initial (peak, after a warm-up) learning rate
    momentum: float = 0.9  # SGD's momentum (AdamW takes betas through optimizer_options)
    weight_decay: float = 1e-4  # SGD: L2 added to the gradient; AdamW: decoupled
    lr_schedule: str = "step"  # "step" (lr_milestones, lr_gamma), "cosine" (down to min_lr) or "constant"
    lr_milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])  # step: fractions of the epochs
    lr_gamma: float = 0.1  # step: the lr is multiplied by this at each milestone
    min_lr: float = 0.0  # cosine: the rate of the last step
    warmup_epochs: float = 0.0  # a linear warm-up from lr / (W + 1) to lr over this many epochs of steps
    warmup_steps: int = 0  # or over this many optimizer steps (wins over warmup_epochs)
    grad_clip: float = 3.0  # max gradient norm; 0 turns clipping off
    eval_batch_size: int = 1000  # batch size of evaluation (no gradients)
    # the test split is evaluated every test_every epochs and always after the last (0: after the last only; rows
    # of the epochs between hold NaN test_ce / test_acc); searches and long runs save a full test pass an epoch
    test_every: int = 1
    # epochs at which per-sample p_c and correctness are kept in samples.npz (the last epoch always is)
    record_epochs: list[int] = field(default_factory=lambda: [1, 2, 5, 10, 20, 50, 100, 200])
    device: str = "auto"  # "auto": cuda if available, else cpu
    track_margin: bool = False  # per epoch: normalized and smoothed margins on train (homogeneous models)
    # speed settings (gdsoftmax.engine.recipe.acceleration), each also runs on the CPU: "bf16" or "fp16" put the model
    # under autocast (the loss is always computed in float32); "auto" is bf16 where the device has bf16 units
    # (CUDA; a CPU with AMX or AVX512-BF16) and fp32 elsewhere; the run records the precision it used
    precision: str = "fp32"
    channels_last: bool = False  # NHWC memory format for convolutional models and their inputs
    compile: bool = False  # torch.compile the model (the loss runs eagerly: beta changes never recompile)
    deterministic: bool = False  # deterministic algorithms only (and no cuDNN autotuning)
    log: list[str] = field(default_factory=list)  # trackers fed from the metric rows: "tensorboard", "mlflow", "wandb"

    def schedule_text(self) -> str:
        """The learning-rate schedule in words, as reports print it.

        >>> TrainConfig(lr_schedule="cosine", min_lr=1e-4, warmup_steps=100).schedule_text()
        'cosine to 0.0001, after a linear warm-up of 100 steps'
        """
        if self.lr_schedule == "step":
            text = (f"÷{1 / self.lr_gamma:g} at {', '.join(f'{m * 100:g} %' for m in self.lr_milestones)} of the "
                    "epochs" if self.lr_milestones else "constant")
        else:
            text = f"cosine to {self.min_lr:g}" if self.lr_schedule == "cosine" else "constant"
        warm = (f"{self.warmup_steps} steps" if self.warmup_steps else
                f"{self.warmup_epochs:g} epochs" if self.warmup_epochs else "")
        return text + (f", after a linear warm-up of {warm}" if warm else "")

    def optimizer_text(self) -> str:
        """The optimizer in words: "SGD (momentum 0.9)" or "AdamW" with its options."""
        options = ", ".join(f"{k} {v}" for k, v in self.optimizer_options.items())
        if self.optimizer == "sgd":
            return f"SGD (momentum {self.momentum:g}{', ' + options if options else ''})"
        return "AdamW" + (f" ({options})" if options else "")


@dataclass
class LauncherConfig:
    """Per-job resources when a sweep is submitted to a cluster (``gdsoftmax sweep --launcher submitit``)."""

    partition: str = ""  # Slurm partition; "" for the cluster's default
    gpus_per_node: int = 0  # GPUs per job
    cpus_per_task: int = 2  # CPU cores per job
    mem_gb: float = 0.0  # 0: the cluster's default
    timeout_min: int = 60  # each job's time limit; a job that reaches it is requeued and resumes
    array_parallelism: int = 8  # Slurm: array tasks at once; the local executor: worker processes


@dataclass
class ExperimentConfig:
    name: str = "experiment"  # the run's name: its folder under --out (runs/NAME)
    seed: int = 0  # seeds the model's initialisation, the batch order and augmentation
    data: DataConfig = field(default_factory=DataConfig)  # the [data] table
    model: ModelConfig = field(default_factory=ModelConfig)  # the [model] table
    loss: LossConfig = field(default_factory=LossConfig)  # the [loss] table
    train: TrainConfig = field(default_factory=TrainConfig)  # the [train] table
    launcher: LauncherConfig = field(default_factory=LauncherConfig)  # the [launcher] table
    sweep: dict = field(default_factory=dict)  # [sweep]: dotted key -> list of values; a sweep trains every combination
    tune: dict = field(default_factory=dict)  # [tune]: an Optuna search (gdsoftmax tune; engine.sweeps.tuning)


def to_dict(config) -> dict:
    """The config as plain data (what is written to config.toml beside every result)."""
    if isinstance(config, BetaSetting):
        return copy.deepcopy(config.raw)
    if dataclasses.is_dataclass(config):
        return {f.name: to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, dict):
        return {k: to_dict(v) for k, v in config.items()}
    if isinstance(config, list):
        return [to_dict(v) for v in config]
    return copy.deepcopy(config)


def config_to_toml(config: ExperimentConfig) -> str:
    """The config as TOML text; ``load_config`` reads it back to an equal config."""
    return tomli_w.dumps(_toml_safe(to_dict(config)))


def _toml_safe(value):
    """TOML has no null; drop None values (all of ours have defaults)."""
    if isinstance(value, dict):
        return {k: _toml_safe(v) for k, v in value.items() if v is not None}
    return value


def load_config(path: str | Path, overrides: list[str] = (), *, without_sweep: bool = False) -> ExperimentConfig:
    """Read a TOML file, apply ``key=value`` overrides (TOML values), validate. ``without_sweep``: the [sweep]
    table is dropped before validation (``gdsoftmax train`` trains the config itself, never its grid's cells,
    so a cell it will not train cannot refuse it)."""
    try:
        raw = read_config_file(path)
    except ConfigFileError as error:
        raise ConfigError(str(error)) from error
    return parse_config_with(raw, overrides, without_sweep=without_sweep)


def parse_config_with(raw: dict, overrides: list[str] = (), *, without_sweep: bool = False) -> ExperimentConfig:
    """``raw`` (plain tables, as a TOML file reads) with ``key=value`` overrides applied, validated; ``raw`` is
    changed in place. ``without_sweep`` drops the [sweep] table first (see :func:`load_config`)."""
    for item in overrides:
        key, value = parse_override(item)
        if key.startswith("sweep."):  # sweep keys are dotted paths themselves: sweep.loss.beta=[...]
            raw.setdefault("sweep", {})[_unquoted(key.removeprefix("sweep."))] = value
        else:
            set_dotted(raw, key, value)
    if without_sweep:
        raw.pop("sweep", None)
    return parse_config(raw)


def _unquoted(key: str) -> str:
    """A sweep key as a config file writes it, quoted ("loss.beta") or not (loss.beta)."""
    if key[:1] not in ('"', "'"):
        return key
    try:
        (unquoted,) = tomllib.loads(f"{key} = 0")
    except (tomllib.TOMLDecodeError, ValueError) as error:
        raise ConfigError(f"sweep.{key}: not a quoted key; write sweep.\"loss.beta\"=[...] or sweep.loss.beta=[...]") \
            from error
    return unquoted


def parse_config_text(text: str) -> ExperimentConfig:
    """A config from TOML text (as :func:`config_to_toml` writes it), validated."""
    try:
        return parse_config(tomllib.loads(text))
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"the config text is not valid TOML: {error}") from error


def parse_override(item: str) -> tuple[str, object]:
    """``"train.epochs=5"`` -> ("train.epochs", 5); values are TOML, and a bare word is a string.

    A value that starts like a TOML list, table or string but does not parse is refused, naming the
    quotes it needs, rather than taken as a string (``train.log=[tensorboard]``).

    >>> parse_override("model.name=resnet9"), parse_override('train.log=["tensorboard"]')
    (('model.name', 'resnet9'), ('train.log', ['tensorboard']))
    """
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} must look like section.key=value, e.g. train.epochs=5")
    text = text.strip()
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError as error:
        if text[:1] in ("[", "{", '"', "'") or not re.fullmatch(r"[\w.:/+~-]*", text):
            raise ConfigError(f"--set {key.strip()}={text}: the value is not valid TOML ({error}); strings inside "
                              'lists and tables need quotes, e.g. train.log=["tensorboard"], and the shell needs '
                              "the whole item in single quotes") from error
        value = text
    return key.strip(), value


SECTIONS = ("data", "model", "loss", "train", "launcher")


def set_dotted(raw: dict, key: str, value) -> None:
    """Set ``raw[a][b][c] = value`` for ``key = "a.b.c"``. A table given for a whole section
    (``--set 'train={epochs=5}'``) is merged into it, key by key, rather than replacing it."""
    *parents, leaf = key.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"cannot set {key!r}: {part!r} is not a table")
    if not parents and leaf in SECTIONS:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} is a section: set its keys ({key}.KEY=VALUE) or give a table")
        for sub, sub_value in value.items():
            set_dotted(raw, f"{key}.{sub}", sub_value)
        return
    node[leaf] = value


def parse_config(raw: dict) -> ExperimentConfig:
    """Validate plain data into an :class:`ExperimentConfig`; errors name the key."""
    config = _build(ExperimentConfig, raw, "")
    check_values(config)
    for key, values in config.sweep.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"sweep.{key} must be a non-empty list of values")
        if key == "variants":
            for i, variant in enumerate(values):
                if not isinstance(variant, dict) or not set(variant) - {"label"}:
                    raise ConfigError(f"sweep.variants[{i}] must be a table of dotted keys, e.g. "
                                      '{ label = "focal", "loss.name" = "focal" }')
                if "label" in variant and not is_run_name(str(variant["label"])):
                    raise ConfigError(f"sweep.variants[{i}].label {RUN_NAME_RULE}, got {variant['label']!r}")
                _check_cell(config, variant, f"sweep.variants[{i}]")
            continue
        for value in values:  # every cell must be valid before any runs
            _check_cell(config, {key: value}, f"sweep.{key} value {json.dumps(value, default=str)}")
    return config


def _check_cell(config: ExperimentConfig, assignments: dict, where: str) -> None:
    """A cell's config is valid, or ConfigError naming the sweep value that makes it invalid."""
    try:
        check_values(_build(ExperimentConfig, apply_assignments(config, assignments), ""))
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from error


def apply_assignments(config: ExperimentConfig, assignments: dict) -> dict:
    """The raw config with dotted ``assignments`` applied and no sweep (a ``label`` key is skipped)."""
    cell = copy.deepcopy(to_dict(config))
    cell["sweep"] = {}
    for key, value in assignments.items():
        if key != "label":
            set_dotted(cell, key, value)
    return cell


def build_dataclass(cls, raw: dict):
    """Validate plain data into any config dataclass; unknown keys and wrong types name the key."""
    return _build(cls, raw, "")


def _build(cls, raw: dict, prefix: str):
    if not isinstance(raw, dict):
        raise ConfigError(f"[{prefix.rstrip('.')}] must be a table")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        section = f"[{prefix.rstrip('.')}]" if prefix else "the top level"
        raise ConfigError(f"unknown key {prefix + unknown[0]!r}; valid keys in {section}: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in raw.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = _build(hint, value, f"{prefix}{name}.")
        else:
            values[name] = _coerce(value, hint, prefix + name)
    return cls(**values)


def _coerce(value, hint, key):
    if hint is BetaSetting:
        try:
            return value if isinstance(value, BetaSetting) else BetaSetting(value)
        except (ValueError, TypeError) as error:  # TypeError: a schedule field of the wrong type
            raise ConfigError(f"{key}: {error}") from error
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for kind in allowed:
        origin = typing.get_origin(kind) or kind
        if origin is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if origin is bool and isinstance(value, bool):
            return value
        if origin is not bool and isinstance(value, origin) and not isinstance(value, bool):
            if origin is list:
                (item,) = typing.get_args(kind)
                return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
            return value
    names = " or ".join(getattr(k, "__name__", str(k)) for k in allowed)
    raise ConfigError(f"{key} must be {names}, got {value!r}")
