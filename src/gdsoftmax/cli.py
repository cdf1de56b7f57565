"""The ``gdsoftmax`` command line."""

from __future__ import annotations

import argparse
import sys

DESCRIPTION = """\
gdsoftmax: the probability-dependent gradient-decay softmax loss.

  J = -log( e^{z_c/tau} / (sum_{i!=c} e^{z_i/tau} + beta * e^{z_c/tau}) )

beta = 1 is cross-entropy; beta < 1 keeps the gradient large until the true class is
confident (a large margin); beta > 1 decays it early (better calibration).
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gdsoftmax", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("demo", help="print loss, gradient magnitude and inflection points for several beta")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        from gdsoftmax.demo import main as demo_main

        return demo_main()
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
