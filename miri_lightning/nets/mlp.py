"""An MLP velocity field for vectors (table rows, toy points)."""

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class VelocityMLP(nn.Module):
    """v(a, b, o, t) for vectors: (B, dim) views and mask, t (B,) -> (B, dim).

    Input: the source view, the partner view, the mask and t, concatenated (3·dim + 1);
    hidden layers of ``widths`` with SiLU; the output is multiplied by (1 - o), so the
    velocity is exactly zero on observed entries. ``dim`` null in the config: taken from the
    data when the run is built.
    """

    def __init__(self, dim: int, widths: Sequence[int] = (256, 256, 256)):
        super().__init__()
        if dim is None or int(dim) < 1:
            raise ValueError(f"model.dim must be the number of columns (at least 1), got {dim}")
        widths = [int(w) for w in widths]
        if not widths or min(widths) < 1:
            raise ValueError(f"model.widths must list at least one positive width, got {widths}")
        self.dim = int(dim)
        layers, width_in = [], 3 * self.dim + 1
        for width in widths:
            layers += [nn.Linear(width_in, width), nn.SiLU()]
            width_in = width
        layers.append(nn.Linear(width_in, self.dim))
        self.net = nn.Sequential(*layers)

    @property
    def item_shape(self) -> tuple[int, ...]:
        return (self.dim,)

    def forward(self, a: Tensor, b: Tensor, observed: Tensor, t: Tensor) -> Tensor:
        if a.shape[1:] != (self.dim,):
            raise ValueError(
                f"the velocity field was built for vectors of {self.dim} entries, got {tuple(a.shape[1:])}"
            )
        o = observed.to(a.dtype)
        v = self.net(torch.cat([a, b, o, t.to(a.dtype).view(-1, 1)], dim=1))
        return v * (1 - o)
