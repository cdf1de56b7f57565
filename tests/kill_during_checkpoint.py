"""The ``gdsoftmax`` command, killed with SIGKILL between writing and renaming its first checkpoint.

The crash-safety test runs this instead of ``python -m gdsoftmax``, so that the hook stays out of
the package: the new checkpoint is complete on disk under its temporary name, not yet in place.
"""

from __future__ import annotations

import os
import signal
import sys


def main() -> int:
    from gdsoftmax.cli import main as gdsoftmax

    real_replace = os.replace

    def replace_or_die(src, dst, *args, **kwargs):
        if os.path.basename(dst) == "checkpoint.pt":
            os.kill(os.getpid(), signal.SIGKILL)
        return real_replace(src, dst, *args, **kwargs)

    os.replace = replace_or_die
    return gdsoftmax(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
