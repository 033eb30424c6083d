"""Checks of a composed config that must pass before a run touches anything: the types of the
scalar settings and the bound on ``miri.ode_steps``, the ``trainer.*`` arguments (Lightning's, and
not the ones the run sets), and a device to impute on."""

import inspect
import typing

import torch
from omegaconf import DictConfig, OmegaConf

from miri_lightning import CONFIG_DIR

#: Lightning Trainer arguments that ``run.build`` sets itself, and where they come from.
SET_BY_RUN = {
    "max_epochs": "miri.rounds",
    "default_root_dir": "output_dir",
    "logger": "TensorBoard in output_dir/tensorboard",
    "callbacks": "the MIRI callback, checkpoints and progress bar",
    "reload_dataloaders_every_n_epochs": "1: a fresh loader each round",
    "limit_val_batches": "0: MIRI has no validation loop",
    "num_sanity_val_steps": "0",
}

#: ``trainer.*`` keys of the project's trainer configs that are not Lightning arguments (the
#: run reads and removes them before building the Trainer): add a new one here.
OWN_TRAINER_KEYS: tuple[str, ...] = ("float32_matmul_precision",)

#: The most ODE steps a run (or a run directory's config.yaml) may ask for per round: the paper
#: uses 100; more than this is a mistake, and it would be paid for on every item of every round.
MAX_ODE_STEPS = 10_000

#: Groups of train.yaml whose scalar defaults fix the type a setting must have.
TYPED_GROUPS = ("miri", "optim", "metrics", "checkpoint", "centre")


def check_trainer_args(trainer: dict) -> None:
    """A ValueError of one line when ``trainer`` (``cfg.trainer``) holds an argument the run
    sets itself or one that ``lightning.Trainer`` does not take."""
    import lightning as L  # here: miri-impute reads a run's settings without Lightning

    taken = [key for key in trainer if key in SET_BY_RUN]
    if taken:
        raise ValueError(
            "the run sets these Lightning arguments itself: "
            + ", ".join(f"trainer.{key} (from {SET_BY_RUN[key]})" for key in taken)
            + ": remove them from the command line"
        )
    known = set(inspect.signature(L.Trainer.__init__).parameters) | set(OWN_TRAINER_KEYS)
    unknown = [key for key in trainer if key not in known]
    if unknown:
        raise ValueError(
            f"lightning.Trainer takes no argument {', '.join(f'trainer.{key}' for key in unknown)}: "
            "check the spelling (see the Lightning Trainer documentation)"
        )
    hints = typing.get_type_hints(L.Trainer.__init__)
    for key, value in trainer.items():
        if key in hints and not _fits(value, hints[key]):
            raise ValueError(f"trainer.{key}={value!r} is not what lightning.Trainer takes ({_name(hints[key])})")


def _fits(value, hint) -> bool:
    """Whether a plain config value fits a type hint of Trainer.__init__ (hints that are not
    plain values, e.g. classes of Lightning, accept anything: Lightning checks them)."""
    origin = typing.get_origin(hint)
    if origin is typing.Union or type(hint).__name__ == "UnionType":
        return any(_fits(value, arg) for arg in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, dict):
        return isinstance(value, origin)
    return value is not None and not isinstance(value, bool | int | float | str | list | dict)


def _name(hint) -> str:
    return str(hint).replace("typing.", "")


def _kind(value) -> type | None:
    if isinstance(value, bool):
        return bool
    if isinstance(value, int | float):
        return type(value)
    return None


def check_ode_steps(value, where: str = "miri.ode_steps") -> int:
    """``value`` as a number of ODE steps, from 1 to :data:`MAX_ODE_STEPS`; else a ValueError
    naming ``where`` (the setting, and the file it was read from)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ODE_STEPS:
        shown = repr(value) if isinstance(value, int | float) else f"a {type(value).__name__}"
        raise ValueError(f"{where} must be an integer from 1 to {MAX_ODE_STEPS} (the paper uses 100), got {shown}")
    return value


def check_device(device) -> torch.device:
    """``device`` as a torch.device that this machine has; else a ValueError of one line."""
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as error:
        raise ValueError(f"device {device!r} is not a torch device ({error}): e.g. cpu, cuda, cuda:1") from None
    if chosen.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (chosen.index or 0) >= count:
            raise ValueError(f"device {device} is not on this machine, which has {count} CUDA device(s): use cpu")
    elif chosen.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device} is not on this machine: use cpu")
    return chosen


def check_types(cfg: DictConfig) -> None:
    """A ValueError naming the setting when a scalar of ``TYPED_GROUPS`` or ``seed`` has
    another type than its default in train.yaml (``miri.rounds=five``), or when
    ``miri.ode_steps`` is outside 1..:data:`MAX_ODE_STEPS`; settings whose default is null or a
    string are left to the code that reads them."""
    defaults = OmegaConf.load(CONFIG_DIR / "train.yaml")
    checks = [("seed", defaults.seed, cfg.get("seed"))]
    for group in TYPED_GROUPS:
        given = cfg.get(group)
        if given is None:
            continue
        for key, default in defaults[group].items():
            if key in given:
                checks.append((f"{group}.{key}", default, given[key]))
    for name, default, value in checks:
        kind = _kind(default)
        if kind is None or value is None and kind is not bool:
            continue
        ok = (
            isinstance(value, bool)
            if kind is bool
            else isinstance(value, int) and not isinstance(value, bool)
            if kind is int
            else isinstance(value, int | float) and not isinstance(value, bool)
        )
        if not ok:
            word = {bool: "true or false", int: "an integer", float: "a number"}[kind]
            raise ValueError(f"{name} must be {word}, got {value!r}")
    miri = cfg.get("miri")
    if miri is not None and "ode_steps" in miri:
        check_ode_steps(miri.ode_steps)
