"""CIFAR-10 in torchvision's layout, read without arbitrary pickle."""

import hashlib
import pickle
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

FOLDER = "cifar-10-batches-py"
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
#: torchvision's file list with the official md5 sums.
BATCHES = {
    "train": {
        "data_batch_1": "c99cafc152244af753f735de768cd75f",
        "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
        "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
        "data_batch_4": "634d18415352ddfa80567beed471001a",
        "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    },
    "test": {"test_batch": "40351d587109b95175f43aff81a1287e"},
}


class _BatchUnpickler(pickle.Unpickler):
    """Admits only what a CIFAR batch holds (a dict of numpy arrays, lists, bytes, ints):
    a tampered file that names any other callable is refused before anything runs."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR-10 batch")


def read_batch(path: Path) -> np.ndarray:
    """The images of one python batch file as (N, 3, 32, 32) uint8."""
    try:
        with open(path, "rb") as f:
            batch = _BatchUnpickler(f, encoding="latin1").load()
        data = batch.get("data", batch.get(b"data")) if isinstance(batch, dict) else None
        images = np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32)
    except Exception as error:  # a damaged or foreign file, whatever the unpickler made of it
        raise ValueError(f"{path} is not a CIFAR-10 python batch ({error})") from error
    return images


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def load_cifar10(root: str | Path, split: str = "train", download: bool = False) -> Tensor:
    """All images of a split, (50000 or 10000, 3, 32, 32) uint8, from ``root/cifar-10-batches-py``."""
    if split not in BATCHES:
        raise ValueError(f"data.split must be one of {sorted(BATCHES)}, got {split!r}")
    folder = Path(root).expanduser() / FOLDER
    missing = [name for name in BATCHES[split] if not (folder / name).is_file()]
    if missing and download:
        from torchvision.datasets.utils import download_and_extract_archive

        download_and_extract_archive(URL, str(Path(root).expanduser()), md5=ARCHIVE_MD5)
        missing = [name for name in BATCHES[split] if not (folder / name).is_file()]
    if missing:
        raise ValueError(
            f"CIFAR-10 files {missing} are not in {folder}: extract the python version ({URL}) so that "
            f"{folder}/data_batch_1 … test_batch exist, or pass data.download=true on a machine that is online"
        )
    parts = []
    for name, md5 in BATCHES[split].items():
        path = folder / name
        if _md5(path) != md5:
            warnings.warn(f"{path} differs from the official CIFAR-10 file (md5); reading it anyway", stacklevel=2)
        parts.append(read_batch(path))
    return torch.from_numpy(np.concatenate(parts))
