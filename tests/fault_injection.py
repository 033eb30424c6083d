"""TEST-ONLY entry point: ``python tests/fault_injection.py <train.py overrides>`` runs
train.py with a fault injected on one rank, to test that a fault on one rank stops every
rank. Not for users.

Environment: ``MIRI_TEST_FAULT`` (``nan``: the training loss is NaN from optimisation step
``MIRI_TEST_FAULT_STEP`` on; ``impute_error``: the re-imputation raises a RuntimeError),
``MIRI_TEST_FAULT_RANK`` (the global rank that goes wrong), ``MIRI_TEST_EXITS`` (a folder:
``injected`` holds the time of the fault, and each rank writes ``rank<R>.exit`` as it exits,
with its exit code and the time). Lightning starts the other DDP ranks with this same
script, so every rank carries the injection.
"""

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from miri_lightning import flow  # noqa: E402

RANK = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")))
FAULT, FAULT_RANK = os.environ["MIRI_TEST_FAULT"], int(os.environ["MIRI_TEST_FAULT_RANK"])
FAULT_STEP = int(os.environ.get("MIRI_TEST_FAULT_STEP", "0"))
EXITS = Path(os.environ["MIRI_TEST_EXITS"])
plain_loss, calls = flow.miri_loss, [0]


def injected() -> None:
    if not (EXITS / "injected").exists():
        (EXITS / "injected").write_text(f"{time.time()}\n")


def faulty_loss(*args, **kwargs):
    loss = plain_loss(*args, **kwargs)
    step, calls[0] = calls[0], calls[0] + 1
    if RANK == FAULT_RANK and step >= FAULT_STEP:
        injected()
        loss = loss * float("nan")
    return loss


def faulty_impute(*args, **kwargs):
    if RANK == FAULT_RANK:
        injected()
        raise RuntimeError(f"injected fault in the re-imputation of rank {RANK}")
    return plain_impute(*args, **kwargs)


plain_impute = flow.impute
if FAULT == "nan":
    flow.miri_loss = faulty_loss
elif FAULT == "impute_error":
    flow.impute = faulty_impute
else:
    raise ValueError(f"MIRI_TEST_FAULT must be nan or impute_error, got {FAULT!r}")
code = 0
try:
    # train.py's code run as __main__, with sys.argv[0] left as this script: Lightning starts
    # the other ranks with sys.argv, so they run this script too (runpy would swap argv[0])
    script = ROOT / "train.py"
    exec(compile(script.read_text(), str(script), "exec"), {"__name__": "__main__", "__file__": str(script)})
except SystemExit as exit_:
    code = exit_.code if isinstance(exit_.code, int) else 1
    raise
except BaseException:
    code = 1
    raise
finally:
    (EXITS / f"rank{RANK}.exit").write_text(f"{code} {time.time()}\n")
