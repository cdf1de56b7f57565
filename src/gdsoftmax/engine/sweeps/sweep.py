"""Sweeps: every cell of a config's grid in its own run directory, resumable and shardable."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from pathlib import Path

from tqdm.auto import tqdm

from gdsoftmax.engine.config.schema import ExperimentConfig
from gdsoftmax.engine.loop.stacked import plan_stacks
from gdsoftmax.engine.loop.trainer import TrainingDiverged, load_run_data, train
from gdsoftmax.engine.rundir.records import CONFIG_FILE
from gdsoftmax.engine.rundir.writer import RunWriter
from gdsoftmax.engine.sweeps.grid import MAX_CELLS, sweep_cells
from gdsoftmax.engine.tracking.labels import run_labels
from gdsoftmax.engine.tracking.registry import finish_sweep_trackers

__all__ = ["SweepIncomplete", "format_summary", "holds_cells", "parse_shard", "run_sweep", "sweep_root"]


class SweepIncomplete(RuntimeError):
    """Some cells' training diverged; the others finished. ``results`` holds the finished cells'
    results, ``failures`` maps each failed cell to its error (also in its run directory)."""

    def __init__(self, results: list[dict], failures: dict[str, str]):
        self.results, self.failures = results, failures
        names = ", ".join(failures)
        super().__init__(f"{len(failures)} cell(s) stopped and the other cells went on: {names}. "
                         f"{next(iter(failures.values()))} (gdsoftmax sweep --status shows each cell's state)")


def parse_shard(text: str) -> tuple[int, int]:
    """``"1/4"`` -> (1, 4): this machine runs cells 1, 5, 9, ... of the grid (0-based)."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard takes i/n with whole numbers, e.g. 0/2, got {text!r}") from None
    if not 0 <= index < count:
        raise ValueError(f"--shard i/n needs 0 <= i < n, got {text!r}")
    return index, count


def sweep_root(out_dir: str | Path, config: ExperimentConfig) -> Path:
    return Path(out_dir) / config.name


def cell_directory(root: Path, name: str) -> Path:
    """``root / name``, refusing any name that would land outside ``root``."""
    path = (root / name).resolve()
    if path.parent != root.resolve():
        raise ValueError(f"cell name {name!r} would write outside the sweep directory {root}")
    return path


def run_sweep(config: ExperimentConfig, out_dir: str | Path, *, shard: tuple[int, int] = (0, 1),
              progress: bool = True, log=print, max_stack: int = 32, restart: bool = False,
              max_cells: int = MAX_CELLS, only: set[str] | None = None) -> list[dict]:
    """Run (or resume) this shard's cells; finished cells are read back, not rerun. Each result has
    its ``cell`` name, its ``setting`` (the cells that differ only in seed) and ``of``, how many cells
    of that setting the whole grid has.

    Cells that differ only in beta and seed train together as one stacked model, up to
    ``max_stack`` at a time (:mod:`gdsoftmax.engine.loop.stacked`; 1 turns this off); the others one by one.
    ``only`` restricts the sweep to the cells of those names (a launcher's job runs its share so).
    """
    root = sweep_root(out_dir, config)
    if (root / CONFIG_FILE).exists():
        raise ValueError(f"{root} holds a single run (gdsoftmax train), not a sweep's cells; sweep into another "
                         "--out, or move that run away")
    grid = sweep_cells(config, max_cells)
    per_setting = Counter(c.setting for c in grid)
    cells = [(c.name, c.config) for c in grid if only is None or c.name in only][shard[0] :: shard[1]]
    settings = {c.name: c.setting for c in grid}
    labels = {c.name: run_labels(c.config, config, c.setting) for c in grid}
    log(f"{config.name}: {len(cells)} cell(s) in {root}" + (f" (shard {shard[0]}/{shard[1]})" if shard[1] > 1 else ""))
    datasets: dict[tuple, object] = {}  # load each data set once for all cells that share it

    def data_for(cell: ExperimentConfig):
        d = cell.data
        key = (d.dataset, d.data_dir, d.val_size, d.split_seed, d.train_size, d.context, d.tokenizer, d.vocab_size)
        if key not in datasets:
            datasets[key] = load_run_data(cell)
        return datasets[key]

    finished, pending = {}, []
    for name, cell in cells:
        run_dir, cell.name = cell_directory(root, name), name
        run = RunWriter(run_dir)
        if not restart:  # with --restart, the trainer discards each run under its lock
            run.claim(cell)  # a cell directory of another config is refused, naming the keys
        result = run.result() if run.is_finished and not restart else None
        if result is not None and result["epochs"] == cell.train.epochs:
            finished[name] = result
        else:
            pending.append((name, cell, run_dir))
    groups = plan_stacks(pending, lambda c: (data_for(c).image_shape, data_for(c).num_classes), max_stack)
    trained, failures = _train_groups(groups, data_for, progress=progress, log=log, restart=restart,
                                      tracking=(labels, Path(out_dir)))
    finished.update(trained)
    results = [{"cell": name, "setting": settings[name], "of": per_setting[settings[name]], **finished[name]}
               for name, _ in cells if name in finished]
    if failures:
        raise SweepIncomplete(results, failures)
    if len(results) == len(grid):  # the whole grid, not one shard's part of it
        finish_sweep_trackers(config, out_dir)
    return results


def holds_cells(folder: Path) -> bool:
    """Whether ``folder`` holds a sweep's cells (run directories one level down)."""
    return folder.is_dir() and any((cell / CONFIG_FILE).exists() for cell in folder.iterdir() if cell.is_dir())


def _train_groups(groups, data_for, *, progress: bool, log, restart: bool = False,
                  tracking=({}, None)) -> tuple[dict, dict[str, str]]:
    """Train each group (stacked when it has several cells): the results of the cells that finished,
    and the error of each that did not. A run whose loss diverges is noted in its run directory; the
    other runs of its stack resume from their last checkpoint without it, and the rest go on."""
    finished, failures = {}, {}
    bar = tqdm(total=sum(len(g) for g in groups), desc="sweep", disable=not progress, unit="run")
    for group in groups:
        size = len(group)
        while group:
            if len(group) > 1:
                log(f"training {len(group)} runs as one stacked model: {', '.join(name for name, _, _ in group)}")
            try:
                summaries = train([c for _, c, _ in group], [d for _, _, d in group], data=data_for(group[0][1]),
                                  progress=progress, restart=restart, out_dir=tracking[1],
                                  labels=[tracking[0].get(name) for name, _, _ in group])
            except TrainingDiverged as error:  # a diverged run is a result; the rest of the grid still runs
                group = _note_diverged(group, error, failures, log)
                restart = False  # the survivors' checkpoints are this sweep's own: resume them
            else:
                finished.update({name: s for (name, _, _), s in zip(group, summaries, strict=True)})
                group = []
        bar.update(size)
    bar.close()
    return finished, failures


def _note_diverged(group: list, error: TrainingDiverged, failures: dict[str, str], log) -> list:
    """Mark the runs ``error`` names as failed (all of the group if it names none); the runs left to train."""
    diverged = set(error.runs) or {name for name, _, _ in group}
    for name, _, run_dir in group:
        if name in diverged:
            RunWriter(run_dir).record_failure(f"{type(error).__name__}: {error}")
            failures[name] = str(error)
    rest = [cell for cell in group if cell[0] not in diverged]
    log(f"stopped {len(group) - len(rest)} run(s), going on with the others: {error}")
    return rest


def _finite(value) -> bool:
    return value is not None and math.isfinite(value)


def _pct(value) -> str:
    return "    -" if value is None else f"{100 * value:6.2f}"


def format_summary(results: list[dict]) -> str:
    """A per-run table, and mean +- std over seeds for each setting swept over several seeds; n is
    the number of runs averaged, and a setting with fewer than the grid holds is marked incomplete."""
    lines = [f"{'run':<40} {'epochs':>6} {'train CE':>9} {'train %':>8} {'best val %':>10} {'test %':>7} "
             f"{'time s':>7}"]
    for r in results:
        stacked = r.get("stacked_runs", 1) > 1
        lines.append(f"{r['cell']:<40} {r['epochs']:>6} {r['train_ce']:>9.4f} {_pct(r['train_acc']):>8} "
                     f"{_pct(r['best_val_acc']):>10} {_pct(r['test_acc']):>7} {r['wall_time'] or 0:>7.1f}"
                     + ("*" if stacked else ""))
    if any(r.get("stacked_runs", 1) > 1 for r in results):
        lines.append("* trained as one stacked model with the other cells of its group: the time is the group's")
    groups: dict[str, list[dict]] = {}
    for r in results:
        groups.setdefault(r.get("setting", r["cell"]), []).append(r)
    # a language model has no test split: its settings are summarised by their best validation accuracy
    split = "test" if all(_finite(r["test_acc"]) for r in results) else "best val"
    if any(len(g) > 1 or g[0].get("of", 1) > 1 for g in groups.values()):
        lines += ["", f"{'setting (over seeds)':<40} {'n':>3} {split + ' % mean ± std':>19} {'train CE mean':>14}"]
        for setting, group in groups.items():
            accs = [100 * r["test_acc" if split == "test" else "best_val_acc"] for r in group]
            spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
            ce = statistics.fmean(r["train_ce"] for r in group)
            missing = group[0].get("of", len(group)) - len(group)
            lines.append(f"{setting:<40} {len(group):>3} {statistics.fmean(accs):>11.2f} ± {spread:<5.2f} {ce:>14.4f}"
                         + (f"  incomplete: {len(group)} of {group[0]['of']} runs" if missing > 0 else ""))
    return "\n".join(lines)
