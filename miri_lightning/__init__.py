"""MIRI imputation with rectified flows, on PyTorch Lightning and Hydra."""

from pathlib import Path

__version__ = "0.1.0"

#: The Hydra configs (train.yaml and its groups), shipped inside the package.
CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def __getattr__(name: str):
    if name == "MIRIImputer":  # imported lazily: it pulls in Lightning and Hydra
        from miri_lightning.api import MIRIImputer

        return MIRIImputer
    raise AttributeError(f"module 'miri_lightning' has no attribute {name!r}")
