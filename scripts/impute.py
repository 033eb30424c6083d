"""Fill the holes of new images with a trained run: see ``python scripts/impute.py --help``."""

import sys

from miri_lightning.impute_cli import main

if __name__ == "__main__":
    sys.exit(main())
