"""Engine options for accelerators, run on the CPU: precision, channels_last, compile, determinism,
no host synchronisation in the step loop, and augmentation drawn once per epoch."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import interrupted_at_epoch
from gdsoftmax.engine.config.schema import ConfigError, parse_config
from gdsoftmax.engine.data.images import Dataset, augment_batch, crop_and_flip, draw_augmentation
from gdsoftmax.engine.loop.distributed import Distributed
from gdsoftmax.engine.loop.one_model import OneModelRun
from gdsoftmax.engine.loop.trainer import run_experiment
from gdsoftmax.engine.tasks.images import ImageClassification
from gdsoftmax.loss import fused
from gdsoftmax.loss.fused import fused_target_loss
from synthetic import synthetic_images


def cnn_config(**train) -> dict:
    return {"name": "cnn", "data": {"augment": True}, "model": {"name": "small_cnn", "options": {"width": 8}},
            "loss": {"beta": {"kind": "linear", "start": 0.1, "end": 1.0, "epochs": 2}},
            "train": {"epochs": 2, "batch_size": 32, "lr": 0.05, "record_epochs": [1], "device": "cpu", **train}}


@pytest.fixture(scope="module")
def images() -> Dataset:
    return synthetic_images()


@pytest.fixture(autouse=True)
def restore_determinism():
    before = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(before)


def train(tmp_path, data, name, **options) -> tuple[dict, dict]:
    result = run_experiment(parse_config(cnn_config(**options)), tmp_path / name, data=data, progress=False)
    weights = torch.load(tmp_path / name / "checkpoint.pt", weights_only=True)["model"]
    return result, weights


def max_weight_difference(a: dict, b: dict) -> float:
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a if a[k].is_floating_point())


@pytest.mark.parametrize(("options", "tolerance"), [
    ({"channels_last": True}, 1e-4),      # the same arithmetic in another memory layout
    ({"precision": "bf16"}, 0.03),        # 8-bit mantissas in the forward: close, not equal
    ({"precision": "fp16"}, 0.02),        # with a gradient scaler
    ({"precision": "bf16", "channels_last": True}, 0.03),
])
def test_each_option_trains_close_to_float32(tmp_path, images, options, tolerance):
    reference, reference_weights = train(tmp_path, images, "fp32")
    result, weights = train(tmp_path, images, "option", **options)
    assert result["epochs"] == 2
    assert abs(result["train_ce"] - reference["train_ce"]) <= tolerance * max(1.0, reference["train_ce"])
    assert max_weight_difference(weights, reference_weights) <= 10 * tolerance
    assert result["test_acc"] > 0.5  # it learned (4 classes)
    rows = [json.loads(line) for line in (tmp_path / "option" / "metrics.jsonl").read_text().splitlines()]
    assert all(isinstance(row["train_loss"], float) for row in rows)  # the loss came back in float32


def test_float32_options_off_is_the_plain_model(tmp_path, images):
    """With every option off, the training model is the model itself (the engine's behaviour before)."""
    config = parse_config(cnn_config())
    run = OneModelRun(ImageClassification(), config, images, Distributed(0, 1, torch.device("cpu")), 8)
    assert run.trained is run.model
    assert run.members[0] is run.model
    assert run.scaler is None


def test_fp16_scaler_state_is_checkpointed_and_resumes_exactly(tmp_path, images):
    _, whole = train(tmp_path, images, "whole", precision="fp16")
    assert "scaler" in torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)
    with interrupted_at_epoch(2):
        train(tmp_path, images, "cut", precision="fp16")
    _, resumed = train(tmp_path, images, "cut", precision="fp16")
    assert max_weight_difference(whole, resumed) == 0.0


def test_deterministic_runs_are_bit_identical(tmp_path, images):
    _, a = train(tmp_path, images, "a", deterministic=True)
    assert torch.are_deterministic_algorithms_enabled()
    _, b = train(tmp_path, images, "b", deterministic=True)
    assert max_weight_difference(a, b) == 0.0


def test_compile_builds_a_fixed_number_of_graphs_whatever_beta_does(tmp_path, images):
    """The loss runs outside the compiled model, so a warm-up that changes beta every step (here
    16 steps, 16 values) recompiles nothing; the graphs are those of the model's batch shapes."""
    eager, eager_weights = train(tmp_path, images, "eager")
    compiled, weights = train(tmp_path, images, "compiled", compile=True)
    assert eager["compiled_graphs"] is None
    assert 1 <= compiled["compiled_graphs"] <= 2  # the full batch, and at most one for a last partial batch
    betas = [json.loads(line)["beta"] for line in (tmp_path / "compiled" / "metrics.jsonl").read_text().splitlines()]
    assert len(set(betas)) == 2  # beta moved (the rows show each epoch's last value)
    assert max_weight_difference(weights, eager_weights) <= 1e-3  # inductor may fuse and reorder float ops


def test_the_step_loop_reads_nothing_back_from_the_device(images):
    """On the meta device every tensor is a shape without data, so any host synchronisation in
    the step loop (.item(), float(), bool(), .tolist(), a copy to the CPU) raises; a whole epoch,
    with augmentation, batch norm and the beta-loss, runs there without one."""
    with pytest.raises(RuntimeError):
        float(torch.ones((), device="meta"))  # the detector works
    config = parse_config(cnn_config())
    run = OneModelRun(ImageClassification(), config, images, Distributed(0, 1, torch.device("meta")), 8)
    totals = run.train_epoch(0)
    assert totals.device.type == "meta"
    assert totals.shape == (1, 5)  # sums of loss, CE, correct, count; the first non-finite step


@pytest.mark.parametrize("all_ignored", [False, True])
def test_the_fused_mean_on_a_device_keeps_its_scale_there_and_equals_the_cpu_path(all_ignored):
    logits, target = torch.randn(6, 5), torch.tensor([0, 1, 2, 3, 4, 0])
    weight = torch.zeros(6) if all_ignored else torch.rand(6)
    a, b = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    cpu_path = fused_target_loss(a, target, weight, 0.3, 1.5, "mean")
    device_path = fused._mean_on_device(b, target, weight, 0.3, 1.5, inplace=False)
    cpu_path.backward()
    device_path.backward()
    torch.testing.assert_close(device_path, cpu_path, equal_nan=True)
    torch.testing.assert_close(b.grad, a.grad)
    assert not b.grad.isnan().any()
    meta = fused_target_loss(logits.to("meta").requires_grad_(), target.to("meta"), weight.to("meta"), 0.3, 1.5,
                             "mean")
    assert meta.shape == cpu_path.shape  # no value read back: it runs on the meta device


def test_an_epochs_augmentation_drawn_at_once_equals_batch_by_batch():
    images = torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8)
    sizes = [4, 4, 2]
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    one_by_one = torch.cat([augment_batch(images[i : i + s], g1) for i, s in zip((0, 4, 8), sizes, strict=True)])
    dy, dx, flip = draw_augmentation(g2, sizes)
    assert torch.equal(crop_and_flip(images, dy, dx, flip), one_by_one)
    assert torch.equal(g1.get_state(), g2.get_state())


@pytest.mark.parametrize(("train", "message"), [
    ({"precision": "fp8"}, "train.precision must be one of"),
    ({"compile": "yes"}, "train.compile must be bool"),
])
def test_bad_option_values_name_the_key(train, message):
    with pytest.raises(ConfigError, match=message):
        parse_config({"train": train})


def test_adaptive_beta_keeps_working_under_compile_and_bf16(tmp_path, images):
    """The controller moves beta between epochs (with lr compensation) while the model stays compiled once."""
    spec = cnn_config(precision="bf16", compile=True, epochs=3)
    spec["loss"]["beta"] = {"kind": "pid", "start": 1.0, "kp": 5.0, "ki": 0.5, "lr_compensation": True}
    result = run_experiment(parse_config(spec), tmp_path / "pid", data=images, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "pid" / "metrics.jsonl").read_text().splitlines()]
    assert len({row["beta"] for row in rows}) == 3  # a new beta each epoch
    assert len({row["lr"] for row in rows}) > 1  # and the compensated learning rate with it
    assert result["compiled_graphs"] == 1


@pytest.mark.slow  # a benchmark's code path: bench/ runs it for real
def test_the_gpu_throughput_benchmark_runs_on_the_cpu(tmp_path):
    script = Path(__file__).resolve().parents[3] / "bench" / "bench_gpu_engine.py"
    out = subprocess.run([sys.executable, str(script), "--quick", "--device", "cpu", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    table = (tmp_path / "gpu_engine_cpu_smoke.md").read_text()
    assert "plain PyTorch loop" in table
    assert "bf16 + channels_last + compile" in table


@pytest.mark.slow  # a benchmark's code path: bench/ runs it for real
def test_the_cifar_epoch_benchmark_runs(tmp_path):
    script = Path(__file__).resolve().parents[3] / "bench" / "bench_cifar_epoch.py"
    out = subprocess.run([sys.executable, str(script), "--quick", "--out", str(tmp_path)], capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    text = (tmp_path / "cifar_epoch_smoke.md").read_text()
    assert "Epoch, before and after" in text
    assert "batch norm folded" in text


AVX2_ONLY = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}  # dispatch as on an AVX2-only CPU


def test_auto_precision_is_bf16_only_where_the_cpu_has_bf16_units():
    code = ("import warnings, torch\nfrom gdsoftmax.engine.recipe.acceleration import resolve_precision\n"
            "cpu = torch.device('cpu')\nwith warnings.catch_warnings(record=True) as caught:\n"
            "    warnings.simplefilter('always')\n"
            "    print(*(resolve_precision(p, cpu) for p in ('auto', 'bf16', 'bf16')))\n"
            "print(len(caught), caught[0].message if caught else '')\n")
    avx2 = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**__import__("os").environ, **AVX2_ONLY})
    assert avx2.returncode == 0, avx2.stderr
    chosen, warned = avx2.stdout.splitlines()
    assert chosen == "fp32 bf16 bf16"  # auto falls back; an explicit bf16 is kept, and warned about once
    assert warned.startswith("1 ")
    assert "AVX2 kernels (no AVX-512), so bf16 is emulated" in warned


def test_auto_precision_follows_the_detection(monkeypatch):
    import gdsoftmax.engine.recipe.acceleration as acceleration

    cpu = torch.device("cpu")
    monkeypatch.setattr(acceleration, "no_native_bf16", lambda device: None)
    assert acceleration.resolve_precision("auto", cpu) == "bf16"
    monkeypatch.setattr(acceleration, "no_native_bf16", lambda device: "no bf16 units")
    assert acceleration.resolve_precision("auto", cpu) == "fp32"
    assert acceleration.resolve_precision("fp16", cpu) == "fp16"


def test_a_run_records_its_precision_and_a_resumed_run_keeps_it(tmp_path, images, monkeypatch):
    import gdsoftmax.engine.recipe.acceleration as acceleration

    monkeypatch.setattr(acceleration, "no_native_bf16", lambda device: None)  # as on a CPU with AMX
    with interrupted_at_epoch(2):
        train(tmp_path, images, "cut", precision="auto")
    assert json.loads((tmp_path / "cut" / "run.json").read_text())["precision"] == "bf16"
    monkeypatch.setattr(acceleration, "no_native_bf16", lambda device: "no bf16 units")  # resumed elsewhere
    result, _ = train(tmp_path, images, "cut", precision="auto")
    assert result["precision"] == "bf16"  # the run trains on as it started
    fresh, _ = train(tmp_path, images, "fresh", precision="auto")
    assert fresh["precision"] == "fp32"


def test_the_test_split_is_evaluated_only_when_asked(tmp_path):
    from gdsoftmax.engine.rundir.view import RunView

    config = parse_config({"name": "t", "data": {"val_size": 200}, "model": {"options": {"hidden": [16]}},
                           "train": {"epochs": 5, "lr": 0.05, "record_epochs": [5], "test_every": 2}})
    run_experiment(config, tmp_path / "every2", progress=False)
    rows = RunView(tmp_path / "every2").rows()
    assert [math.isnan(r.test_acc) for r in rows] == [True, False, True, False, False]  # 2, 4 and the last
    config.train.test_every = 0
    run_experiment(config, tmp_path / "every2", progress=False)  # not part of the run's identity
    run_experiment(config, tmp_path / "last", progress=False)
    last = RunView(tmp_path / "last").rows()
    assert [math.isnan(r.test_acc) for r in last] == [True, True, True, True, False]
    assert [r.train_loss for r in last] == [r.train_loss for r in rows]  # what is trained does not change
    assert RunView(tmp_path / "last").result()["test_acc"] == rows[-1].test_acc
