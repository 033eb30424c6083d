"""Checks of a composed config that must pass before a run touches anything: the types of the
scalar settings, and the ``trainer.*`` arguments (Lightning's, and not the ones the run sets)."""

import inspect
import typing

import lightning as L
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

#: Groups of train.yaml whose scalar defaults fix the type a setting must have.
TYPED_GROUPS = ("miri", "optim", "metrics", "checkpoint")


def check_trainer_args(trainer: dict) -> None:
    """A ValueError of one line when ``trainer`` (``cfg.trainer``) holds an argument the run
    sets itself or one that ``lightning.Trainer`` does not take."""
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


def check_types(cfg: DictConfig) -> None:
    """A ValueError naming the setting when a scalar of ``TYPED_GROUPS`` or ``seed`` has
    another type than its default in train.yaml (``miri.rounds=five``); settings whose default
    is null or a string are left to the code that reads them."""
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
