"""What the Hydra entry points share: bad settings end in one line, not a traceback."""

import os
import sys
import traceback
from collections.abc import Callable

from hydra.errors import InstantiationException


def _lightning_misconfiguration() -> type[BaseException]:
    """Lightning's MisconfigurationException once Lightning is imported (only then can it have
    been raised), else a class nothing raises: ``miri-export`` and ``miri-evaluate`` never pay
    the seconds of importing Lightning."""
    if "lightning.fabric.utilities.exceptions" not in sys.modules:
        return type("NeverRaised", (Exception,), {})
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    return MisconfigurationException


def _from_trainer_init(error: BaseException) -> bool:
    """Whether ``error`` was raised while lightning.Trainer checked its arguments."""
    return any(
        frame.name == "__init__" and frame.filename.replace("\\", "/").endswith("lightning/pytorch/trainer/trainer.py")
        for frame in traceback.extract_tb(error.__traceback__)
    )


def run_or_explain(work: Callable[[], object]) -> None:
    """Run ``work``; a ValueError, FloatingPointError or failed instantiation (bad settings,
    files, a diverged run: the message says what to do), or a ``trainer.*`` argument that
    Lightning's Trainer rejects, prints ``error: ...`` and exits 1. ``HYDRA_FULL_ERROR=1``
    re-raises it with its traceback."""
    try:
        work()
    except Exception as error:  # the classes below are looked up only now that one was raised
        misconfiguration = _lightning_misconfiguration()
        explained = ValueError | FloatingPointError | InstantiationException | misconfiguration | TypeError
        if not isinstance(error, explained):
            raise
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        if isinstance(error, TypeError | misconfiguration) and not _from_trainer_init(error):
            raise
        cause = error.__cause__ if isinstance(error, InstantiationException) and error.__cause__ else error
        prefix = "trainer.*: " if _from_trainer_init(error) else ""
        print(f"error: {prefix}{cause}", file=sys.stderr)
        sys.exit(1)
