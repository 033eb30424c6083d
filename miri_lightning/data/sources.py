"""Sources of images: each loads (N, C, H, W) values in [0, 1] and, when the data come
with their own missingness, the mask. Value range and dtype are settled here, once."""

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from miri_lightning.data.array import load_array
from miri_lightning.data.cache import cached_arrays
from miri_lightning.data.cifar10 import BATCHES, FOLDER, load_cifar10
from miri_lightning.data.folder import image_files, load_folder, load_masks
from miri_lightning.data.sample import sample_images
from miri_lightning.data.table import as_tensor, read_table, standardise, warn_empty_rows, write_table


@dataclass
class LoadedImages:
    """values: (N, C, H, W), uint8 (0..255) for 8-bit images or float32 in [0, 1], or (N, d)
    float32 for vectors (standardised tables, toy points); observed: bool of the same shape,
    or None when the mask is to be simulated (then ``values`` is the ground truth); clamp:
    the data's range, kept by every imputation (None for unbounded, standardised data)."""

    values: Tensor
    observed: Tensor | None = None
    clamp: tuple[float, float] | None = (0.0, 1.0)

    @property
    def has_truth(self) -> bool:
        return self.observed is None


class SampleSource:
    """``data=sample``: the embedded CIFAR-like crops (see :mod:`miri_lightning.data.sample`)."""

    def __init__(self, n: int = 2000, image_size: int = 32, channels: int = 3, seed: int = 0, name: str = "sample"):
        if channels != 3:
            raise ValueError(f"data.channels must be 3 for data=sample (colour photographs), got {channels}")
        self.n, self.image_size, self.channels, self.seed, self.name = n, image_size, channels, seed, name

    def load(self) -> LoadedImages:
        return LoadedImages(sample_images(self.n, self.image_size, self.seed))


def subset_indices(count: int, n: int | None, seed: int) -> Tensor | None:
    """``n`` of ``count`` item indices drawn without replacement (seeded), in their original
    order; None for all (``n`` None or at least ``count``)."""
    if n is None or n >= count:
        return None
    if n < 1:
        raise ValueError(f"data.n must be at least 1 (or null for all), got {n}")
    return torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:n].sort().values


def subset(images: Tensor, n: int | None, seed: int) -> Tensor:
    keep = subset_indices(images.shape[0], n, seed)
    return images if keep is None else images[keep]


def subset_files(files: list[Path], n: int | None, seed: int) -> list[Path]:
    """The files of the same draw, so that only they are decoded."""
    keep = subset_indices(len(files), n, seed)
    return files if keep is None else [files[i] for i in keep.tolist()]


class Cifar10Source:
    """``data=cifar10``: torchvision's CIFAR-10 (python batches) under ``root``."""

    def __init__(
        self,
        root: str = "data",
        split: str = "train",
        n: int | None = 5000,
        seed: int = 0,
        download: bool = False,
        image_size: int = 32,
        channels: int = 3,
        name: str = "cifar10",
        cache_dir: str | None = None,
    ):
        if image_size != 32 or channels != 3:
            raise ValueError("CIFAR-10 images are 32×32 RGB: keep data.image_size=32 and data.channels=3")
        self.root, self.split, self.n, self.seed, self.download, self.name = root, split, n, seed, download, name
        self.cache_dir = cache_dir

    def load(self) -> LoadedImages:
        if self.cache_dir is None or self.split not in BATCHES:
            return LoadedImages(subset(load_cifar10(self.root, self.split, self.download), self.n, self.seed))
        folder = Path(self.root).expanduser().resolve() / FOLDER
        files = [folder / name for name in BATCHES[self.split]]
        if not all(f.is_file() for f in files):  # absent: download or explain, then cache
            load_cifar10(self.root, self.split, self.download)
        key = {"source": "cifar10", "root": str(folder), "split": self.split, "n": self.n, "seed": self.seed}
        key["image_size"] = 32
        arrays = cached_arrays(
            self.cache_dir,
            key,
            files,
            lambda: {"values": subset(load_cifar10(self.root, self.split, self.download), self.n, self.seed)},
        )
        return LoadedImages(arrays["values"])


class FolderSource:
    """``data=folder``: every image under ``root`` (recursively), as RGB or grayscale; with
    ``mask_root``, the mask image of each (same relative name; black = missing)."""

    def __init__(
        self,
        root: str,
        image_size: int = 64,
        channels: int = 3,
        n: int | None = None,
        seed: int = 0,
        mask_root: str | None = None,
        name: str = "folder",
        cache_dir: str | None = None,
    ):
        if root is None:
            raise ValueError("data=folder needs data.root=<folder of images>")
        self.root, self.image_size, self.channels, self.n, self.seed = root, image_size, channels, n, seed
        self.mask_root, self.name, self.cache_dir = mask_root, name, cache_dir

    def load(self) -> LoadedImages:
        files = subset_files(image_files(self.root), self.n, self.seed)
        stamped = list(files)
        if self.mask_root is not None:
            stamped += image_files(self.mask_root)
        key = {
            "source": "folder",
            "root": str(Path(self.root).expanduser().resolve()),
            "mask_root": str(Path(self.mask_root).expanduser().resolve()) if self.mask_root is not None else None,
            "image_size": self.image_size,
            "channels": self.channels,
            "n": self.n,
            "seed": self.seed,
        }
        arrays = cached_arrays(self.cache_dir, key, stamped, lambda: self._decode(files))
        return LoadedImages(arrays["values"], arrays["observed"].bool() if "observed" in arrays else None)

    def _decode(self, files: list[Path]) -> dict[str, Tensor]:
        images, files = load_folder(files, self.image_size, self.channels)
        if self.mask_root is None:
            return {"values": images}
        root, mask_root = Path(self.root).expanduser(), Path(self.mask_root).expanduser()
        observed = load_masks(files, root, mask_root, self.image_size, self.channels)
        return {"values": torch.where(observed, images, 0), "observed": observed}


class CelebASource:
    """``data=celeba``: CelebA's aligned faces, centre-cropped to ``crop`` and resized to
    ``image_size`` (the customary 140 -> 64). ``root`` holds torchvision's layout
    (``celeba/img_align_celeba/*.jpg`` and ``celeba/list_eval_partition.txt``) or is a plain
    folder of the aligned JPEGs (with ``list_eval_partition.txt`` beside them to pick a split)."""

    SPLITS = {"train": "0", "valid": "1", "test": "2", "all": None}

    def __init__(
        self,
        root: str = "data",
        split: str = "train",
        n: int | None = None,
        seed: int = 0,
        image_size: int = 64,
        crop: int = 140,
        channels: int = 3,
        name: str = "celeba",
        cache_dir: str | None = None,
    ):
        if split not in self.SPLITS:
            raise ValueError(f"data.split must be one of {sorted(self.SPLITS)}, got {split!r}")
        if channels != 3:
            raise ValueError("CelebA is RGB: keep data.channels=3")
        self.root, self.split, self.n, self.seed = Path(root).expanduser(), split, n, seed
        self.image_size, self.crop, self.channels, self.name = image_size, crop, channels, name
        self.cache_dir = cache_dir

    def files(self) -> list[Path]:
        nested = self.root / "celeba"
        folder = nested / "img_align_celeba" if (nested / "img_align_celeba").is_dir() else self.root
        partition = (nested if folder != self.root else self.root) / "list_eval_partition.txt"
        if not folder.is_dir() or not any(folder.glob("*.jpg")):
            raise ValueError(
                f"no CelebA images under {self.root}: put the aligned JPEGs (img_align_celeba.zip, extracted) in "
                f"{nested}/img_align_celeba/ with list_eval_partition.txt in {nested}/, or point data.root at a "
                "folder of the JPEGs"
            )
        files = sorted(folder.glob("*.jpg"))
        wanted = self.SPLITS[self.split]
        if wanted is None:
            return files
        if not partition.is_file():
            raise ValueError(
                f"data.split={self.split} needs {partition} (CelebA's list_eval_partition.txt); or use data.split=all"
            )
        names = {
            line.split()[0] for line in partition.read_text().splitlines() if line.strip() and line.split()[1] == wanted
        }
        chosen = [f for f in files if f.name in names]
        if not chosen:
            raise ValueError(f"none of the images in {folder} is in the {self.split} split of {partition}")
        return chosen

    def load(self) -> LoadedImages:
        files = subset_files(self.files(), self.n, self.seed)
        key = {
            "source": "celeba",
            "root": str(self.root.resolve()),
            "split": self.split,
            "n": self.n,
            "seed": self.seed,
            "image_size": self.image_size,
            "crop": self.crop,
        }
        arrays = cached_arrays(
            self.cache_dir,
            key,
            files,
            lambda: {"values": load_folder(files, self.image_size, self.channels, crop=self.crop)[0]},
        )
        return LoadedImages(arrays["values"])


class ArraySource:
    """``data=array``: real missingness from a file (NaN = missing) and/or a mask file."""

    def __init__(
        self,
        path: str,
        mask_path: str | None = None,
        key: str | None = None,
        image_size: int | None = None,
        channels: int | None = None,
        n: int | None = None,
        seed: int = 0,
        name: str = "array",
    ):
        if path is None:
            raise ValueError("data=array needs data.path=<.npy, .npz or .pt file>")
        self.path, self.mask_path, self.key, self.name = path, mask_path, key, name
        self.image_size, self.channels, self.n, self.seed = image_size, channels, n, seed

    def load(self) -> LoadedImages:
        values, observed = load_array(self.path, self.mask_path, self.key)
        keep = subset_indices(values.shape[0], self.n, self.seed)
        if keep is not None:
            values, observed = values[keep], observed[keep]
        expected = (self.channels, self.image_size, self.image_size)
        if None not in expected and tuple(values.shape[1:]) != expected:
            raise ValueError(
                f"data.path {self.path} holds images of shape {tuple(values.shape[1:])}: set data.channels and "
                f"data.image_size to match (now {expected})"
            )
        return LoadedImages(values, observed)


class CsvSource:
    """``data=csv``: a table (.csv/.tsv with a header, or .npy) whose blank / NaN / NA cells
    are missing. Numeric columns are imputed, standardised with their observed entries'
    mean and std; text columns pass through. After each round the imputed table is written
    as ``imputed.csv`` in the run directory, in original units (:meth:`export`). A table
    without any missing cell is ground truth: simulate a mask (``mask=entry``)."""

    def __init__(self, path: str, n: int | None = None, seed: int = 0, dim: int | None = None, name: str = "csv"):
        if path is None:
            raise ValueError("data=csv needs data.path=<.csv, .tsv or .npy file>")
        self.path, self.n, self.seed, self.dim, self.name = path, n, seed, dim, name
        self.table, self.stats = None, None

    def load(self) -> LoadedImages:
        table = read_table(self.path)
        keep = subset_indices(table.numeric.shape[0], self.n, self.seed)
        if keep is not None:
            table.rows(keep.tolist())
        if table.numeric.shape[0] < 2:
            raise ValueError(
                f"{self.path}: the table has {table.numeric.shape[0]} row(s); MIRI learns each row's blanks from the "
                "other rows, so it needs at least 2 (in practice hundreds)"
            )
        table.set_aside_constant_columns()
        standardised, mean, std = standardise(table.numeric)
        values, observed = as_tensor(standardised)
        if self.dim is not None and values.shape[1] != self.dim:
            raise ValueError(f"data.dim={self.dim}, but {self.path} has {values.shape[1]} numeric columns")
        self.table, self.stats = table, (mean, std)
        if bool(observed.all()):
            return LoadedImages(values, None, clamp=None)
        warn_empty_rows(observed, table.lines, str(self.path))
        return LoadedImages(values, observed, clamp=None)

    def export(self, imputed: Tensor, observed: Tensor, output_dir: Path) -> Path:
        """``imputed.csv``: the table with its missing numeric cells filled, original units."""
        path = Path(output_dir) / "imputed.csv"
        write_table(path, self.table, imputed, observed, *self.stats)
        return path


class ToySource:
    """``data=toy``: the paper's check, a mixture of two Gaussian clusters in ``dim``
    dimensions, centres ±``separation``/2 on every axis, per-axis std ``spread``, a share
    ``weight`` of the points in the + cluster. The truth is known; mask it with ``mask=entry``."""

    def __init__(
        self,
        n: int = 2000,
        dim: int = 2,
        weight: float = 0.5,
        separation: float = 4.0,
        spread: float = 0.5,
        seed: int = 0,
        name: str = "toy",
    ):
        if n < 2 or dim < 1:
            raise ValueError(f"data.n must be at least 2 and data.dim at least 1, got {n} and {dim}")
        if not 0 < weight < 1 or separation <= 0 or spread <= 0:
            raise ValueError("data.weight must lie in (0, 1), data.separation and data.spread must be positive")
        self.n, self.dim, self.weight, self.separation, self.spread = n, dim, weight, separation, spread
        self.seed, self.name = seed, name

    def load(self) -> LoadedImages:
        generator = torch.Generator().manual_seed(self.seed)
        side = torch.where(torch.rand(self.n, generator=generator) < self.weight, 1.0, -1.0)
        points = side[:, None] * self.separation / 2 + self.spread * torch.randn(self.n, self.dim, generator=generator)
        return LoadedImages(points, None, clamp=None)

    def cluster_share(self, points: Tensor) -> float:
        """The fraction of points nearer the + centre than the - one."""
        return (points.sum(1) > 0).float().mean().item()

    def extra_metrics(self, imputed: Tensor, truth: Tensor) -> dict[str, float]:
        share, true_share = self.cluster_share(imputed), self.cluster_share(truth)
        return {"cluster_share": share, "cluster_share_error": abs(share - true_share)}
