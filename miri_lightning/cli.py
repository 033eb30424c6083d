"""What the Hydra entry points share: bad settings end in one line, not a traceback."""

import os
import sys
from collections.abc import Callable

from hydra.errors import InstantiationException


def run_or_explain(work: Callable[[], object]) -> None:
    """Run ``work``; a ValueError, FloatingPointError or failed instantiation (bad settings,
    files, a diverged run: the message says what to do) prints ``error: ...`` and exits 1.
    ``HYDRA_FULL_ERROR=1`` re-raises it with its traceback."""
    try:
        work()
    except (ValueError, FloatingPointError, InstantiationException) as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        cause = error.__cause__ if isinstance(error, InstantiationException) and error.__cause__ else error
        print(f"error: {cause}", file=sys.stderr)
        sys.exit(1)
