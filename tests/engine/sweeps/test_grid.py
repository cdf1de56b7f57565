"""Sweep grids: cell names are injective, repeats are refused, summaries count true n per setting."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gdsoftmax.engine.config.schema import ConfigError, parse_config
from gdsoftmax.engine.sweeps.grid import grid_size, sweep_cells
from gdsoftmax.engine.sweeps.sweep import format_summary, run_sweep

positive = st.floats(min_value=1e-6, max_value=1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=150, deadline=None)
@given(st.lists(positive, min_size=1, max_size=6, unique=True), st.booleans())
def test_names_are_injective_for_floats_that_print_alike(betas, add_neighbours):
    if add_neighbours:  # the next float up prints like its neighbour under %g
        betas = list(dict.fromkeys(betas + [math.nextafter(b, math.inf) for b in betas]))
    cells = sweep_cells(parse_config({"sweep": {"loss.beta": betas, "seed": [0, 1]}}))
    names = [c.name for c in cells]
    assert len(set(names)) == len(names) == 2 * len(betas)
    assert len({c.setting for c in cells}) == len(betas)


@pytest.mark.parametrize("field", ["start", "end", "epochs", "kind"])
def test_schedules_that_differ_in_any_one_field_get_different_names(field):
    base = {"kind": "linear", "start": 0.01, "end": 0.1, "epochs": 10}
    other = {**base, field: {"start": 0.02, "end": 0.2, "epochs": 20, "kind": "cosine"}[field]}
    names = [c.name for c in sweep_cells(parse_config({"sweep": {"loss.beta": [base, other]}}))]
    assert len(set(names)) == 2


def test_keys_that_end_in_the_same_word_are_named_in_full():
    grid = parse_config({"sweep": {"model.name": ["fcnn"], "loss.name": ["gdsoftmax", "focal"]}})
    assert [c.name for c in sweep_cells(grid)] == ["model.name=fcnn_loss.name=gdsoftmax",
                                                   "model.name=fcnn_loss.name=focal"]


@pytest.mark.parametrize(("sweep", "message"), [
    ({"seed": [0, 0]}, "sweep.seed lists 0 twice"),
    ({"loss.beta": [1, 1.0]}, "are the same run"),
    ({"variants": [{"label": "a", "loss.beta": 0.1}, {"label": "a", "loss.beta": 0.2}]}, "2 variants are named 'a'"),
    ({"variants": [{"loss.beta": 0.5}], "loss.beta": [0.1, 0.1 + 1e-12]}, None),  # distinct: allowed
])
def test_repeated_cells_are_refused(sweep, message):
    config = parse_config({"sweep": sweep})
    if message is None:
        assert len({c.name for c in sweep_cells(config)}) == grid_size(config)
        return
    with pytest.raises(ConfigError, match=message):
        sweep_cells(config)


def test_a_huge_grid_says_its_size_and_needs_asking_for():
    config = parse_config({"sweep": {"seed": list(range(11)), "loss.beta": [0.1 * (i + 1) for i in range(10)],
                                     "train.lr": [0.01 * (i + 1) for i in range(10)]}})
    assert grid_size(config) == 1100
    with pytest.raises(ConfigError, match=r"1100 cells, more than 1000; .*--max-cells 1100"):
        sweep_cells(config)


def tiny_grid(**sweep) -> dict:
    return {"name": "grid", "train": {"epochs": 1, "record_epochs": []}, "sweep": sweep}


def test_the_summary_groups_by_every_swept_key_but_the_seed(tmp_path):
    results = run_sweep(parse_config(tiny_grid(**{"data.split_seed": [0, 1], "seed": [0, 1]})), tmp_path,
                        progress=False, log=lambda *_: None)
    assert [r["setting"] for r in results] == ["split_seed=0", "split_seed=0", "split_seed=1", "split_seed=1"]
    table = format_summary(results)
    assert [line.split()[:2] for line in table.splitlines() if line.startswith("split_seed=") and "±" in line] \
        == [["split_seed=0", "2"], ["split_seed=1", "2"]]


def test_a_shard_of_the_grid_is_marked_incomplete(tmp_path):
    results = run_sweep(parse_config(tiny_grid(**{"loss.beta": [0.1, 5.0], "seed": [0, 1]})), tmp_path,
                        shard=(0, 2), progress=False, log=lambda *_: None)
    assert [r["cell"] for r in results] == ["beta=0.1_seed=0", "beta=5_seed=0"]
    assert "incomplete: 1 of 2 runs" in format_summary(results)


def test_a_constant_beta_spelled_as_a_table_is_the_same_cell():
    table = {"kind": "constant", "value": 0.1}
    assert parse_config({"loss": {"beta": table}}).loss.beta.constant == 0.1  # reports see a constant β
    with pytest.raises(ConfigError, match="are the same run"):
        sweep_cells(parse_config({"name": "g", "sweep": {"loss.beta": [0.1, table]}}))


def test_appending_a_value_that_prints_alike_keeps_every_existing_cell_name():
    from gdsoftmax.engine.config.schema import parse_config
    from gdsoftmax.engine.sweeps.grid import sweep_cells

    warm = {"kind": "linear", "start": 0.01, "end": 0.1, "epochs": 4}
    before = parse_config({"train": {"epochs": 4}, "sweep": {"loss.beta": [0.1, warm], "seed": [0]}})
    after = parse_config({"train": {"epochs": 4}, "sweep": {"loss.beta": [0.1, warm, 0.1000001, {**warm, "epochs": 2}],
                                                            "seed": [0]}})
    old = [c.name for c in sweep_cells(before)]
    new = [c.name for c in sweep_cells(after)]
    assert new[:2] == old == ["beta=0.1_seed=0", "beta=linear0.01-0.1_seed=0"]
    assert new[2].startswith("beta=0.1~")
    assert new[3].startswith("beta=linear0.01-0.1~")
    assert len(set(new)) == 4
