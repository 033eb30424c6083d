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
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    for start in range(0, x.shape[0], batch_size):
        part = structural_similarity_index_measure(
            x[start : start + batch_size], truth[start : start + batch_size], data_range=1.0, reduction="sum"
        )
        total += part.double()
    return (total / x.shape[0]).float()


def round_metrics(x: Tensor, truth: Tensor, observed: Tensor, mmd_items: int = 1000) -> dict[str, float]:
    """The per-round scalars logged under ``round/`` (README.md, TensorBoard); for vectors (N, d),
    those that make sense in standardised units: RMSE and MAE on missing entries, MMD."""
    if x.dim() == 2:
        return {
            "rmse_missing": rmse_missing(x, truth, observed).item(),
            "mae_missing": mae_missing(x, truth, observed).item(),
            "mmd": mmd(x, truth, mmd_items).item(),
        }
    return {
        "psnr_missing": psnr_missing(x, truth, observed).item(),
        "psnr_full": psnr_full(x, truth).item(),
        "rmse_missing": rmse_missing(x, truth, observed).item(),
        "ssim": ssim(x, truth).item(),
        "ssim_missing": ssim_missing(x, truth, observed).item(),
        "mae_missing": mae_missing(x, truth, observed).item(),
        "mmd": mmd(x, truth, mmd_items).item(),
    }


def mae_missing(x: Tensor, truth: Tensor, observed: Tensor) -> Tensor:
    """Mean absolute error over the missing entries of the whole set."""
    return (x - truth)[~observed.bool()].abs().mean()


def ssim_missing(x: Tensor, truth: Tensor, observed: Tensor, batch_size: int = 1024) -> Tensor:
    """SSIM averaged over the missing entries only: the full SSIM map, read where o = 0."""
    total, count = torch.zeros((), dtype=torch.float64, device=x.device), 0
    for start in range(0, x.shape[0], batch_size):
        part = slice(start, start + batch_size)
        _, ssim_map = structural_similarity_index_measure(
            x[part], truth[part], data_range=1.0, reduction="none", return_full_image=True
        )
        missing = ~observed[part].bool()
        total += ssim_map[missing].double().sum()
        count += int(missing.sum())
    return (total / max(count, 1)).float()


def mmd(x: Tensor, y: Tensor, max_items: int = 1000, seed: int = 0) -> Tensor:
    """Squared maximum mean discrepancy (unbiased) between two sets of items, flattened,
    with a Gaussian RBF kernel whose bandwidth is the median pairwise distance of the pooled
    sample (median heuristic). Each set is subsampled to at most ``max_items`` items."""
    generator = torch.Generator().manual_seed(seed)

    def sample(z: Tensor) -> Tensor:
        z = z.flatten(1).double()
        if z.shape[0] > max_items:
            z = z[torch.randperm(z.shape[0], generator=generator)[:max_items]]
        return z

    x, y = sample(x), sample(y)
    m, n = x.shape[0], y.shape[0]
    if m < 2 or n < 2:
        raise ValueError("MMD needs at least two items in each set")
    distances = torch.cdist(torch.cat([x, y]), torch.cat([x, y])) ** 2
    off_diagonal = distances[~torch.eye(m + n, dtype=torch.bool)]
    bandwidth = off_diagonal.median().clamp_min(1e-12)
    kernel = torch.exp(-distances / bandwidth)
    kxx, kyy, kxy = kernel[:m, :m], kernel[m:, m:], kernel[:m, m:]
    return (
        (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
        + (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
        - 2 * kxy.mean()
    ).float()


def frechet_distance(features_x: Tensor, features_y: Tensor) -> Tensor:
    """Fréchet distance between Gaussians fitted to two feature sets (N, D): FID when the
    features are Inception-v3's 2048-d pool features."""
    fx, fy = features_x.double(), features_y.double()
    mu_x, mu_y = fx.mean(0), fy.mean(0)
    cov_x, cov_y = torch.cov(fx.T), torch.cov(fy.T)
    # tr sqrt(Σx Σy) = Σ sqrt(eigenvalues of Σx Σy), real and non-negative up to round-off
    sqrt_trace = torch.linalg.eigvals(cov_x @ cov_y).sqrt().real.sum()
    return ((mu_x - mu_y).square().sum() + cov_x.trace() + cov_y.trace() - 2 * sqrt_trace).float()
