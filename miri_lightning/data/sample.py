"""The embedded data set: CIFAR-like 32×32 RGB crops of the photographs scikit-image ships."""

from functools import lru_cache

import numpy as np
import skimage.data
import torch
from skimage.transform import resize
from torch import Tensor

#: The colour photographs in scikit-image's wheel (no download needed).
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "motorcycle")

#: Each photo is downscaled so that its shorter side has one of these lengths, in multiples of
#: the crop size: a crop then holds a whole object or scene, as in CIFAR, not a texture patch.
SCALES = (2.0, 3.0, 4.0)


def _photo(name: str) -> np.ndarray:
    if name == "motorcycle":
        return skimage.data.stereo_motorcycle()[0]
    return getattr(skimage.data, name)()


@lru_cache(maxsize=4)
def _pyramids(image_size: int) -> tuple[tuple[np.ndarray, ...], ...]:
    """Each photo downscaled to every scale of ``SCALES`` for crops of ``image_size`` (float32,
    H×W×3), decoded and resized once per process: the anti-aliased resizing of the full-size
    photographs is most of the cost of a small sample. Read-only: callers copy what they take."""
    pyramids = []
    for name in PHOTOS:
        photo = _photo(name)
        short = min(photo.shape[:2])
        levels = []
        for scale in SCALES:
            factor = scale * image_size / short
            out = (round(photo.shape[0] * factor), round(photo.shape[1] * factor))
            level = resize(photo, out, anti_aliasing=True, preserve_range=True).astype(np.float32)
            level.setflags(write=False)
            levels.append(level)
        pyramids.append(tuple(levels))
    return tuple(pyramids)


def sample_images(n: int = 2000, image_size: int = 32, seed: int = 0) -> Tensor:
    """``n`` crops (n, 3, image_size, image_size), uint8, the same for the same arguments.

    Crops are spread evenly over the photos and scales, at random positions, half of them
    mirrored.
    """
    if n < 1:
        raise ValueError(f"data.n must be at least 1, got {n}")
    if image_size < 8:
        raise ValueError(f"data.image_size must be at least 8 for the sample set, got {image_size}")
    rng = np.random.default_rng(seed)
    pyramids = _pyramids(image_size)
    crops = np.empty((n, image_size, image_size, 3), np.uint8)
    for i in range(n):
        level = pyramids[i % len(PHOTOS)][rng.integers(len(SCALES))]
        y = rng.integers(level.shape[0] - image_size + 1)
        x = rng.integers(level.shape[1] - image_size + 1)
        crop = level[y : y + image_size, x : x + image_size]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        crops[i] = np.clip(np.rint(crop), 0, 255)
    return torch.from_numpy(crops).permute(0, 3, 1, 2).contiguous()
