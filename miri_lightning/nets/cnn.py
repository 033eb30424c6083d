"""The paper's velocity field for images: a plain residual CNN with t as an input channel."""

import torch
from torch import Tensor, nn


class ResidualBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1), nn.SiLU(), nn.Conv2d(width, width, 3, padding=1)
        )
        self.act = nn.SiLU()

    def forward(self, h: Tensor) -> Tensor:
        return self.act(h + self.body(h))


class ResidualCNN(nn.Module):
    """v(a, b, o, t) for images, as in the paper's reference code: the source view, the
    partner view, the mask (3C channels, mapped to [-1, 1]) and t as a constant channel go
    through a 3×3 convolution to ``width`` channels, ``blocks`` residual blocks at full
    resolution, and a 3×3 convolution back to C; the output is multiplied by (1 - o)."""

    def __init__(self, channels: int, image_size: int, width: int = 64, blocks: int = 4):
        super().__init__()
        if width < 1 or blocks < 0:
            raise ValueError(f"model.width must be at least 1 and model.blocks at least 0, got {width} and {blocks}")
        self.channels, self.image_size = int(channels), int(image_size)
        self.net = nn.Sequential(
            nn.Conv2d(3 * self.channels + 1, width, 3, padding=1),
            nn.SiLU(),
            *[ResidualBlock(width) for _ in range(blocks)],
            nn.Conv2d(width, self.channels, 3, padding=1),
        )

    @property
    def item_shape(self) -> tuple[int, ...]:
        return (self.channels, self.image_size, self.image_size)

    def forward(self, a: Tensor, b: Tensor, observed: Tensor, t: Tensor) -> Tensor:
        if a.shape[1:] != self.item_shape:
            raise ValueError(
                f"the velocity field was built for images of shape {self.item_shape}, got {tuple(a.shape[1:])}"
            )
        o = observed.to(a.dtype)
        time = t.to(a.dtype).view(-1, 1, 1, 1).expand(-1, 1, *a.shape[2:])
        v = self.net(torch.cat([torch.cat([a, b, o], dim=1) * 2 - 1, time], dim=1))
        return v * (1 - o)
