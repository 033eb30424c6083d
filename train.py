"""Train MIRI: ``python train.py [data=...] [mask=...] [key=value ...]`` (see README.md); the
same as the installed ``miri-train``, with the configs of ``miri_lightning/configs``."""

from miri_lightning.train_cli import main

if __name__ == "__main__":
    main()
