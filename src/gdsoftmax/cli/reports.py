"""The commands that read finished runs and write reports: ``report``, ``table1``, ``study`` and
``claims``. Like the rest of the command line, each imports the studies layer only when it runs."""

from __future__ import annotations

import sys
from pathlib import Path

from gdsoftmax.studies.registry import STUDIES  # a light module: the builders are imported when a study runs

__all__ = ["REPORT_COMMANDS", "add_report_commands", "run_report_command"]

REPORT_COMMANDS = ("report", "compare", "table1", "study", "claims")


def add_report_commands(commands) -> None:
    """Add the report commands to the ``gdsoftmax`` subparsers."""
    report = commands.add_parser("report", help="write report.md with tables, figures and claim verdicts for a sweep",
                                 description="Read every finished run under SWEEP_DIR and write report.md beside "
                                             "its PNGs: metrics as mean ± std over seeds, paired tests against "
                                             "beta = 1, post-hoc calibration, the paper's figures and claims.")
    report.add_argument("sweep_dir", help="a sweep directory, e.g. runs/mnist_fcnn")
    report.add_argument("--out", help="where to write (default: SWEEP_DIR)")
    report.add_argument("--bins", type=int, default=15, help="equal-width bins for ECE/MCE (default 15, as every "
                        "command; the paper's tables use 10: --bins 10 sets its ECE beside ours)")
    compare = commands.add_parser(
        "compare", help="the verdict for a model trained in any loop: SETTING/SEED.npz predictions against a reference",
        description="Read DIR/SETTING/SEED.npz (val_logits, val_labels, test_logits, test_labels: the names of the "
                    "engine's predictions.npz; gdsoftmax.analysis.predictions.save_predictions writes them from any "
                    "loop), score each seed's test split raw and after temperature scaling fitted on its validation "
                    "split (accuracy, ECE at 15 bins, smECE, NLL, Brier), compare every setting with the reference "
                    "by seed (paired t-test, 95 %% interval, Holm over the settings of each metric), and write "
                    "report.md, opening with the verdict, with scores.csv and comparisons.csv.")
    compare.add_argument("predictions", help="the folder of SETTING/SEED.npz files")
    compare.add_argument("--reference", default="beta=1", help="the setting every other is compared with (default: "
                                                               "beta=1)")
    compare.add_argument("--out", help="where to write (default: PREDICTIONS/report)")
    table1 = commands.add_parser(
        "table1", help="write the MNIST Table 1 study (the paper's counts beside ours, verdict, factors, warm-ups)",
        description="Read the finished recipe sweep (configs/mnist_fcnn_paper.toml) and, if given, the factor and "
                    "warm-up sweeps, and write report.md with Table 1 beside the paper's, paired and Holm-corrected "
                    "tests of its first row (samples with p_c <= 0.2) at every recorded epoch, the factor table, "
                    "Figs. 4-5 and the compute used.")
    table1.add_argument("recipe_dir", help="the recipe sweep, e.g. runs/mnist_fcnn_paper")
    table1.add_argument("--factors", help="the factor sweep, e.g. runs/mnist_table1_factors")
    table1.add_argument("--warmups", help="the warm-up sweep, e.g. runs/mnist_warmups")
    table1.add_argument("--out", help="where to write (default: RECIPE_DIR)")
    table1.add_argument("--preamble", help="a Markdown file whose text opens the report (e.g. the recipe's sources)")
    study = commands.add_parser(
        "study", help="write the report of a study: a claim no plain beta sweep decides (oscillation, tau, ...), "
                      "the over-confident regime, or a language model",
        description="Read the finished sweep of one study and write report.md, its figures, runs.csv and "
                    "claims.csv into --out. The studies: " + "; ".join(
                        f"{s.kind} ({s.help}; {s.config})" for s in STUDIES.values())
                    + ". Each config's header names its two commands.")
    study.add_argument("kind", choices=tuple(STUDIES), help="which study the sweep is")
    study.add_argument("sweep_dir", help="the study's sweep directory, e.g. runs/fashion_mnist_oscillation")
    study.add_argument("--out", required=True, help="where to write, e.g. docs/results/fashion_mnist_oscillation")
    study.add_argument("--reference", help="regime only: a report folder of the same data set in another regime, set "
                                           "beside it (e.g. docs/results/cifar10_cpu)")
    claims = commands.add_parser(
        "claims", help="write the claims ledger: every claim of the paper and what every report found",
        description="Read each report folder's claims.csv under RESULTS (the verdicts its report printed), run the "
                    "numerical checks of the paper's theory claims, and write one ledger: every registered claim "
                    "(src/gdsoftmax/analysis/paper_claims.toml), every place it was tested, and a status derived "
                    "by the rule the ledger states. Untested claims say why (no data here, needs a GPU, not yet run).")
    claims.add_argument("--results", default="docs/results",
                        help="the folder whose report folders to read (default: docs/results)")
    claims.add_argument("--out", help="the file to write (default: RESULTS/CLAIMS.md)")
    claims.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if the file differs from what the reports give (for CI)")


def run_report_command(args, command: str) -> int:
    """Run one of :data:`REPORT_COMMANDS`; ``command`` is the command line, printed in the report."""
    if args.command == "report":
        return _report(args, command)
    if args.command == "compare":
        return _compare(args, command)
    if args.command == "table1":
        return _table1(args)
    if args.command == "study":
        return _study(args, command)
    return _claims(args)


def _study(args, command: str) -> int:
    from gdsoftmax.engine.workspace.cleanup import folders_removed_on_failure
    from gdsoftmax.studies.registry import build

    try:
        if args.reference and not (Path(args.reference) / "runs.csv").is_file():
            raise FileNotFoundError(f"--reference {args.reference}: no runs.csv there; name a report folder")
        if args.reference and not STUDIES[args.kind].reference:
            raise ValueError(f"--reference is for the {', '.join(k for k, s in STUDIES.items() if s.reference)} "
                             f"study, not {args.kind}")
        if STUDIES[args.kind].features and Path(args.sweep_dir).is_dir():
            # a feature geometry needs the trained models, which a study never loads: the engine measures it first
            from gdsoftmax.engine.tasks.features import record_sweep_features

            record_sweep_features(args.sweep_dir)
        with folders_removed_on_failure(Path(args.out), depth=0, with_contents=True):  # a failed study: no --out
            path = build(args.kind, args.sweep_dir, args.out, command=command, reference=args.reference)
    except (FileNotFoundError, KeyError, ValueError) as error:
        print(f"gdsoftmax study: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    print(f"next: read {path}; gdsoftmax claims adds its verdicts to the ledger when --out is under docs/results")
    return 0


def _compare(args, command: str) -> int:
    from gdsoftmax import api

    try:
        path = api.compare(args.predictions, args.out, reference=args.reference, command=command)
    except ValueError as error:
        print(f"gdsoftmax compare: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    print(f"next: read its verdict; {path.parent / 'comparisons.csv'} holds every test")
    return 0


MAX_BINS = 1000  # more bins than this leaves most of them empty for any test set, and costs memory


def _report(args, command: str) -> int:
    from gdsoftmax import api

    if not 1 <= args.bins <= MAX_BINS:
        print(f"gdsoftmax report: error: --bins must be between 1 and {MAX_BINS}, got {args.bins}", file=sys.stderr)
        return 2
    from gdsoftmax.engine.workspace.cleanup import folders_removed_on_failure

    try:
        with folders_removed_on_failure(Path(args.out or args.sweep_dir), depth=0, with_contents=True):  # nor a report
            path = api.report(args.sweep_dir, args.out, bins=args.bins, command=command)
    except (FileNotFoundError, ValueError) as error:
        print(f"gdsoftmax report: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


def _claims(args) -> int:
    from gdsoftmax.analysis.files import write_text_atomically
    from gdsoftmax.studies.ledger import build_ledger

    results = Path(args.results)
    if not results.is_dir():
        print(f"gdsoftmax claims: error: --results {args.results} is not a folder; name the folder that holds the "
              "report folders (default: docs/results)", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else results / "CLAIMS.md"
    if not out.parent.is_dir():
        print(f"gdsoftmax claims: error: --out {args.out}: its folder does not exist; create it or name another",
              file=sys.stderr)
        return 2
    try:
        text = build_ledger(results)
    except (ValueError, KeyError) as error:
        print(f"gdsoftmax claims: error: {error}", file=sys.stderr)
        return 2
    if args.check:
        same = out.is_file() and out.read_text(encoding="utf-8") == text
        print(f"{out} is {'up to date' if same else 'out of date: run gdsoftmax claims'}")
        return 0 if same else 1
    write_text_atomically(out, text)
    counts = next((line for line in text.splitlines() if line.endswith(").") and " claims: " in line), "")
    print(f"wrote {out}. {counts}")
    print(f"next: read {out}, or open a claim's report from its table")
    return 0


def _table1(args) -> int:
    from gdsoftmax.studies.table1_study import build_table1_report

    try:
        if args.preamble and not Path(args.preamble).is_file():
            raise FileNotFoundError(f"--preamble {args.preamble}: no such file; name a Markdown file, or leave it out")
        preamble = Path(args.preamble).read_text(encoding="utf-8").splitlines() if args.preamble else None
        path = build_table1_report(args.recipe_dir, args.out or args.recipe_dir, factors_dir=args.factors,
                                   warmups_dir=args.warmups, preamble=preamble)
    except (FileNotFoundError, ValueError) as error:
        print(f"gdsoftmax table1: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0
