"""`python -m optkit` (also what `torchrun -m optkit` runs)."""

import sys

from optkit.cli.app import run

if __name__ == "__main__":
    sys.exit(run())
