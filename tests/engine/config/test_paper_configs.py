"""The configs of the paper's experiments against the setups the paper states (ICLR version,
section 4, and its tables' columns), written out here by hand from the paper's text."""

from pathlib import Path

import pytest

from gdsoftmax.analysis.paper import paper_numbers, setting_key
from gdsoftmax.engine.config.schema import load_config
from gdsoftmax.engine.sweeps.grid import expand_sweep

CONFIGS = Path(__file__).resolve().parents[3] / "configs"
DEEP = {"epochs": 200, "batch_size": 100, "lr": 1e-2, "momentum": 0.9, "weight_decay": 1e-4,
        "lr_milestones": [0.5, 0.75], "lr_gamma": 0.1, "grad_clip": 3.0}
TINY = {"epochs": 200, "batch_size": 256, "lr": 0.05, "momentum": 0.9, "lr_milestones": [0.4, 0.8], "grad_clip": 3.0}
# config -> (stated training setup, data set, (version, table) whose columns the beta sweep must cover, models)
PAPER_SETUPS = {
    "cifar10_deep": (DEEP, "cifar10", ("ICLR 2024 submission", "Table 2"),
                     {"resnet18", "resnet35", "vgg16", "mobilenet_v1"}),
    "cifar100_deep": (DEEP, "cifar100", ("ICLR 2024 submission", "Table 2"),
                      {"resnet18", "resnet35", "vgg16", "mobilenet_v1"}),
    "svhn_deep": ({**DEEP, "epochs": 100}, "svhn", ("ICLR 2024 submission", "Table 2"),
                  {"resnet18", "resnet35", "vgg16", "mobilenet_v1"}),
    "cifar100_calibration": (DEEP, "cifar100", ("ICLR 2024 submission", "Table 4"), {"resnet18", "resnet34"}),
    "tiny_imagenet_resnet34": (TINY, "tiny_imagenet", ("ICLR 2024 submission", "Table 5"), {"resnet34"}),
    "tiny_imagenet_resnet50": (TINY, "tiny_imagenet", ("ICLR 2024 submission", "Table 6"), {"resnet50"}),
    "table2_cifar10": (DEEP, "cifar10", None, {"resnet18"}),
    # the MNIST paragraph (both versions): no lr schedule, no clipping, the whole training set counted
    "mnist_fcnn_paper": ({"epochs": 100, "batch_size": 100, "lr": 1e-3, "momentum": 0.9, "weight_decay": 1e-4,
                          "lr_milestones": [], "grad_clip": 0.0}, "mnist", ("arXiv v1", "Table 1"), {"fcnn"}),
    "cifar10_resnet18_gpu": ({**DEEP, "epochs": 30}, "cifar10", None, {"resnet18"}),
}


def _settings(cells) -> set[str]:
    out = set()
    for _, config in cells:
        beta = config.loss.beta.raw
        out.add(setting_key(beta) if isinstance(beta, int | float) else "warm-up")
    return out


@pytest.mark.parametrize("name", sorted(PAPER_SETUPS))
def test_config_follows_the_papers_stated_setup(name):
    stated, dataset, table, models = PAPER_SETUPS[name]
    config = load_config(CONFIGS / f"{name}.toml")
    assert config.data.dataset == dataset
    if name == "mnist_fcnn_paper":
        assert config.data.val_size == 0  # Table 1's columns sum to 60,000
    for key, value in stated.items():
        assert getattr(config.train, key) == value, f"{name}: train.{key}"
    cells = expand_sweep(config)
    assert {c.model.name for _, c in cells} == models
    if table is not None:  # every beta column of the table the config reproduces is in the sweep
        columns = {n.setting for n in paper_numbers() if (n.version, n.table) == table and n.dataset == dataset}
        assert {c for c in columns if c[0].isdigit() or c == "warm-up"} <= _settings(cells)


@pytest.mark.parametrize("name", ["cifar10_deep", "cifar100_deep", "svhn_deep", "table2_cifar10",
                                  "tiny_imagenet_resnet34", "cifar10_cpu", "cifar10_resnet18_gpu"])
def test_deep_warmups_go_from_0_1_to_1(name):
    """The ICLR version: "beta_initial and beta_end in the warm-up strategy are set to 0.1 and 1"; arXiv v1
    states 1 and 5 for CIFAR-100, which its config runs as well."""
    ramps = {(r["start"], r["end"]) for r in _ramps(name)}
    assert ramps == ({(0.1, 1.0), (1.0, 5.0)} if name == "cifar100_deep" else {(0.1, 1.0)})


def test_mnist_warmups_are_each_versions_range():
    """arXiv v1 (MNIST paragraph): 0.001 and 0.01; ICLR version (MNIST paragraph): 0.01 and 0.1."""
    assert {(r["start"], r["end"]) for r in _ramps("mnist_warmups")} == {(0.001, 0.01), (0.01, 0.1)}
    text = (CONFIGS / "mnist_warmups.toml").read_text()
    assert "arXiv v1" in text
    assert "ICLR version" in text


def _ramps(name: str) -> list[dict]:
    return [c.loss.beta.raw for _, c in expand_sweep(load_config(CONFIGS / f"{name}.toml"))
            if isinstance(c.loss.beta.raw, dict)]


def test_every_deviation_in_a_paper_config_is_commented():
    """A value that differs from the paper's carries a comment saying it is our choice."""
    for name in PAPER_SETUPS:
        text = (CONFIGS / f"{name}.toml").read_text()
        for line in text.splitlines():
            if line.startswith("val_size") and not line.startswith("val_size = 0 "):
                assert "our choice" in line, f"{name}: {line}"
    assert "our choice" in (CONFIGS / "cifar10_cpu.toml").read_text()
