"""``gdsoftmax tune``: search β (and any other key) on Optuna, as the config's [tune] table says
(:mod:`gdsoftmax.engine.sweeps.tuning`), then write the study's report (:mod:`gdsoftmax.studies.tune_report`)."""

from __future__ import annotations

import importlib.util
import sys

__all__ = ["add_tune_command", "run_tune_command"]


def add_tune_command(commands, add_run_options) -> None:
    tune = commands.add_parser(
        "tune", help="search beta (and other keys) on Optuna; every trial an ordinary run directory",
        description="Search the config's [tune.space] on Optuna for its [tune] objective, computed on the "
                    "validation split: val_nll, val_ece (among trials whose val accuracy is within "
                    "max_accuracy_drop of beta = 1's) or val_accuracy. Each trial trains in OUT/NAME/trial-NNNN "
                    "and is pruned by the median rule on its epoch rows. The study lives in an RDB storage "
                    "(SQLite in OUT/NAME by default, any URL in tune.storage): rerun the command to resume it, "
                    "or start more workers on the same out folder to share it. Writes trials.csv, best.toml "
                    "(gdsoftmax train runs it as it is) and report.md.")
    add_run_options(tune)
    tune.add_argument("--worker", type=int, default=0, metavar="I",
                      help="this worker's index when several share the study (offsets the sampler's seed)")


def run_tune_command(args, command: str) -> int:
    if importlib.util.find_spec("optuna") is None:
        print("gdsoftmax tune: error: this command needs Optuna; install it with: pip install 'gdsoftmax[tune]'",
              file=sys.stderr)
        return 2
    from gdsoftmax import api
    from gdsoftmax.engine.config.schema import ConfigError
    from gdsoftmax.engine.data.images import DataNotFoundError
    from gdsoftmax.engine.rundir.records import RunLockedError, RunMismatchError
    from gdsoftmax.studies.tune_report import confirmation_commands

    try:
        config = api.config(args.config, args.overrides)
        report = api.tune(config, args.out, data_dir=args.data_dir, worker=args.worker,
                          progress=not args.no_progress, restart=args.restart, command=command)
    except (ConfigError, DataNotFoundError, RunLockedError, RunMismatchError, ValueError) as error:
        print(f"gdsoftmax tune: error: {error}", file=sys.stderr)
        return 2
    root = report.parent
    print(f"wrote {root / 'trials.csv'}, {root / 'best.toml'} and {report}")
    commands = confirmation_commands(root)
    if not commands:
        print(f"next: read {report}: no trial beat β = 1 on the validation split, so the search gives no reason to "
              "change β")
        return 0
    print(f"next: read {report} (its verdict first); one seed per trial finds a candidate, and only a seeded "
          "comparison with β = 1 decides:")
    for line in commands:
        print(f"  {line}")
    return 0
