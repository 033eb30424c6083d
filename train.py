"""Train MIRI: ``python train.py [data=...] [mask=...] [key=value ...]`` (see README.md)."""

import hydra
from omegaconf import DictConfig

from miri_lightning.cli import run_or_explain
from miri_lightning.run import train


@hydra.main(version_base="1.3", config_path="miri_lightning/configs", config_name="train")
def main(cfg: DictConfig) -> None:
    run_or_explain(lambda: train(cfg))


if __name__ == "__main__":
    main()
