"""What a valid config is: every check of a config's values, each failing with a :class:`ConfigError`
that names the key (``gdsoftmax.engine.config.schema`` runs them on every config it builds).

>>> is_run_name("beta=0.1~3fa2c1_seed=0"), is_run_name("../up"), is_run_name("..")
(True, False, False)
"""

from __future__ import annotations

import inspect
import math
import re

import torch

from gdsoftmax.baselines import LOGIT_LOSSES
from gdsoftmax.engine.data.images import DATASETS
from gdsoftmax.engine.data.text import TEXT_CORPORA, is_text_dataset
from gdsoftmax.engine.data.user import is_user_data
from gdsoftmax.engine.models.library import is_library_model, library_model_problem
from gdsoftmax.engine.models.registry import MODELS
from gdsoftmax.engine.recipe.objectives import check_options
from gdsoftmax.engine.recipe.optim import OPTIMIZERS, build_optimizer, optimizer_option_names
from gdsoftmax.engine.workspace.user_code import UserCodeError, is_import_path, resolve
from gdsoftmax.loss import BACKENDS
from gdsoftmax.loss.literal import NUMERICS

__all__ = ["INPUT_SCALINGS", "LOGGERS", "LR_SCHEDULES", "PRECISIONS", "RUN_NAME_RULE", "ConfigError", "check_values",
           "is_run_name"]

MAX_VOCABULARY = 2**20
FLOAT32_MAX = 3.4028234663852886e38  # parameters are float32: a larger rate overflows in the optimizer step
PRECISIONS = ("fp32", "bf16", "fp16", "auto")
LOGGERS = ("tensorboard", "mlflow", "wandb")  # the names of gdsoftmax.engine.tracking.registry.TRACKERS
LR_SCHEDULES = ("step", "cosine", "constant")
INPUT_SCALINGS = ("standardize", "unit", "raw")


# A run's name is its directory's name. "~" is the grid's suffix for cells whose values print alike
# (gdsoftmax.engine.sweeps.grid), so a cell's config.toml must read back with it.
RUN_NAME_RULE = "may hold only letters, digits and _ . = + - ~"


def is_run_name(name: str) -> bool:
    """Whether ``name`` can name a run directory: the one check of run and cell names.

    >>> is_run_name("beta=0.1~3fa2c1_seed=0"), is_run_name("../up"), is_run_name("..")
    (True, False, False)
    """
    return re.fullmatch(r"[A-Za-z0-9_.=+~-]+", name) is not None and name not in (".", "..")


class ConfigError(ValueError):
    """An invalid config: the message names the key."""


def _check(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{key} {message}")


def _check_optimizer(c) -> None:
    t = c.train
    _check(t.optimizer in OPTIMIZERS, "train.optimizer", f"must be one of {sorted(OPTIMIZERS)}, got {t.optimizer!r}")
    accepted = optimizer_option_names(t.optimizer)
    for key in t.optimizer_options:
        _check(key in accepted, f"train.optimizer_options.{key}",
               f"is not an argument of torch.optim.{OPTIMIZERS[t.optimizer].__name__} that a config sets; it takes "
               f"{accepted} (lr, weight_decay and momentum are train keys)")
    # lr, momentum and weight_decay are checked with the train keys; torch's own checks matter for the options
    # alone, and a config without any skips them (building an optimizer imports torch._dynamo: 3 s per process)
    if t.optimizer_options:
        try:  # the values too: torch checks some when the optimizer is built and others at its first step
            probe = torch.zeros(1, requires_grad=True)
            optimizer = build_optimizer([probe], t)
            if t.device in ("cpu", "auto") and not torch.cuda.is_available():  # as the run will
                probe.grad = torch.zeros(1)
                optimizer.step()
        except Exception as error:  # IndexError, AssertionError, RuntimeError ...: torch's own checks
            raise ConfigError(f"train.optimizer_options: torch.optim.{OPTIMIZERS[t.optimizer].__name__} refuses them "
                              f"({type(error).__name__}: {(str(error).splitlines() or ['no detail'])[0][:160]}); "
                              "correct or leave out the option it names") from error
    _check(t.lr_schedule in LR_SCHEDULES, "train.lr_schedule", f"must be one of {LR_SCHEDULES}, got {t.lr_schedule!r}")
    _check(0 <= t.min_lr < t.lr, "train.min_lr", f"must be in [0, train.lr = {t.lr:g})")
    _check(t.warmup_epochs >= 0 and t.warmup_steps >= 0, "train.warmup_epochs/warmup_steps", "must be >= 0")
    _check(t.warmup_epochs < t.epochs, "train.warmup_epochs", f"must be shorter than train.epochs = {t.epochs}")


def _check_model(c) -> None:
    name = c.model.name
    _check(c.model.penultimate_dim >= 0, "model.penultimate_dim", "must be >= 0")
    if is_import_path(name):  # the user's own module: its factory checks its own options when it is called
        _check(c.model.penultimate_dim == 0, "model.penultimate_dim", f"is for the built-in models; {name} is your "
               "own module: put a bottleneck layer in it and leave model.penultimate_dim at 0")
        _resolvable(name, "model.name")
        return
    if is_library_model(name):  # the library checks its own options when it builds the model
        problem = library_model_problem(name, c.model.options)
        _check(problem is None, "model.name", f"{name}: {problem}")
        return
    _check(name in MODELS, "model.name", f"must be one of {sorted(MODELS)}, timm:NAME / torchvision:NAME, or your "
           f"own module:callable, got {name!r}")
    accepted = [p for p in inspect.signature(MODELS[name]).parameters
                if p not in ("image_shape", "num_classes", "penultimate_dim")]
    for key, value in c.model.options.items():
        _check(key in accepted, f"model.options.{key}", f"is not an option of {name}; it takes {accepted}")
        sizes = value if isinstance(value, list) else [value]
        whole = [v for v in sizes if isinstance(v, int) and not isinstance(v, bool)]
        _check(all(v >= 1 for v in whole), f"model.options.{key}",
               f"is a size (widths, layers, heads): whole numbers >= 1, got {value!r}")


def _resolvable(name: str, key: str) -> None:
    try:
        resolve(name, key)
    except UserCodeError as error:
        raise ConfigError(str(error)) from error


def _check_dataset(name: str, text: bool) -> None:
    _check(name in DATASETS or text or is_user_data(name), "data.dataset",
           f"must be one of {sorted(DATASETS)}, a text corpus ({sorted(TEXT_CORPORA)}), text:PATH, or your own "
           f"images (npz:PATH, folder:PATH, module:callable), got {name!r}")
    if not is_user_data(name):
        return
    kind, _, where = name.partition(":")
    if kind == "npz":
        _check(where.endswith(".npz"), "data.dataset", f"= {name!r}: name an .npz file (npz:PATH.npz)")
    elif kind == "folder":
        _check(where.strip() != "", "data.dataset", "= 'folder:' needs the path of a folder holding train/ and test/")
    else:
        _resolvable(name, "data.dataset")


def _check_text(c) -> None:
    """A language-model run: the gpt model, steps instead of epochs, a window the model takes, losses on logits.
    Sets ``train.epochs`` to the number of evaluation rounds, ``iterations / eval_every``."""
    d, t, loss = c.data, c.train, c.loss
    _check(c.model.name == "gpt", "model.name", f"must be gpt for the text corpus {d.dataset!r}, got {c.model.name!r}")
    _check(t.iterations >= 1 and t.eval_every >= 1, "train.iterations",
           f"and train.eval_every must be >= 1 for a text corpus (training counts steps), got {t.iterations} and "
           f"{t.eval_every}")
    _check(t.iterations % t.eval_every == 0, "train.iterations",
           f"= {t.iterations} must be a multiple of train.eval_every = {t.eval_every}")
    t.epochs = t.iterations // t.eval_every
    _check(d.context >= 1, "data.context", f"must be >= 1, got {d.context}")
    window = c.model.options.get("block_size") or d.context
    _check(d.context <= window, "data.context", f"= {d.context} is longer than the model's window "
           f"model.options.block_size = {window}; lower data.context or raise block_size")
    _check(d.tokenizer.strip() != "", "data.tokenizer", 'must be "char", "bpe" or the path of a tokenizer.json')
    _check(d.tokenizer != "bpe" or d.vocab_size > 256, "data.vocab_size",
           f"must be > 256 for a byte-level BPE (its alphabet is the 256 bytes), got {d.vocab_size}")
    # the tokenizers library's trainer reserves memory by the size asked for: 1e9 aborts the process
    _check(d.tokenizer != "bpe" or d.vocab_size <= MAX_VOCABULARY, "data.vocab_size",
           f"must be at most {MAX_VOCABULARY:,} (the largest language-model vocabularies are about 256,000), got "
           f"{d.vocab_size:,}")
    _check(isinstance(d.val_size, float) and 0 < d.val_size < 1, "data.val_size",
           f"is the fraction of a corpus that validates, in (0, 1), got {d.val_size!r}")
    for key, bad in (("data.augment", d.augment), ("data.train_size", d.train_size), ("train.track_margin",
                     t.track_margin), ("train.channels_last", t.channels_last), ("model.penultimate_dim",
                     c.model.penultimate_dim)):
        _check(not bad, key, "is for image data sets; leave it at its default for a text corpus")
    _check(loss.name in ("gdsoftmax", *LOGIT_LOSSES), "loss.name",
           f"must be gdsoftmax or a loss on logits ({sorted(LOGIT_LOSSES)}) for a language model, got {loss.name!r}")
    if loss.fused_linear:
        _check(loss.name == "gdsoftmax" and loss.label_smoothing == 0 and loss.numerics == "stable"
               and not loss.beta.is_adaptive, "loss.fused_linear",
               "computes the plain gdsoftmax loss: no baseline, label smoothing, paper numerics or adaptive beta")
    if loss.beta.is_adaptive:
        _check(not loss.beta.raw.get("lr_compensation", False), "loss.beta.lr_compensation",
               "is not available for language models (it needs every validation logit); set it to false")


def check_values(c) -> None:
    """Raise ConfigError naming the first key of the config ``c`` (an ExperimentConfig) with a bad value."""
    text = is_text_dataset(c.data.dataset)
    _check_dataset(c.data.dataset, text)
    _check_model(c)
    _check_text(c) if text else _check(c.model.name != "gpt" and not c.loss.fused_linear, "model.name",
                                       "gpt (and loss.fused_linear) are for text corpora: set data.dataset to "
                                       f"one, e.g. tinyshakespeare (got {c.data.dataset!r})")
    _check(c.data.val_size >= 0, "data.val_size", "must be >= 0")
    _check(c.data.train_size >= 0 and not (isinstance(c.data.train_size, float) and c.data.train_size > 1),
           "data.train_size", "must be 0 (all), a count of samples, or a fraction in (0, 1]")
    _check(is_run_name(c.name), "name", f"{RUN_NAME_RULE} (it names the run directory), got {c.name!r}")
    _check(c.train.test_every >= 0, "train.test_every", "must be >= 0 (0: the test split after the last epoch only)")
    for key in ("epochs", "batch_size", "eval_batch_size"):
        _check(getattr(c.train, key) >= 1, f"train.{key}", "must be >= 1")
    for key in ("lr", "lr_gamma"):
        _check(math.isfinite(getattr(c.train, key)) and getattr(c.train, key) > 0, f"train.{key}", "must be > 0")
        _check(getattr(c.train, key) <= FLOAT32_MAX, f"train.{key}", "must fit in float32 (at most 3.4e38), "
               f"got {getattr(c.train, key)!r}")
    for key, value in (("seed", c.seed), ("data.split_seed", c.data.split_seed)):
        _check(0 <= value < 2**63, key, f"must lie in [0, 2**63) (torch's generators take 64-bit seeds), got {value}")
    for key in ("momentum", "weight_decay", "grad_clip"):
        _check(getattr(c.train, key) >= 0, f"train.{key}", "must be >= 0")
    _check(all(0 < m < 1 for m in c.train.lr_milestones), "train.lr_milestones",
           "are fractions of the epochs, each in (0, 1)")
    _check_optimizer(c)
    _check(all(e >= 1 for e in c.train.record_epochs), "train.record_epochs", "must be epoch numbers >= 1")
    _check(c.train.device == "auto" or re.fullmatch(r"(cpu|cuda|mps)(:\d+)?", c.train.device) is not None,
           "train.device", f"must be auto, cpu, cuda or cuda:N, got {c.train.device!r}")
    for key in ("cpus_per_task", "timeout_min", "array_parallelism"):
        _check(getattr(c.launcher, key) >= 1, f"launcher.{key}", "must be >= 1")
    for key in ("gpus_per_node", "mem_gb"):
        _check(getattr(c.launcher, key) >= 0, f"launcher.{key}", "must be >= 0")
    _check(c.data.input_scaling in INPUT_SCALINGS, "data.input_scaling",
           f"must be one of {INPUT_SCALINGS}, got {c.data.input_scaling!r}")
    for logger in c.train.log:
        _check(logger in LOGGERS, "train.log", f"entries must be among {LOGGERS}, got {logger!r}")
    _check(c.train.precision in PRECISIONS, "train.precision",
           f"must be one of {PRECISIONS}, got {c.train.precision!r}")
    _check(c.loss.tau > 0, "loss.tau", "must be > 0")
    _check(0 <= c.loss.label_smoothing <= 1, "loss.label_smoothing", "must be in [0, 1]")
    _check(c.loss.backend in BACKENDS, "loss.backend", f"must be one of {BACKENDS}, got {c.loss.backend!r}")
    _check(c.loss.numerics in NUMERICS, "loss.numerics", f"must be one of {NUMERICS}, got {c.loss.numerics!r}")
    if c.loss.numerics != "stable":
        _check(c.loss.name == "gdsoftmax" and c.loss.label_smoothing == 0 and not c.loss.beta.is_adaptive,
               "loss.numerics", "'paper-u70' needs the plain gdsoftmax loss of Eq. 25: no baseline loss, no "
               "label smoothing, no adaptive beta")
    if c.loss.beta.is_adaptive:
        _check(c.data.val_size > 0, "data.val_size", "must be > 0: adaptive beta measures calibration on it")
    if isinstance(c.loss.beta.raw, dict) and "epochs" in c.loss.beta.raw:  # steps are checked once the data is known
        unfinished = c.loss.beta.unfinished_warmup(c.train.epochs, 1000)
        _check(unfinished is None, "loss.beta", f"does not fit the run: {unfinished}; give the warm-up at most "
               f"train.epochs = {c.train.epochs} epochs, or raise train.epochs")
    try:
        check_options(c.loss.name, c.loss.options)
    except ValueError as error:
        raise ConfigError(f"loss.name/options: {error}") from error
