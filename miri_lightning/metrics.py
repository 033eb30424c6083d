"""Imputation metrics on images in [0, 1]: x, truth (N, C, H, W), observed bool, same shape."""

import torch
from torch import Tensor
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure


def mse_missing(x: Tensor, truth: Tensor, observed: Tensor) -> Tensor:
    """Mean squared error over the missing entries of the whole set."""
    missing = ~observed.bool()
    return ((x - truth)[missing] ** 2).mean()


def psnr_missing(x: Tensor, truth: Tensor, observed: Tensor) -> Tensor:
    """PSNR (dB, data range 1) of the missing entries, pooled over the set."""
    return -10 * torch.log10(mse_missing(x, truth, observed))


def rmse_missing(x: Tensor, truth: Tensor, observed: Tensor) -> Tensor:
    return mse_missing(x, truth, observed).sqrt()


def psnr_full(x: Tensor, truth: Tensor) -> Tensor:
    """PSNR (dB) over all entries, pooled over the set (torchmetrics)."""
    return peak_signal_noise_ratio(x, truth, data_range=1.0)


def ssim(x: Tensor, truth: Tensor, batch_size: int = 1024) -> Tensor:
    """Mean SSIM of the full images (torchmetrics, Gaussian window 11, data range 1)."""
    total = torch.zeros((), dtype=torch.float64)
    for start in range(0, x.shape[0], batch_size):
        part = structural_similarity_index_measure(
            x[start : start + batch_size], truth[start : start + batch_size], data_range=1.0, reduction="sum"
        )
        total += part.double()
    return (total / x.shape[0]).float()


def round_metrics(x: Tensor, truth: Tensor, observed: Tensor) -> dict[str, float]:
    """The per-round scalars logged under ``round/`` (DESIGN.md §3)."""
    return {
        "psnr_missing": psnr_missing(x, truth, observed).item(),
        "psnr_full": psnr_full(x, truth).item(),
        "rmse_missing": rmse_missing(x, truth, observed).item(),
        "ssim": ssim(x, truth).item(),
    }
