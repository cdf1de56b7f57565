"""Stacked sweep training (gdsoftmax.engine.loop.stacked): the loss, grouping, and equality with separate runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import gdsoftmax.engine.loop.stacked as stacking
import gdsoftmax.engine.rundir.writer as stacking_rundir
from gdsoftmax.engine.config.schema import parse_config
from gdsoftmax.engine.data.images import load_dataset
from gdsoftmax.engine.loop.stacked import is_stateless, plan_stacks, stacking_key
from gdsoftmax.engine.loop.trainer import run_experiment, train
from gdsoftmax.engine.models.registry import build_model
from gdsoftmax.engine.rundir.checkpoint import load_checkpoint
from gdsoftmax.engine.rundir.writer import RunWriter
from gdsoftmax.engine.sweeps.sweep import format_summary, run_sweep
from gdsoftmax.loss.fused import stacked_beta_loss
from reference import reference_loss


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", None, download=False, val_size=0.1, split_seed=0)


def config(name: str, beta, seed: int = 0, epochs: int = 3, **train) -> object:
    return parse_config({"name": name, "seed": seed, "loss": {"beta": beta},
                         "train": {"epochs": epochs, "lr": 0.05, "batch_size": 64, "record_epochs": [1, 2],
                                   **train}})


# ---- the stacked loss ---------------------------------------------------------------------------


@pytest.mark.parametrize(("runs", "batch", "classes"), [(1, 1, 2), (3, 7, 5), (4, 16, 10)])
@pytest.mark.parametrize("tau", [1.0, 0.5])
def test_stacked_loss_matches_the_float64_reference(runs, batch, classes, tau):
    generator = torch.Generator().manual_seed(runs * 100 + batch)
    logits = (4 * torch.randn(runs, batch, classes, generator=generator, dtype=torch.float64)).requires_grad_()
    target = torch.randint(classes, (runs, batch), generator=generator)
    beta = torch.tensor([1e-3, 1.0, 10.0, 0.3], dtype=torch.float64)[:runs]
    upstream = torch.rand(runs, generator=generator, dtype=torch.float64)
    losses = stacked_beta_loss(logits, target, beta, tau)
    (losses * upstream).sum().backward()

    expected_grad = torch.zeros_like(logits)
    for m in range(runs):  # the reference works from the formula, one run at a time
        expected, grad = reference_loss(logits[m], target[m], float(beta[m]), tau=tau, reduction="mean")
        assert losses[m].item() == pytest.approx(expected.item(), rel=1e-12, abs=1e-12)
        expected_grad[m] = grad * upstream[m]
    torch.testing.assert_close(logits.grad, expected_grad, rtol=1e-10, atol=1e-12)


def test_stacked_loss_refuses_bad_shapes_and_double_backward():
    z, t = torch.randn(2, 3, 4), torch.randint(4, (2, 3))
    with pytest.raises(ValueError, match=r"logits \(M, B, K\)"):
        stacked_beta_loss(z, t, torch.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="target"):
        stacked_beta_loss(z, t[:, :2], torch.tensor([1.0, 2.0]))
    z.requires_grad_()
    loss = stacked_beta_loss(z, t, torch.tensor([1.0, 2.0])).sum()
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(loss, z, create_graph=True)[0].sum().backward()


def test_clipping_per_run_equals_clip_grad_norm_on_each_run():
    generator = torch.Generator().manual_seed(0)
    scales = torch.tensor([0.01, 1.0, 30.0])  # below, around and far above max_norm
    grads = [torch.randn(3, *shape, generator=generator) * scales.view(3, *[1] * len(shape))
             for shape in [(5, 7), (5,), (2, 5)]]
    expected = []
    for m in range(3):
        params = [torch.zeros_like(g[m], requires_grad=True) for g in grads]
        for p, g in zip(params, grads, strict=True):
            p.grad = g[m].clone()
        torch.nn.utils.clip_grad_norm_(params, 3.0)
        expected.append([p.grad for p in params])
    stacking._clip_per_run(grads, 3.0)
    for m in range(3):
        for g, e in zip(grads, expected[m], strict=True):
            torch.testing.assert_close(g[m], e, rtol=1e-6, atol=0)
    assert torch.linalg.vector_norm(torch.cat([g[2].flatten() for g in grads])) == pytest.approx(3.0, rel=1e-5)


# ---- which cells stack ---------------------------------------------------------------------------


def test_cells_that_differ_in_beta_and_seed_share_a_key():
    base = stacking_key(config("a", 0.1))
    assert base is not None
    assert stacking_key(config("b", {"kind": "linear", "start": 0.01, "end": 0.1, "epochs": 3}, seed=4)) == base
    assert stacking_key(config("c", 0.1, lr=0.1)) != base


@pytest.mark.parametrize("change", [
    {"loss": {"beta": {"kind": "pid"}}}, {"loss": {"name": "focal"}}, {"loss": {"label_smoothing": 0.1}},
    {"data": {"augment": True}}, {"train": {"track_margin": True}},
])
def test_cells_that_cannot_stack_have_no_key(change):
    assert stacking_key(parse_config({"name": "x", **change})) is None


def test_stateless_models():
    assert is_stateless(build_model("fcnn", (1, 8, 8), 10))
    assert is_stateless(build_model("homogeneous_mlp", (1, 8, 8), 10))
    assert not is_stateless(build_model("small_cnn", (3, 32, 32), 10))  # BatchNorm buffers


def test_plan_groups_stackable_cells_in_balanced_parts(tmp_path):
    shape_of = lambda c: ((1, 8, 8), 10)  # noqa: E731
    cells = [(f"b{i}", config(f"b{i}", 0.1 * (i + 1), seed=i), tmp_path / f"b{i}") for i in range(7)]
    odd = ("pid", parse_config({"name": "pid", "loss": {"beta": {"kind": "pid"}}}), tmp_path / "pid")
    cnn = ("cnn", parse_config({"name": "cnn", "model": {"name": "small_cnn"}}), tmp_path / "cnn")
    plan = plan_stacks([*cells[:3], odd, *cells[3:], cnn], shape_of, max_runs=3)
    assert [[name for name, _, _ in group] for group in plan] == [
        ["b0", "b1", "b2"], ["b3", "b4"], ["b5", "b6"], ["pid"], ["cnn"]]
    assert [len(g) for g in plan_stacks(cells, shape_of, max_runs=1)] == [1] * 7


# ---- stacked runs equal separate runs -------------------------------------------------------------


def read_rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def assert_same_run(a: Path, b: Path, tolerance: float) -> None:
    rows_a, rows_b = read_rows(a), read_rows(b)
    assert [r["epoch"] for r in rows_a] == [r["epoch"] for r in rows_b]
    for ra, rb in zip(rows_a, rows_b, strict=True):
        assert set(ra) == set(rb)
        for key in ra:
            if key != "wall_time":
                assert ra[key] == pytest.approx(rb[key], rel=tolerance, abs=tolerance), key
    state_a, state_b = load_checkpoint(a / "checkpoint.pt"), load_checkpoint(b / "checkpoint.pt")
    for name, weight in state_a["model"].items():
        torch.testing.assert_close(weight, state_b["model"][name], rtol=tolerance, atol=tolerance)
    for key, entry in state_a["optimizer"]["state"].items():  # SGD's momentum buffer, AdamW's moments and step
        other = state_b["optimizer"]["state"][key]
        assert set(entry) == set(other)
        for name, value in entry.items():
            torch.testing.assert_close(value, other[name], rtol=tolerance, atol=tolerance)
    for name in ("samples.npz", "predictions.npz"):
        with np.load(a / name) as fa, np.load(b / name) as fb:
            assert sorted(fa.files) == sorted(fb.files)
            for key in fa.files:  # p_true is stored as float16: allow one float16 step near 1
                slack = 1e-3 if fa[key].dtype == np.float16 else tolerance * 10
                np.testing.assert_allclose(fa[key].astype(np.float64), fb[key].astype(np.float64),
                                           rtol=tolerance, atol=slack)


CELLS = [("small", 0.01, 0), ("warm", {"kind": "linear", "start": 0.01, "end": 1.0, "epochs": 3}, 1), ("big", 5.0, 2)]


@pytest.mark.parametrize(("name", "options"), [("fcnn", {}), ("fcnn", {"penultimate_dim": 2}),
                                               ("homogeneous_mlp", {})])
def test_matmul_forward_equals_each_models_own_forward(name, options):
    models = []
    for seed in range(3):
        torch.manual_seed(seed)
        models.append(build_model(name, (1, 8, 8), 10, options.get("penultimate_dim")))
    params, _ = torch.func.stack_module_state(models)
    x = torch.randn(3, 5, 1, 8, 8)
    forward = stacking._matmul_forward(models[0])
    assert forward is not None
    expected = torch.stack([models[m](x[m]) for m in range(3)])
    torch.testing.assert_close(forward(params, x), expected, rtol=1e-6, atol=1e-6)
    assert stacking._matmul_forward(build_model("small_cnn", (3, 32, 32), 10)) is None


ADAMW_COSINE = {"optimizer": "adamw", "lr": 3e-3, "weight_decay": 0.05, "lr_schedule": "cosine", "min_lr": 3e-4,
                "warmup_steps": 10, "optimizer_options": {"betas": [0.9, 0.99]}}


@pytest.mark.parametrize(("path", "recipe"), [("matmul", {}), ("vmap", {}), ("matmul", ADAMW_COSINE)])
def test_stacked_runs_equal_separate_runs(tmp_path, digits, path, recipe, monkeypatch):
    # beta = 0.01 at lr 0.05 makes gradient clipping act, which is where rounding could creep in
    if path == "vmap":  # the generic path that models other than the MLPs take
        monkeypatch.setattr(stacking, "_matmul_forward", lambda model: None)
    configs = [config(name, beta, seed, **recipe) for name, beta, seed in CELLS]
    separate = [run_experiment(c, tmp_path / "separate" / c.name, data=digits, progress=False) for c in configs]
    stacked = train(configs, [tmp_path / "stacked" / c.name for c in configs], data=digits, progress=False)
    for c, a, b in zip(configs, separate, stacked, strict=True):
        assert_same_run(tmp_path / "separate" / c.name, tmp_path / "stacked" / c.name, tolerance=1e-5)
        assert a.keys() == b.keys()
        assert (a["stacked_runs"], b["stacked_runs"]) == (1, len(configs))
        for key in a.keys() - {"wall_time", "stacked_runs"}:
            assert a[key] == (pytest.approx(b[key], rel=1e-5, abs=1e-5) if isinstance(a[key], float) else b[key])


def cut_stack(tmp_path, digits, configs, monkeypatch, after_writes: int, where: str = "cut") -> None:
    """Run the stack and kill it (an exception) inside its ``after_writes``-th file write of one
    epoch's appends: each run's append writes its row, moves the checkpoint aside, writes the new one."""
    real_append, real_save = RunWriter.append, stacking_rundir.save_checkpoint
    writes = []

    def count(*_):
        writes.append(1)
        if len(writes) == after_writes:
            raise KeyboardInterrupt

    def append(run, row, checkpoint, **kwargs):
        if row.epoch == 3:
            count()
        real_append(run, row, checkpoint, **kwargs)

    def save(path, state):
        if state["epoch"] == 3:
            count()
        real_save(path, state)

    monkeypatch.setattr(RunWriter, "append", append)
    monkeypatch.setattr(stacking_rundir, "save_checkpoint", save)
    with pytest.raises(KeyboardInterrupt):
        train(configs, [tmp_path / where / c.name for c in configs], data=digits, progress=False)
    monkeypatch.setattr(RunWriter, "append", real_append)
    monkeypatch.setattr(stacking_rundir, "save_checkpoint", real_save)


# make test cuts after the first write, mid-stack and in the AdamW recipe; the other cuts are slow (make test-all)
@pytest.mark.parametrize(("after_writes", "recipe"), [
    *(pytest.param(n, {}, marks=[pytest.mark.slow] if n in (2, 3, 5, 6) else []) for n in range(1, 7)),
    (4, ADAMW_COSINE)])
def test_a_stack_cut_between_any_two_checkpoint_writes_resumes_bit_identical(tmp_path, digits, monkeypatch,
                                                                           after_writes, recipe):
    """3 runs write 6 files in epoch 3 (a row and a checkpoint each): cut before each of them, the
    stack resumes as one from the last epoch every run has, and ends exactly as if never cut."""
    configs = [config(name, beta, seed, epochs=4, **recipe) for name, beta, seed in CELLS]
    train(configs, [tmp_path / "whole" / c.name for c in configs], data=digits, progress=False)
    cut_stack(tmp_path, digits, configs, monkeypatch, after_writes)
    plan = plan_stacks([(c.name, c, tmp_path / "cut" / c.name) for c in configs],
                       lambda c: (digits.image_shape, digits.num_classes), max_runs=8)
    assert [[c.name for _, c, _ in group] for group in plan] == [["small", "warm", "big"]]
    train(configs, [tmp_path / "cut" / c.name for c in configs], data=digits, progress=False)
    for c in configs:
        assert_same_run(tmp_path / "whole" / c.name, tmp_path / "cut" / c.name, tolerance=0.0)


def test_an_interrupted_stacked_run_also_resumes_alone(tmp_path, digits, monkeypatch):
    configs = [config(name, beta, seed, epochs=4) for name, beta, seed in CELLS]
    train(configs, [tmp_path / "whole" / c.name for c in configs], data=digits, progress=False)
    cut_stack(tmp_path, digits, configs, monkeypatch, after_writes=3)  # epoch 3 of "small" done, then cut
    assert [r["epoch"] for r in read_rows(tmp_path / "cut" / "small")] == [1, 2, 3]
    assert [r["epoch"] for r in read_rows(tmp_path / "cut" / "warm")] == [1, 2]
    run_experiment(configs[0], tmp_path / "cut" / "small", data=digits, progress=False)  # from its epoch 3
    train(configs[1:], [tmp_path / "cut" / c.name for c in configs[1:]], data=digits, progress=False)
    for c in configs:  # a stack of two sums its batched products in another order than one of three
        assert_same_run(tmp_path / "whole" / c.name, tmp_path / "cut" / c.name, tolerance=1e-6)


def test_sweep_stacks_cells_automatically(tmp_path):
    spec = {"name": "grid", "train": {"epochs": 2, "lr": 0.05, "record_epochs": [1]},
            "sweep": {"loss.beta": [0.1, 1.0, {"kind": "linear", "start": 0.1, "end": 1.0, "epochs": 2}],
                      "seed": [0, 1]}}
    messages = []
    stacked = run_sweep(parse_config(spec), tmp_path / "stacked", progress=False, log=messages.append)
    assert any("6 runs as one stacked model" in m for m in messages)
    alone = run_sweep(parse_config(spec), tmp_path / "alone", progress=False, log=messages.append, max_stack=1)
    assert [r["cell"] for r in stacked] == [r["cell"] for r in alone]
    assert {r["stacked_runs"] for r in stacked} == {6}
    assert {r["stacked_runs"] for r in alone} == {1}
    assert "the time is the group's" in format_summary(stacked)
    assert "the time is the group's" not in format_summary(alone)
    for a, b in zip(stacked, alone, strict=True):
        assert a["test_acc"] == pytest.approx(b["test_acc"], abs=1e-6)
        assert a["train_ce"] == pytest.approx(b["train_ce"], rel=1e-5)
    again = run_sweep(parse_config(spec), tmp_path / "stacked", progress=False, log=messages.append)
    assert again == stacked  # finished cells are read back, not rerun
