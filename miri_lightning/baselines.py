"""Cheap imputations to compare MIRI with, on the same data and masks.

Each takes x (N, C, H, W) in [0, 1] (only observed entries are read) and observed (bool,
same shape) and returns the imputed set, equal to x on observed entries.
"""

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt
from skimage.restoration import inpaint_biharmonic
from torch import Tensor

from miri_lightning import flow


def mean_fill(x: Tensor, observed: Tensor) -> Tensor:
    """Each missing entry gets its channel's mean over all observed entries of the set."""
    return flow.initial_fill(x, observed, "mean")


def harmonic_fill(x: Tensor, observed: Tensor) -> Tensor:
    """The harmonic interpolation that ``miri.init=interp`` starts from (batched torch)."""
    return flow.initial_fill(x, observed, "interp")


def _per_image(x: Tensor, observed: Tensor, fill_image) -> Tensor:
    """Apply ``fill_image(image (C, H, W) ndarray, missing (C, H, W) bool ndarray)`` to every
    image; channels without any observed entry get the set's mean."""
    fallback = mean_fill(x, observed)
    out = fallback.clone()
    for i in range(x.shape[0]):
        missing = ~observed[i].numpy()
        if not missing.any():
            continue
        usable = ~missing.all(axis=(1, 2))  # channels with something observed
        if not usable.any():
            continue
        image = x[i].numpy().astype(np.float64)
        filled = fill_image(image[usable], missing[usable])
        out[i, torch.from_numpy(usable)] = torch.from_numpy(filled).to(out.dtype)
    return torch.where(observed, x, out.clamp(0, 1))


def nearest_fill(x: Tensor, observed: Tensor) -> Tensor:
    """Each missing entry copies the nearest observed pixel of its own image and channel."""

    def fill(image: np.ndarray, missing: np.ndarray) -> np.ndarray:
        out = np.empty_like(image)
        for c in range(image.shape[0]):
            rows, cols = distance_transform_edt(missing[c], return_distances=False, return_indices=True)
            out[c] = image[c][rows, cols]
        return out

    return _per_image(x, observed, fill)


def biharmonic_fill(x: Tensor, observed: Tensor) -> Tensor:
    """Biharmonic inpainting (scikit-image), all channels at once when they share a mask."""

    def fill(image: np.ndarray, missing: np.ndarray) -> np.ndarray:
        if (missing == missing[:1]).all():
            return np.moveaxis(inpaint_biharmonic(np.moveaxis(image, 0, -1), missing[0], channel_axis=-1), -1, 0)
        return np.stack([inpaint_biharmonic(image[c], missing[c]) for c in range(image.shape[0])])

    return _per_image(x, observed, fill)


BASELINES = {
    "mean": mean_fill,
    "nearest": nearest_fill,
    "harmonic": harmonic_fill,
    "biharmonic": biharmonic_fill,
}
