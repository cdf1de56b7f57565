import sys

from gdsoftmax.cli import main

sys.exit(main())
