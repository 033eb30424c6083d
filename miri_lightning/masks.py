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
        draw_shape = (shape[0], 1, *shape[2:]) if self.level == "pixel" and len(shape) > 2 else shape
        generator = torch.Generator().manual_seed(self.seed)
        observed = torch.rand(draw_shape, generator=generator) >= self.rate
        return observed.expand(shape).contiguous()

    def __repr__(self) -> str:
        return f"MCARMask(rate={self.rate}, level={self.level!r}, seed={self.seed})"
