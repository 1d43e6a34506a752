"""`python -m optkit` (also what `torchrun -m optkit` runs)."""

import sys

from optkit.cli.app import main

if __name__ == "__main__":
    sys.exit(main())
