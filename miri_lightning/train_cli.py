"""``miri-train`` (and ``python train.py`` in a checkout): train MIRI with the configs shipped
in the package, ``miri-train [group=option ...] [key=value ...]`` (see README.md).

With ``-m`` (Hydra's multirun) every job writes to its own directory, ``${output_dir}/<the
values it sweeps>`` (e.g. ``checkpoints/sample_pixel/miri.ema=0.99``); a sweep in which two jobs
would share one (the same value twice, or a sweep of ``ckpt_path`` or ``overwrite`` alone) is
refused before any job starts. ``ckpt_path`` and ``overwrite`` do not name the directory, so
``-m miri.ema=0,0.99 ckpt_path=last`` resumes every job of the sweep."""

import contextlib
import io
import sys

import hydra
import lightning  # noqa: F401  (before Hydra configures logging: Lightning keeps its own console handler, one line a notice)
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from miri_lightning import CONFIG_DIR, ranks  # noqa: F401 (ranks registers the resolvers that name log files)
from miri_lightning.cli import run_or_explain

#: Settings that change how a job runs, not which run it is: they never name its directory.
NOT_NAMING = ("ckpt_path", "overwrite")


def _overrides(arguments: list[str]) -> list:
    lines = [a for a in arguments if "=" in a and not a.startswith("-") and not a.lstrip("+~").startswith("hydra.")]
    return OverridesParser.create().parse_overrides(lines)


def swept_keys(arguments: list[str]) -> list[str]:
    """The keys the command line ``arguments`` sweep (``a=1,2``), those of :data:`NOT_NAMING` aside."""
    return [o.key_or_group for o in _overrides(arguments) if o.is_sweep_override() and o.key_or_group not in NOT_NAMING]


def sweep_jobs(arguments: list[str]) -> list[tuple[str, ...]]:
    """The jobs a basic sweep over ``arguments`` launches, each as its swept ``key=value``s."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    keys = swept_keys(arguments)
    overrides = [o for o in _overrides(arguments) if o.key_or_group not in NOT_NAMING]
    jobs = BasicSweeper.split_arguments(overrides, None)[0]
    return [tuple(line for line in job if line.split("=", 1)[0].lstrip("+~") in keys) for job in jobs]


def sweep_subdir() -> str:
    """``hydra.sweep.subdir`` of the running job: its swept ``key=value``s, joined by commas
    (``/`` in a value becomes ``_``)."""
    keys = swept_keys(sys.argv[1:])
    mine = [line for line in HydraConfig.get().overrides.task if line.split("=", 1)[0].lstrip("+~") in keys]
    return ",".join(sorted(mine)).replace("/", "_")


OmegaConf.register_new_resolver("miri_sweep_subdir", sweep_subdir, replace=True)


def job_output_dir(cfg: DictConfig, arguments: list[str]) -> str:
    """``output_dir`` of this job: as configured for a single run; under multirun the job's own
    directory (``hydra.runtime.output_dir``), once no two jobs of the sweep share one."""
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return cfg.output_dir
    jobs = sweep_jobs(arguments)
    shared = sorted({job for job in jobs if jobs.count(job) > 1})
    if shared:
        raise ValueError(
            f"this sweep launches {len(jobs)} jobs but some would write to the same directory "
            f"({'; '.join(','.join(job) or '<no swept setting>' for job in shared)}): a job's directory is named by "
            "the values it sweeps, so sweep distinct values (ckpt_path and overwrite do not name it)"
        )
    return hydra_cfg.runtime.output_dir


def check_printed_config(arguments: list[str]) -> None:
    """With ``--cfg job`` (or ``all``), Hydra prints the composed config and exits before the
    task function runs, so before the run's own checks: the same type checks (``miri.rounds=five``,
    ``miri.ode_steps`` out of bounds) run here first, a ValueError of one line. Anything that
    does not compose is left to Hydra to report."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.utils import get_args_parser

    from miri_lightning.settings import check_types

    try:
        with contextlib.redirect_stderr(io.StringIO()):  # Hydra reports bad flags itself
            args = get_args_parser().parse_args(arguments)
    except SystemExit:
        return
    if args.cfg not in ("job", "all") or args.config_dir or args.config_path:
        return
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose(args.config_name or "train", overrides=args.overrides)
    except Exception:
        return
    check_types(cfg)


def check_recipe_names(arguments: list[str]) -> None:
    """``experiment`` is an optional group (``data=celeba`` brings ``experiment/celeba.yaml``
    when it exists), so Hydra skips a misspelt ``experiment=paper_sampel`` without a word and
    trains the default: refuse an ``experiment=`` (or ``+experiment=``) naming no recipe."""
    known = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))
    for override in _overrides(arguments):
        if override.key_or_group != "experiment" or override.is_delete():
            continue
        for value in override.sweep_string_iterator() if override.is_sweep_override() else [override.value()]:
            if value is not None and str(value) not in known:
                raise ValueError(f"experiment={value} names no recipe: choose one of {', '.join(known)}")


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def hydra_main(cfg: DictConfig) -> None:
    from miri_lightning.run import train

    def work():
        cfg.output_dir = job_output_dir(cfg, sys.argv[1:])
        return train(cfg)

    run_or_explain(work)


def main() -> None:
    """``miri-train``: Hydra's entry point, with a config printed by ``--cfg`` type-checked first."""
    run_or_explain(lambda: (check_recipe_names(sys.argv[1:]), check_printed_config(sys.argv[1:])))
    hydra_main()


if __name__ == "__main__":
    main()
