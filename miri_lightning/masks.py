"""Observation masks, seeded and reproducible. Convention: True = observed, False = missing."""

import torch
from torch import Tensor

MCAR_LEVELS = ("pixel", "channel")


class MCARMask:
    """Missing completely at random, at a given missing ``rate``.

    ``level="pixel"``: a pixel is missing in all its channels together (dim 1 is the channel
    dim); ``level="channel"``: every entry is missing on its own. The same ``seed`` and shape
    give the same mask.
    """

    CHUNK = 4096

    def __init__(self, rate: float, level: str = "pixel", seed: int = 0, name: str | None = None):
        if not 0.0 < float(rate) < 1.0:
            raise ValueError(f"mask.rate is the missing fraction and must lie in (0, 1), got {rate}")
        if level not in MCAR_LEVELS:
            raise ValueError(f"mask.level must be one of {MCAR_LEVELS}, got {level!r}")
        self.rate, self.level, self.seed = float(rate), level, int(seed)
        self.name = name or level

    def __call__(self, shape: tuple[int, ...]) -> Tensor:
        """A bool mask of ``shape`` (N, C, ...): True where the entry is observed."""
        shape = tuple(shape)
        draw_shape = (1, *shape[2:]) if self.level == "pixel" and len(shape) > 2 else shape[1:]
        generator = torch.Generator().manual_seed(self.seed)
        observed = torch.empty(shape, dtype=torch.bool)
        for start in range(0, shape[0], self.CHUNK):  # no float copy of a whole large set
            count = min(self.CHUNK, shape[0] - start)
            observed[start : start + count] = torch.rand((count, *draw_shape), generator=generator) >= self.rate
        return observed

    def __repr__(self) -> str:
        return f"MCARMask(rate={self.rate}, level={self.level!r}, seed={self.seed})"


class BlockMask:
    """Random square holes: each image loses ``holes`` squares of ``size``×``size`` pixels
    (all channels), placed uniformly at random (they may overlap)."""

    def __init__(self, size: int = 8, holes: int = 1, seed: int = 0, name: str = "block"):
        if size < 1 or holes < 1:
            raise ValueError(f"mask.size and mask.holes must be at least 1, got {size} and {holes}")
        self.size, self.holes, self.seed, self.name = int(size), int(holes), int(seed), name

    def __call__(self, shape: tuple[int, ...]) -> Tensor:
        n, c, h, w = shape
        if self.size >= min(h, w):
            raise ValueError(f"mask.size={self.size} leaves nothing observed in {h}×{w} images: make it smaller")
        generator = torch.Generator().manual_seed(self.seed)
        observed = torch.ones((n, 1, h, w), dtype=torch.bool)
        tops = torch.randint(h - self.size + 1, (n, self.holes), generator=generator)
        lefts = torch.randint(w - self.size + 1, (n, self.holes), generator=generator)
        rows, cols = torch.arange(h).view(1, 1, h, 1), torch.arange(w).view(1, 1, 1, w)
        for k in range(self.holes):
            top, left = tops[:, k].view(n, 1, 1, 1), lefts[:, k].view(n, 1, 1, 1)
            hole = (rows >= top) & (rows < top + self.size) & (cols >= left) & (cols < left + self.size)
            observed &= ~hole
        return observed.expand(shape).contiguous()


class GivenMask:
    """``mask=given``: the mask comes with the data (an array's NaN or mask file, mask
    images beside a folder); there is nothing to draw."""

    name = "given"

    def __init__(self, name: str = "given"):
        self.name = name

    def __call__(self, shape: tuple[int, ...]) -> Tensor:
        raise ValueError(
            "mask=given, but these data come without a mask: use data=array (NaN or data.mask_path) or "
            "data=folder with data.mask_root, a table with blank cells, or simulate one with "
            "mask=pixel|channel|block (images) or mask=entry (tables, points)"
        )
