"""Train MIRI: ``python train.py [data=...] [mask=...] [key=value ...]`` (see README.md)."""

import os
import sys

import hydra
from hydra.errors import InstantiationException
from omegaconf import DictConfig

from miri_lightning.run import train


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> None:
    try:
        train(cfg)
    except (ValueError, FloatingPointError, InstantiationException) as error:
        # bad settings, files or a diverged run: the message says what to do; no traceback
        # (HYDRA_FULL_ERROR=1 shows it)
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        cause = error.__cause__ if isinstance(error, InstantiationException) and error.__cause__ else error
        print(f"error: {cause}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
