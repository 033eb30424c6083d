"""Any folder tree of images, converted to RGB or grayscale and fitted to a square size."""

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def image_files(root: str | Path) -> list[Path]:
    """The image files under ``root`` (recursively, by extension), sorted."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ValueError(f"data.root {root} is not a folder")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())
    if not files:
        raise ValueError(f"data.root {root} holds no image files ({', '.join(sorted(EXTENSIONS))})")
    return files


def read_image(
    path: Path, image_size: int, channels: int, crop: int | None = None, resample=Image.Resampling.BICUBIC
) -> np.ndarray:
    """(channels, image_size, image_size) uint8: converted, centre-cropped to a square (of
    side ``crop`` if given, else the largest) and resized."""
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image).convert("RGB" if channels == 3 else "L")
        if crop is not None:
            left, top = (image.width - crop) // 2, (image.height - crop) // 2
            image = image.crop((left, top, left + crop, top + crop))
        image = ImageOps.fit(image, (image_size, image_size), method=resample)
        array = np.asarray(image, dtype=np.uint8)
    return array.reshape(image_size, image_size, channels).transpose(2, 0, 1)


def find_mask(image: Path, root: Path, mask_root: Path) -> Path:
    """The mask image of ``image``: same relative path and name, any image extension."""
    relative = image.relative_to(root).with_suffix("")
    for candidate in sorted((mask_root / relative.parent).glob(relative.name + ".*")):
        if candidate.suffix.lower() in EXTENSIONS:
            return candidate
    raise ValueError(f"no mask image for {image} in data.mask_root {mask_root} (expected {relative}.png or similar)")


def load_masks(files: list[Path], root: Path, mask_root: Path, image_size: int, channels: int) -> Tensor:
    """(N, C, H, W) bool: nonzero (white) pixels of the mask images are observed, black ones
    missing; a mask covers all channels of its image."""
    masks = [read_image(find_mask(f, root, mask_root), image_size, 1, resample=Image.Resampling.NEAREST) for f in files]
    return torch.from_numpy(np.stack(masks) > 0).expand(-1, channels, -1, -1).contiguous()


def load_folder(
    files: list[Path], image_size: int, channels: int, crop: int | None = None
) -> tuple[Tensor, list[Path]]:
    """(N, C, H, W) uint8 of the readable files, and those files; a file that cannot be read
    as an image is skipped with a warning that names it. Decoding runs in threads."""
    if channels not in (1, 3):
        raise ValueError(f"data.channels must be 1 (grayscale) or 3 (RGB), got {channels}")

    def read(path: Path) -> np.ndarray | None:
        try:
            return read_image(path, image_size, channels, crop)
        except (UnidentifiedImageError, OSError, ValueError) as error:
            warnings.warn(f"skipping {path}: not a readable image ({error})", stacklevel=2)
            return None

    with ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as pool:
        images = list(pool.map(read, files))
    kept = [path for path, image in zip(files, images, strict=True) if image is not None]
    if not kept:
        raise ValueError(f"none of the {len(files)} image files under {files[0].parent} could be read")
    return torch.from_numpy(np.stack([image for image in images if image is not None])), kept
