"""Sources of images: each loads (N, C, H, W) values in [0, 1] and, when the data come
with their own missingness, the mask. Value range and dtype are settled here, once."""

from dataclasses import dataclass

import torch
from torch import Tensor

from miri_lightning.data.sample import sample_images


@dataclass
class LoadedImages:
    """values: (N, C, H, W) float32 in [0, 1]; observed: (N, C, H, W) bool or None when the
    mask is to be simulated (then ``values`` is the ground truth)."""

    values: Tensor
    observed: Tensor | None = None

    @property
    def has_truth(self) -> bool:
        return self.observed is None


def to_unit_range(images: Tensor) -> Tensor:
    """uint8 (0..255) or float images -> float32 in [0, 1]."""
    if images.dtype == torch.uint8:
        return images.float() / 255.0
    return images.float()


class SampleSource:
    """``data=sample``: the embedded CIFAR-like crops (see :mod:`miri_lightning.data.sample`)."""

    def __init__(self, n: int = 2000, image_size: int = 32, channels: int = 3, seed: int = 0, name: str = "sample"):
        if channels != 3:
            raise ValueError(f"data.channels must be 3 for data=sample (colour photographs), got {channels}")
        self.n, self.image_size, self.channels, self.seed, self.name = n, image_size, channels, seed, name

    def load(self) -> LoadedImages:
        return LoadedImages(to_unit_range(sample_images(self.n, self.image_size, self.seed)))
