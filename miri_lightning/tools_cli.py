"""The console scripts that read or score runs, beside ``miri-train`` and ``miri-impute``, with
the configs shipped in the package (``scripts/evaluate.py``, ``scripts/quality.py`` and
``scripts/export.py`` in a checkout call them):

    miri-evaluate output_dir=checkpoints/<run> [per_round=true]   # metrics.csv, metrics.md
    miri-quality [experiment=quality_sample] [train overrides]    # quality.csv, quality.md
    miri-export output_dir=checkpoints/<run> [round=N] [to=DIR]   # PNGs and one .npz
"""

import hydra
from omegaconf import DictConfig

from miri_lightning import CONFIG_DIR, ranks  # noqa: F401 (ranks registers the resolvers that name log files)
from miri_lightning.cli import run_or_explain

CONFIGS = str(CONFIG_DIR)


@hydra.main(version_base="1.3", config_path=CONFIGS, config_name="evaluate")
def evaluate_main(cfg: DictConfig) -> None:
    """Score a finished run against the baselines: ``metrics.csv`` and ``metrics.md`` in the run
    directory, the table to TensorBoard (``evaluation/table``) and to the terminal."""
    from miri_lightning.evaluation import evaluate, table, write_tables

    def work() -> None:
        rows = evaluate(
            cfg.output_dir,
            per_round=cfg.per_round,
            baselines=tuple(cfg.baselines),
            mmd_items=cfg.mmd_items,
            fid_weights=cfg.fid.weights_path,
        )
        csv_path, md_path = write_tables(rows, cfg.output_dir)
        print(table(rows))
        print(f"\nwritten: {csv_path}, {md_path}")

    run_or_explain(work)


@hydra.main(version_base="1.3", config_path=CONFIGS, config_name="quality")
def quality_main(cfg: DictConfig) -> None:
    """Train a recipe (any ``miri-train`` override works), draw ``quality.samples`` imputations
    of every item and print one table against the baselines on the same masks, also written as
    ``quality.csv`` and ``quality.md`` in the run directory."""
    from miri_lightning.quality import markdown, run_quality

    def work() -> None:
        rows, output_dir = run_quality(cfg)
        if not rows:  # a DDP rank other than 0
            return
        print(markdown(rows))
        print(f"\nwritten: {output_dir / 'quality.csv'}")

    run_or_explain(work)


@hydra.main(version_base="1.3", config_path=CONFIGS, config_name="export")
def export_main(cfg: DictConfig) -> None:
    """Write a round's imputed images as PNGs, PNG masks (white = observed) and one ``.npz``."""
    from miri_lightning.export import export_round

    def work() -> None:
        print(f"exported to {export_round(cfg.output_dir, cfg.round, cfg.to)}")

    run_or_explain(work)
