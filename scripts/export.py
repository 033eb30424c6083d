"""Export a round's imputed images: ``python scripts/export.py output_dir=checkpoints/<run> [round=N] [to=DIR]``.

Writes PNGs of the imputed images, PNG masks (white = observed) and one ``.npz``.
"""

import hydra
from omegaconf import DictConfig

from miri_lightning import CONFIG_DIR
from miri_lightning.export import export_round

CONFIGS = str(CONFIG_DIR)


@hydra.main(version_base="1.3", config_path=CONFIGS, config_name="export")
def main(cfg: DictConfig) -> None:
    to = export_round(cfg.output_dir, cfg.round, cfg.to)
    print(f"exported to {to}")


if __name__ == "__main__":
    main()
