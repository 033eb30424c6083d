"""Evaluate a run: ``python scripts/evaluate.py output_dir=checkpoints/<run> [per_round=true]``.

Writes ``metrics.csv`` and ``metrics.md`` into the run directory, the table to TensorBoard
(``evaluation/table``) and to the terminal.
"""

import hydra
from omegaconf import DictConfig

from miri_lightning import CONFIG_DIR
from miri_lightning.evaluation import evaluate, markdown, write_tables

CONFIGS = str(CONFIG_DIR)


@hydra.main(version_base="1.3", config_path=CONFIGS, config_name="evaluate")
def main(cfg: DictConfig) -> None:
    rows = evaluate(
        cfg.output_dir,
        per_round=cfg.per_round,
        baselines=tuple(cfg.baselines),
        mmd_items=cfg.mmd_items,
        fid_weights=cfg.fid.weights_path,
    )
    csv_path, md_path = write_tables(rows, cfg.output_dir)
    print(markdown(rows))
    print(f"\nwritten: {csv_path}, {md_path}")


if __name__ == "__main__":
    main()
