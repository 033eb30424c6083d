"""MINE: a lower bound on the mutual information between imputed data and their masks
(Belghazi et al., 2018), the quantity MIRI reduces round after round (the paper's Fig. 1d)."""

import math

import torch
from torch import Tensor, nn


class StatisticsNetwork(nn.Module):
    """T(x, o) for images: a small CNN over the image and its mask, to a scalar."""

    def __init__(self, channels: int, width: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(2 * channels, width, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(width, 1),
        )

    def forward(self, x: Tensor, observed: Tensor) -> Tensor:
        return self.net(torch.cat([x, observed.to(x.dtype)], 1)).squeeze(1)


def donsker_varadhan(t_joint: Tensor, t_marginal: Tensor) -> Tensor:
    """E_joint[T] - log E_marginal[exp T], the bound MINE maximises."""
    return t_joint.mean() - (torch.logsumexp(t_marginal, 0) - math.log(t_marginal.shape[0]))


def mine_estimate(
    x: Tensor, observed: Tensor, steps: int = 300, batch_size: int = 128, lr: float = 1e-3, seed: int = 0
) -> float:
    """Estimate I(x; o) in nats for a set x (N, C, H, W) and its masks o: train T on pairs
    (x_i, o_i) against (x_i, o_j) with j shuffled, then evaluate the bound on the whole set."""
    if steps < 1:
        raise ValueError(f"metrics.mine_steps must be at least 1 to estimate, got {steps}")
    if x.dim() != 4:
        raise ValueError("metrics.mine_steps: the MINE critic is for images (N, C, H, W); set it to 0 for tables")
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        critic = StatisticsNetwork(x.shape[1]).to(x.device)
    optimizer = torch.optim.Adam(critic.parameters(), lr=lr)
    n = x.shape[0]
    for _ in range(steps):
        i = torch.randint(n, (batch_size,), generator=generator)
        j = torch.randint(n, (batch_size,), generator=generator)
        loss = -donsker_varadhan(critic(x[i], observed[i]), critic(x[i], observed[j]))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        shuffled = torch.randperm(n, generator=generator)
        t_joint = torch.cat([critic(x[k : k + 512], observed[k : k + 512]) for k in range(0, n, 512)])
        t_marginal = torch.cat([critic(x[k : k + 512], observed[shuffled[k : k + 512]]) for k in range(0, n, 512)])
        return max(donsker_varadhan(t_joint, t_marginal).item(), 0.0)
