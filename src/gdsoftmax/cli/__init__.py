"""The ``gdsoftmax`` command line.

Each command imports its layer when it runs (the engine, labs and reports need
``gdsoftmax[experiments]``), so ``gdsoftmax --help``, ``theory`` and ``build-native`` work with
the loss alone installed.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import shlex
import shutil
import sys
from pathlib import Path

from gdsoftmax.cli.reports import REPORT_COMMANDS, add_report_commands, run_report_command
from gdsoftmax.cli.tune import add_tune_command, run_tune_command

DESCRIPTION = """\
gdsoftmax: the probability-dependent gradient-decay softmax loss and its experiments.

  J = -log( e^{z_c/tau} / (sum_{i!=c} e^{z_i/tau} + beta * e^{z_c/tau}) )

beta = 1 is cross-entropy; beta < 1 keeps the gradient large until the true class is
confident (a large margin); beta > 1 decays it early (less confident outputs). What that did
to accuracy and calibration on real data: docs/results/summary.md.
"""

EPILOG = """\
examples:
  gdsoftmax sweep configs/digits_sweep.toml                 # the embedded default, about 15 seconds
  gdsoftmax sweep configs/mnist_fcnn.toml --data-dir ../shared/datasets
  gdsoftmax train configs/mnist_fcnn.toml --set loss.beta=0.1 --set train.epochs=5
  gdsoftmax sweep configs/cifar10_deep.toml --shard 0/4     # one machine's quarter of the grid
  gdsoftmax sweep configs/cifar10_deep.toml --launcher submitit   # a Slurm job array ([launcher] resources)
  gdsoftmax sweep configs/cifar10_deep.toml --status        # done / running / failed / pending per cell
  torchrun --nproc_per_node 2 -m gdsoftmax train configs/cifar10_small_cnn.toml   # data parallel
  gdsoftmax report runs/mnist_fcnn                          # report.md + figures for a finished sweep
  gdsoftmax table1 runs/mnist_fcnn_paper --factors runs/mnist_table1_factors   # the Table 1 study
  gdsoftmax study tau runs/fashion_mnist_tau --out docs/results/fashion_mnist_tau   # a claim's own study
  gdsoftmax tune configs/digits_timm_tune.toml              # search beta on Optuna (its [tune] table)
  gdsoftmax compare predictions/                            # any loop's SETTING/SEED.npz: the verdict on beta
  gdsoftmax claims                                          # the ledger: every claim and what tested it
  gdsoftmax lab peeled configs/lab_peeled.toml              # layer-peeled model: collapse and margins
  gdsoftmax study lm runs/shakespeare_char_beta --out docs/results/shakespeare_char   # a language model's study
  gdsoftmax theory                                          # the gradient-analysis table

--set takes TOML values: numbers, strings, lists ([0, 1, 2]) and inline tables
({kind="linear", start=0.01, end=0.1, epochs=10}). Run directories are resumable: rerunning
a command continues where it stopped, and finished sweep cells are skipped. A run directory
belongs to one config: rerunning with another config is refused (naming the keys that differ)
unless --restart discards the old run. A larger train.epochs extends a finished run when its
learning rate over the epochs already trained stays the same (a constant rate, or step milestones
that fall at the same epochs; a cosine spans the whole run and is refused, naming why). One process
at a time writes a run directory.
"""


def _version() -> str:
    try:
        return importlib.metadata.version("gdsoftmax")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gdsoftmax", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"gdsoftmax {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add_run_options(sub):
        sub.add_argument("config", help="experiment config (TOML); see configs/")
        sub.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                         help="override a config value, e.g. --set train.epochs=5 (repeatable)")
        sub.add_argument("--out", default="runs", help="parent folder of run directories (default: runs)")
        sub.add_argument("--data-dir", help="folder holding the data sets (default: $GDSOFTMAX_DATA_DIR or ./data)")
        sub.add_argument("--no-progress", action="store_true", help="no progress bars")
        sub.add_argument("--restart", action="store_true",
                         help="discard the run(s) already in the output directory and start anew (without it, a "
                              "run directory of another config is refused, and one of this config resumes)")

    train = commands.add_parser("train", help="train one config (its [sweep] table is ignored)",
                                description="Train one run in OUT/NAME; rerun to resume it.")
    add_run_options(train)
    sweep = commands.add_parser("sweep", help="run every cell of a config's [sweep] grid",
                                description="Run the grid of a config's [sweep] table, one run directory per "
                                            "cell under OUT/NAME/. Finished cells are skipped; an interrupted "
                                            "cell resumes from its last checkpoint.")
    add_run_options(sweep)
    sweep.add_argument("--shard", default="0/1", metavar="I/N", help="run only cells I, I+N, I+2N, ... (0-based)")
    sweep.add_argument("--max-cells", type=int, default=1000, metavar="N",
                       help="refuse a grid of more than N cells (default 1000), so a typo cannot start a huge sweep")
    sweep.add_argument("--max-stack", type=int, default=32, metavar="M",
                       help="train up to M cells that differ only in beta and seed as one stacked model "
                            "(their parameters stacked; equal to separate runs up to float rounding, about "
                            "3.5x faster for the MNIST FCNN). 1 trains every cell alone. Default: 32")
    sweep.add_argument("--status", action="store_true",
                       help="only show each cell's state (done, running, failed, interrupted, pending) from its "
                            "run directory, which works from any machine that sees the output folder")
    sweep.add_argument("--launcher", choices=("none", "submitit"), default="none",
                       help="submitit: submit the unfinished cells as jobs (one per group of cells that stack) "
                            "with the config's [launcher] resources; requeued on timeout or preemption, they resume "
                            "(needs pip install submitit). none (default): train here")
    sweep.add_argument("--cluster", choices=("auto", "slurm", "local"), default="auto",
                       help="where --launcher submitit sends jobs: slurm, local processes, or auto (slurm where "
                            "sbatch exists)")
    sweep.add_argument("--wait", action="store_true", help="with --launcher: wait for the jobs, then summarise")
    add_tune_command(commands, add_run_options)
    add_report_commands(commands)
    lab = commands.add_parser("lab", help="labs: the layer-peeled model, normalized margins, or a language model "
                                          "in the Hugging Face Trainer",
                              description="peeled: simulate free features and a classifier under CE, beta-softmax "
                                          "and ASM, and track neural collapse and margins. margin: train a "
                                          "bias-free (homogeneous) MLP and track its normalized margin. hf-lm: "
                                          "train a text config (e.g. configs/shakespeare_char.toml) with "
                                          "transformers.Trainer and the beta-loss, a GPT-2 of the same size built "
                                          "from a config, and evaluate it as the engine does.")
    lab.add_argument("which", choices=["peeled", "margin", "hf-lm"], help="which lab")
    lab.add_argument("config", help="lab config (TOML), e.g. configs/lab_peeled.toml")
    lab.add_argument("--out", default="runs", help="parent folder of the results (default: runs)")
    lab.add_argument("--data-dir", help="folder holding the data sets (margin and hf-lm labs)")
    lab.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="hf-lm: override a config key, e.g. --set seed=1 --set loss.beta=0.5")
    lab.add_argument("--fused", action="store_true", help="hf-lm: train on the fused linear beta-loss")
    lab.add_argument("--no-progress", action="store_true", help="no progress bars")
    commands.add_parser("theory", help="print loss, gradient magnitude and inflection points for several beta")
    commands.add_parser("build-native", help="compile the optional C++ loss operator for small CPU batches",
                        description="Compile gdsoftmax's C++ beta-loss operator (about 30 s; needs a C++ "
                                    "compiler and ninja). Once built, gradient_decay_loss uses it for small "
                                    "CPU batches, where it is faster than F.cross_entropy; the build is "
                                    "cached, and GDSOFTMAX_NATIVE=0 turns it off.")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a command. User errors end in one line and exit 2; an internal error keeps its traceback
    and says that it is one."""
    try:
        return _main(argv)
    except KeyboardInterrupt:  # every epoch is checkpointed: nothing is lost
        print("\ngdsoftmax: interrupted; resume with the same command", file=sys.stderr)
        return 130
    except OSError as error:  # a full disk, a folder without write permission, ...
        where = f" {error.filename}" if error.filename else ""
        print(f"gdsoftmax: error: could not read or write{where}: {error.strerror or error}", file=sys.stderr)
        return 2
    except Exception:
        print("gdsoftmax: internal error (a bug: please report it with the traceback below)", file=sys.stderr)
        raise


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "build-native":
        from gdsoftmax.loss.native import main as build_native

        return build_native()
    if args.command == "theory":
        from gdsoftmax.labs.theory_table import main as theory_table

        return theory_table()
    if args.command in (*REPORT_COMMANDS, "lab", "train", "sweep", "tune") and not _experiments_installed(args.command):
        return 2
    if args.command in ("train", "sweep", "tune") and not _config_readable(args):
        return 2
    if args.command == "tune":
        return run_tune_command(args, "gdsoftmax " + " ".join(sys.argv[1:] if argv is None else argv))
    if args.command in REPORT_COMMANDS:
        return run_report_command(args, "gdsoftmax " + " ".join(sys.argv[1:] if argv is None else argv))
    if args.command == "lab":
        return _lab(args)
    if args.command in ("train", "sweep"):
        return _train_or_sweep(args)
    parser.print_help()
    return 2


EXPERIMENT_EXTRAS = ("torchvision", "sklearn", "scipy", "matplotlib", "tqdm", "tomli_w")


def _experiments_installed(command: str) -> bool:
    """The engine's commands need gdsoftmax[experiments]; say so in one line rather than a traceback."""
    missing = [name for name in EXPERIMENT_EXTRAS if not _importable(name)]
    if missing:
        print(f"gdsoftmax {command}: error: this command needs the experiment extras ({', '.join(missing)} "
              "missing); install them with: pip install 'gdsoftmax[experiments]'", file=sys.stderr)
    return not missing


def _config_readable(args) -> bool:
    """A missing or malformed config file is refused in one line before the engine (and torch) is imported."""
    from gdsoftmax.engine.config.file import ConfigFileError, read_config_file

    try:
        read_config_file(args.config)
    except ConfigFileError as error:
        print(f"gdsoftmax {args.command}: error: {error}", file=sys.stderr)
        return False
    return True


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a broken install counts as missing
        return False


def _output_folder(out: str, command: str) -> str | None:
    """The --out folder, or None after saying in one line why it cannot be one."""
    if not out or not out.strip():
        print(f"gdsoftmax {command}: error: --out must name a folder, got an empty string", file=sys.stderr)
        return None
    path = Path(out)
    if path.exists() and not path.is_dir():
        print(f"gdsoftmax {command}: error: --out {out} is a file, not a folder; name a folder", file=sys.stderr)
        return None
    return out


def _lab(args) -> int:
    from gdsoftmax.engine.config.schema import ConfigError, load_config
    from gdsoftmax.engine.data.images import DataNotFoundError
    from gdsoftmax.labs.margin_lab import run_margin_lab
    from gdsoftmax.labs.peeled_lab import load_peeled_config, run_peeled_lab

    if _output_folder(args.out, "lab") is None:
        return 2
    try:
        if args.which == "hf-lm":
            config = load_config(args.config, args.overrides)
            config.data.data_dir = str(args.data_dir or config.data.data_dir)
            from gdsoftmax.labs.hf_lm import run_hf_lm  # needs transformers (the hf extra)

            path = run_hf_lm(config, args.out, fused=args.fused, progress=not args.no_progress)
        elif args.which == "peeled":
            path = run_peeled_lab(load_peeled_config(args.config), args.out)
        else:
            path = run_margin_lab(args.config, args.out, data_dir=args.data_dir, progress=not args.no_progress)
    except (ConfigError, ValueError, FileNotFoundError, DataNotFoundError, ImportError) as error:
        print(f"gdsoftmax lab: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


def _train_or_sweep(args) -> int:
    from gdsoftmax import api
    from gdsoftmax.engine.config.schema import ConfigError
    from gdsoftmax.engine.data.images import DataNotFoundError
    from gdsoftmax.engine.loop.trainer import TrainingDiverged
    from gdsoftmax.engine.rundir.records import RunLockedError
    from gdsoftmax.engine.sweeps.sweep import SweepIncomplete, format_summary, parse_shard

    if _output_folder(args.out, args.command) is None:
        return 2
    try:
        config = api.config(args.config, args.overrides, without_sweep=args.command == "train")
        if args.data_dir:  # a path, set as one: quotes or backslashes in it never pass through TOML text
            config.data.data_dir = str(args.data_dir)
        if args.command == "train":
            results = [api.train(config, args.out, progress=not args.no_progress, restart=args.restart)]
            print(f"results in {args.out}/{config.name}")
        elif args.status or args.launcher == "submitit":
            ignored = [flag for flag, given in (("--shard", args.shard != "0/1"), ("--restart", args.restart)) if given]
            if ignored:
                why = ("--status only reads each cell's state" if args.status
                       else "--launcher: its jobs run every unfinished cell")
                raise ValueError(f"{' and '.join(ignored)} cannot be combined with {why}; use "
                                 f"{' and '.join(ignored)} without it")
            return _status_or_launch(args, config)
        else:
            if args.max_stack < 1:
                raise ValueError(f"--max-stack must be at least 1, got {args.max_stack}")
            results = api.sweep(config, args.out, shard=parse_shard(args.shard), progress=not args.no_progress,
                                max_stack=args.max_stack, restart=args.restart, max_cells=args.max_cells)
    except SweepIncomplete as error:
        if error.results:
            print(format_summary(error.results))
        print(f"gdsoftmax {args.command}: error: {error}", file=sys.stderr)
        return 1
    except (ConfigError, DataNotFoundError, ValueError, RunLockedError, TrainingDiverged) as error:
        print(f"gdsoftmax {args.command}: error: {error}", file=sys.stderr)
        return 2
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one summary
        print(format_summary(results))
        print(_next_steps(f"{args.out}/{config.name}", config))
    return 0


def _next_steps(folder: str, config) -> str:
    """What to look at after training: the report, and TensorBoard where the runs logged to it."""
    prog = sys.argv[0] if sys.argv[0].endswith("gdsoftmax") else "gdsoftmax"
    lines = ["", "Next:", f"  {prog} report {folder}    # report.md: tables, figures, each β against β = 1"]
    if config.model.name == "gpt":  # a language model: its own study
        lines[-1] = (f"  {prog} study lm {folder} --out {folder}/report    # loss, perplexity, calibration, samples, "
                     "each setting against β = 1")
    from gdsoftmax.engine.tracking.registry import next_steps  # the trackers' own lines

    lines += next_steps(config, folder, Path(folder).parent)
    if not config.train.log:
        lines.append("  (add --set 'train.log=[\"tensorboard\"]', '[\"mlflow\"]' or '[\"wandb\"]' to follow runs in a "
                     "tracker)")
    return "\n".join(lines)


def _status_or_launch(args, config) -> int:
    from gdsoftmax.engine.sweeps.launcher import format_status, grid_status, submit_sweep

    if not args.status:
        if args.cluster == "slurm" and shutil.which("sbatch") is None:
            raise ValueError("--cluster slurm needs Slurm, and sbatch is not found on this machine; run it on a "
                             "Slurm login node, or use --cluster local")
        jobs = submit_sweep(config, args.out, cluster=None if args.cluster == "auto" else args.cluster,
                            max_stack=args.max_stack, max_cells=args.max_cells)
        if not jobs:
            print(f"{config.name}: every cell is done")
        for job in jobs:
            print(f"submitted job {job.job_id}")
        if args.wait:
            failed = [job.job_id for job in jobs if job.exception() is not None]
            if failed:
                print(f"gdsoftmax sweep: error: jobs {failed} failed; see --status", file=sys.stderr)
                return 1
        elif jobs:
            overrides = "".join(f" --set {shlex.quote(item)}" for item in args.overrides)
            print(f"watch them with: gdsoftmax sweep {shlex.quote(args.config)}{overrides} --out "
                  f"{shlex.quote(args.out)} --status")
            return 0
    print(format_status(grid_status(config, args.out, args.max_cells)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
