"""Arrays with real missingness: NaN marks a missing entry, or a separate mask array."""

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor


def read_array(path: str | Path, key: str | None = None) -> np.ndarray:
    """A .npy, .npz (one array, or ``key``) or .pt (a tensor) file, without pickle."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ValueError(f"{path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                names = list(archive.keys())
                if key is None and len(names) != 1:
                    raise ValueError(f"it holds the arrays {names}: name one with data.key")
                return archive[key or names[0]]
        if suffix == ".pt":
            value = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(value, Tensor):
                raise ValueError(f"it holds a {type(value).__name__}, not a tensor")
            return value.numpy()
    except Exception as error:
        raise ValueError(f"cannot read the array {path}: {error}") from error
    raise ValueError(f"{path}: arrays must be .npy, .npz or .pt files")


def to_nchw(array: np.ndarray, path: Path, what: str) -> np.ndarray:
    """N×C×H×W, N×H×W×C (C = 1 or 3) or N×H×W (grayscale) -> N×C×H×W."""
    if array.ndim == 3:
        return array[:, None]
    if array.ndim == 4:
        if array.shape[1] in (1, 3):
            return array
        if array.shape[-1] in (1, 3):
            return np.moveaxis(array, -1, 1)
    raise ValueError(f"{what} {path} has shape {array.shape}: expected N×C×H×W, N×H×W×C (C = 1 or 3) or N×H×W images")


def load_array(path: str | Path, mask_path: str | Path | None = None, key: str | None = None):
    """(values (N, C, H, W) float32 in [0, 1] with 0 where missing, observed bool)."""
    path = Path(path).expanduser()
    raw = to_nchw(read_array(path, key), path, "data.path")
    values = torch.from_numpy(np.ascontiguousarray(raw))
    if values.dtype == torch.uint8:
        values = values.float() / 255
    elif values.is_floating_point() or values.dtype in (torch.int16, torch.int32, torch.int64):
        values = values.double()
    else:
        raise ValueError(f"data.path {path} holds {values.dtype} values: expected numbers")
    observed = ~torch.isnan(values)
    if mask_path is not None:
        mask_path = Path(mask_path).expanduser()
        given = torch.from_numpy(np.ascontiguousarray(to_nchw(read_array(mask_path), mask_path, "data.mask_path")))
        if given.shape[1] == 1 and values.shape[1] > 1:
            given = given.expand(-1, values.shape[1], -1, -1)
        if given.shape != values.shape:
            raise ValueError(
                f"data.mask_path {mask_path} has shape {tuple(given.shape)} but the images have {tuple(values.shape)}"
            )
        observed = observed & given.bool()
    seen = values[observed]
    if seen.numel() and (seen.min() < 0 or seen.max() > 1):
        if seen.min() >= 0 and seen.max() <= 255:
            values = values / 255  # 0..255 floats
        else:
            raise ValueError(
                f"data.path {path} holds values in [{seen.min():.3g}, {seen.max():.3g}]: images must be in [0, 1] "
                "or 0..255"
            )
    empty = int((~observed).flatten(1).all(1).sum())
    if empty:
        warnings.warn(
            f"{empty} images of {path} have every entry missing: MIRI fills them from the others", stacklevel=2
        )
    return torch.where(observed, values, 0).float(), observed
