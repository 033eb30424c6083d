"""The quality benchmark: ``python scripts/quality.py [experiment=quality_sample] [overrides]``.

Trains a MIRI recipe (any ``train.py`` override works), draws ``quality.samples``
imputations of every item, and prints one table against the baselines on the same masks,
also written as ``quality.csv`` and ``quality.md`` in the run directory.
"""

import hydra
from omegaconf import DictConfig

from miri_lightning import CONFIG_DIR
from miri_lightning.cli import run_or_explain
from miri_lightning.quality import markdown, run_quality

CONFIGS = str(CONFIG_DIR)


@hydra.main(version_base="1.3", config_path=CONFIGS, config_name="quality")
def main(cfg: DictConfig) -> None:
    def work() -> None:
        rows, output_dir = run_quality(cfg)
        if not rows:  # a DDP rank other than 0
            return
        print(markdown(rows))
        print(f"\nwritten: {output_dir / 'quality.csv'}")

    run_or_explain(work)


if __name__ == "__main__":
    main()
