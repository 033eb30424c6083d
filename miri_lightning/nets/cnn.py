"""The paper's velocity field for images: a residual CNN at full resolution with t as an input
channel, built like the reference implementation (conv–BatchNorm–ReLU, convolutions without bias)."""

import torch
from torch import Tensor, nn


def conv_bn(width_in: int, width_out: int) -> list[nn.Module]:
    """A 3×3 convolution without bias (the BatchNorm after it has the shift) and its BatchNorm."""
    return [nn.Conv2d(width_in, width_out, 3, padding=1, bias=False), nn.BatchNorm2d(width_out)]


class ResidualBlock(nn.Module):
    """relu(h + BN(conv(relu(BN(conv(h))))))."""

    def __init__(self, width: int):
        super().__init__()
        self.body = nn.Sequential(*conv_bn(width, width), nn.ReLU(), *conv_bn(width, width))
        self.act = nn.ReLU()

    def forward(self, h: Tensor) -> Tensor:
        return self.act(h + self.body(h))


class ResidualCNN(nn.Module):
    """v(a, b, o, t) for images, as the paper's reference code builds it: the source view, the
    partner view, the mask (3C channels, mapped to [-1, 1]) and t as a constant channel go
    through conv–BatchNorm–ReLU to ``width`` channels, ``blocks`` residual blocks
    (conv–BN–ReLU–conv–BN plus the input, then ReLU) at full resolution, and a 3×3 convolution
    back to C; every convolution is without bias; the output is multiplied by (1 - o).

    BatchNorm normalises with the batch's statistics in training and with its running averages
    when imputing (the MIRI callback and ``RunFlows`` put the net in eval mode)."""

    def __init__(self, channels: int, image_size: int, width: int = 64, blocks: int = 4):
        super().__init__()
        if width < 1 or blocks < 0:
            raise ValueError(f"model.width must be at least 1 and model.blocks at least 0, got {width} and {blocks}")
        self.channels, self.image_size = int(channels), int(image_size)
        self.net = nn.Sequential(
            *conv_bn(3 * self.channels + 1, width),
            nn.ReLU(),
            *[ResidualBlock(width) for _ in range(blocks)],
            nn.Conv2d(width, self.channels, 3, padding=1, bias=False),
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
