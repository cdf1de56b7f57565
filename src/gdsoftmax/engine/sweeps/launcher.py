"""Sweeps on a cluster launcher, and a grid's progress read from its run directories.

``gdsoftmax sweep CONFIG --launcher submitit`` submits the grid's unfinished cells through
submitit (an optional dependency): on Slurm one array task per group of cells that stack
(:mod:`gdsoftmax.engine.loop.stacked`), with the resources of the config's ``[launcher]`` table; a job
that reaches its time limit or is preempted is requeued, and the requeued job resumes from the
run directories' checkpoints. ``--cluster local`` runs the same jobs as processes on this machine
(``launcher.array_parallelism`` of them). ``--shard i/n`` stays the zero-dependency way.

``gdsoftmax sweep CONFIG --status`` reads every cell's state from its run directory alone (so it
works from any machine that sees the shared filesystem): done, running (a live process holds the
lock), failed (the error of the last attempt), interrupted (a checkpoint, nobody writing), pending,
or other config (the directory holds a run of another config: the sweep would refuse it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gdsoftmax.engine.config.schema import ExperimentConfig, config_to_toml, parse_config_text
from gdsoftmax.engine.loop.stacked import stacking_key
from gdsoftmax.engine.rundir.records import RunMismatchError
from gdsoftmax.engine.rundir.view import RunView
from gdsoftmax.engine.rundir.writer import RunWriter
from gdsoftmax.engine.sweeps.grid import MAX_CELLS, sweep_cells
from gdsoftmax.engine.sweeps.sweep import cell_directory, run_sweep, sweep_root

__all__ = ["CellStatus", "SweepJob", "format_status", "grid_status", "job_groups", "submit_sweep"]


@dataclass(frozen=True)
class CellStatus:
    cell: str
    state: str  # done, running, failed, interrupted, pending, other config
    epochs_done: int
    epochs: int
    detail: str = ""


def grid_status(config: ExperimentConfig, out_dir: str | Path, max_cells: int = MAX_CELLS) -> list[CellStatus]:
    """Each cell's state, from its run directory (see the module docstring)."""
    root, statuses = sweep_root(out_dir, config), []
    for cell in sweep_cells(config, max_cells):
        run, epochs = RunView(cell_directory(root, cell.name)), cell.config.train.epochs
        done = len(run.rows()) if (run.path / "metrics.jsonl").exists() else 0
        writer, failure, mismatch = run.writer(), run.failure(), run.mismatch(cell.config)
        if mismatch is not None:  # the same check the plain sweep makes: its runs are not this grid's
            state, detail = "other config", mismatch.split(": ", 1)[-1]
        elif run.is_finished and run.result()["epochs"] == epochs:
            result = run.result()  # a language model has no test split: its best validation accuracy
            state, detail = "done", (f"test accuracy {100 * result['test_acc']:.2f} %" if result["test_acc"] is not None
                                     else f"best validation accuracy {100 * result['best_val_acc']:.2f} %")
        elif writer is not None:
            state, detail = "running", f"process {writer['pid']} on {writer['host']}"
        elif failure is not None:
            state, detail = "failed", failure.strip().splitlines()[-1] if failure.strip() else ""
        elif done:
            state, detail = "interrupted", "resumes from its checkpoint when the sweep runs again"
        else:
            state, detail = "pending", ""
        statuses.append(CellStatus(cell.name, state, min(done, epochs), epochs, detail))
    return statuses


def format_status(statuses: list[CellStatus]) -> str:
    counts = {s: sum(c.state == s for c in statuses)
              for s in ("done", "running", "failed", "interrupted", "pending", "other config")}
    lines = [f"{'cell':<40} {'state':<12} {'epochs':>9}  detail"]
    lines += [f"{c.cell:<40} {c.state:<12} {c.epochs_done:>4}/{c.epochs:<4}  {c.detail}" for c in statuses]
    lines.append(", ".join(f"{n} {state}" for state, n in counts.items() if n) + f" of {len(statuses)} cells")
    return "\n".join(lines)


def job_groups(config: ExperimentConfig, out_dir: str | Path, max_stack: int = 32,
               max_cells: int = MAX_CELLS) -> list[list[str]]:
    """The unfinished cells in groups that stack (same stacking key, up to ``max_stack``), one job each."""
    by_key: dict[object, list[list[str]]] = {}
    alone: list[list[str]] = []
    for status, cell in zip(grid_status(config, out_dir, max_cells), sweep_cells(config, max_cells), strict=True):
        if status.state == "done":
            continue
        key = stacking_key(cell.config)
        if key is None or max_stack <= 1:
            alone.append([cell.name])
            continue
        groups = by_key.setdefault(key, [[]])
        if len(groups[-1]) == max_stack:
            groups.append([])
        groups[-1].append(cell.name)
    return [g for groups in by_key.values() for g in groups] + alone


class SweepJob:
    """What one submitted job runs: its cells of the sweep, through :func:`run_sweep`. submitit calls
    :meth:`checkpoint` on a time limit or preemption: the job is requeued with the same arguments,
    and the run directories make it resume where it stopped."""

    def __call__(self, config_text: str, out_dir: str, cells: list[str], max_stack: int) -> list[dict]:
        config = parse_config_text(config_text)
        try:
            return run_sweep(config, out_dir, only=set(cells), progress=False, max_stack=max_stack)
        except Exception as error:  # what --status shows; a time limit or a kill is not an Exception
            for name in cells:
                run = RunWriter(cell_directory(sweep_root(out_dir, config), name))
                if not run.is_finished:
                    run.record_failure(f"{type(error).__name__}: {error}")
            raise

    def checkpoint(self, *args):
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args)


def _submitit():
    try:
        import submitit
    except ImportError as error:
        raise ImportError("--launcher submitit needs the submitit package: pip install 'gdsoftmax[cluster]' "
                          "(or pip install submitit); --shard i/n needs nothing") from error
    return submitit


def submit_sweep(config: ExperimentConfig, out_dir: str | Path, *, cluster: str | None = None, max_stack: int = 32,
                 max_cells: int = MAX_CELLS) -> list:
    """Submit the unfinished cells; return the submitit jobs. ``cluster``: "slurm", "local", or None
    for submitit's choice (Slurm where ``sbatch`` exists, else local)."""
    submitit = _submitit()
    root, launcher = sweep_root(out_dir, config), config.launcher
    foreign = [s for s in grid_status(config, out_dir, max_cells) if s.state == "other config"]
    if foreign:
        raise RunMismatchError(f"{len(foreign)} cell(s) under {root} hold runs of another config, e.g. "
                               f"{foreign[0].cell}: {foreign[0].detail}")
    groups = job_groups(config, out_dir, max_stack, max_cells)
    if not groups:
        return []
    executor = submitit.AutoExecutor(folder=root / ".submitit" / "%j", cluster=cluster)
    executor.update_parameters(name=config.name, timeout_min=launcher.timeout_min, gpus_per_node=launcher.gpus_per_node,
                               cpus_per_task=launcher.cpus_per_task, slurm_array_parallelism=launcher.array_parallelism,
                               **({"mem_gb": launcher.mem_gb} if launcher.mem_gb else {}),
                               **({"slurm_partition": launcher.partition} if launcher.partition else {}))
    if executor.cluster in ("local", "debug"):  # no scheduler: spread the groups over the worker processes
        workers = min(launcher.array_parallelism, len(groups))
        groups = [[name for group in groups[w::workers] for name in group] for w in range(workers)]
    text = config_to_toml(config)
    with executor.batch():
        jobs = [executor.submit(SweepJob(), text, str(out_dir), group, max_stack) for group in groups]
    return jobs
