"""Imputation metrics on images in [0, 1]: x, truth (N, C, H, W), observed bool, same shape."""

import logging
import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

log = logging.getLogger(__name__)


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


def round_metrics(
    x: Tensor, truth: Tensor, observed: Tensor, mmd_items: int = 1000, swd_items: int = 1000
) -> dict[str, float]:
    """The per-round scalars logged under ``round/`` (docs/runs.md, TensorBoard); for vectors (N, d),
    those that make sense in standardised units: RMSE and MAE on missing entries, MMD. For
    images the energy score of the one draw (:func:`energy_score` with K = 1) and the SWD
    (:func:`sliced_wasserstein`, its mean and each level) of at most ``swd_items`` evenly
    spaced images, 32 patches each: the realism of the store, which holds one draw per item."""
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
        "energy_score": energy_score(x[None], truth, observed).item(),
        **sliced_wasserstein(*evenly_spaced((x, truth), swd_items), patches_per_image=32),
    }


def evenly_spaced(tensors: tuple[Tensor, ...], items: int) -> tuple[Tensor, ...]:
    """At most ``items`` evenly spaced items of each tensor (N, ...) (the same ones)."""
    n = tensors[0].shape[0]
    if n <= items:
        return tensors
    chosen = torch.linspace(0, n - 1, items).round().long()
    return tuple(t[chosen.to(t.device)] for t in tensors)


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


# -- probabilistic scores of K draws ------------------------------------------------------


def crps_missing(samples: Tensor, truth: Tensor, observed: Tensor, chunk: int = 1 << 20) -> Tensor:
    """CRPS on the missing entries, from K draws, averaged over the missing entries of the set.

    samples: (K, N, ...) draws of the imputation; truth, observed: (N, ...). The unbiased
    ("fair") ensemble estimator, per entry E|X - y| - 1/2 E|X - X'|, the pair term averaged
    over the K(K-1) ordered pairs of distinct draws (Ferro 2014), so that it estimates the
    CRPS of the distribution the draws come from, not of the K-point ensemble. With K = 1
    (a point method: mean, biharmonic) it is the MAE. The pair sum uses the sorted draws:
    sum_{k<l} |x_k - x_l| = sum_i (2i - K - 1) x_(i).
    """
    k = samples.shape[0]
    missing = ~observed.bool()
    draws = samples[:, missing].double()  # (K, M)
    y = truth[missing].double()
    weights = (2 * torch.arange(1, k + 1, dtype=torch.float64, device=draws.device) - k - 1).unsqueeze(1)
    total = torch.zeros((), dtype=torch.float64, device=draws.device)
    for start in range(0, y.numel(), chunk):
        part = draws[:, start : start + chunk]
        skill = (part - y[start : start + chunk]).abs().mean(0)
        pairs = (weights * part.sort(0).values).sum(0) / (k * (k - 1)) if k > 1 else 0.0
        total += (skill - pairs).sum()
    return (total / max(y.numel(), 1)).float()


def spread_skill(samples: Tensor, truth: Tensor, observed: Tensor) -> Tensor:
    """Spread–skill ratio of K ≥ 2 draws on the missing entries:
    sqrt((K + 1) / K) × sqrt(mean unbiased variance of the draws) / RMSE of their mean.

    samples: (K, N, ...); truth, observed: (N, ...). When the truth is exchangeable with the
    draws (a calibrated sampler) the mean's squared error is the variance × (1 + 1/K), so the
    ratio is ≈ 1; it tends to 0 when the draws collapse onto one image, and exceeds 1 when
    they spread more than their error.
    """
    k = samples.shape[0]
    if k < 2:
        raise ValueError(f"the spread–skill ratio needs K ≥ 2 draws, got {k}")
    missing = ~observed.bool()
    draws = samples[:, missing].double()
    spread = draws.var(0, unbiased=True).mean().sqrt()
    skill = (draws.mean(0) - truth[missing].double()).square().mean().sqrt()
    return (math.sqrt((k + 1) / k) * spread / skill.clamp_min(1e-12)).float()


#: The energy score's windows on images: non-overlapping ENERGY_PATCH² squares, all channels.
ENERGY_PATCH = 5


def _windows(x: Tensor, patch: int) -> Tensor:
    """(N, D, L): the L non-overlapping patch×patch windows (D = C patch² values) of images x
    (N, C, H, W), the rightmost and lowest rows that do not fill a window left out; vectors
    x (N, d) are one window each, (N, d, 1)."""
    if x.dim() == 2:
        return x.unsqueeze(-1)
    patch = min(patch, *x.shape[-2:])
    return torch.nn.functional.unfold(x, patch, stride=patch)


def energy_score(
    samples: Tensor, truth: Tensor, observed: Tensor, patch: int = ENERGY_PATCH, chunk: int = 256
) -> Tensor:
    """Energy score (Gneiting & Raftery 2007) of K draws on windows of the missing region: the
    multivariate CRPS, which sees the draws' joint structure (a window of independent
    per-pixel noise scores worse than a coherent one with the same per-pixel spread).

    samples: (K, N, C, H, W) or (K, N, d); truth, observed: (N, ...). Per window (non-overlapping
    ``patch``×``patch``, all channels; a table row is one window) that holds a missing entry,
    the fair estimator mean_k ‖x_k − y‖ − 1/(2K(K−1)) Σ_{k≠l} ‖x_k − x_l‖, averaged over those
    windows. The draws hold the data on observed entries, so only the missing ones count. With
    K = 1 (a point imputation) it is the mean Euclidean error of a window.
    """
    k = samples.shape[0]
    total, count = torch.zeros((), dtype=torch.float64), 0
    for start in range(0, truth.shape[0], chunk):
        part = slice(start, start + chunk)
        keep = (_windows((~observed[part].bool()).float(), patch).sum(1) > 0).cpu()  # (n, L)
        y = _windows(truth[part].double(), patch)
        draws = [_windows(torch.where(observed[part].bool(), truth[part], s[part]).double(), patch) for s in samples]
        score = sum((d - y).norm(dim=1) for d in draws) / k
        if k > 1:
            pairs = sum((draws[a] - draws[b]).norm(dim=1) for a in range(k) for b in range(a + 1, k))
            score = score - pairs / (k * (k - 1))  # ½ × 2 Σ_{k<l} / (K(K − 1))
        total += score.cpu()[keep].sum()
        count += int(keep.sum())
    return (total / max(count, 1)).float()


# -- realism: multi-scale sliced Wasserstein distance ---------------------------------------

#: The 5-tap binomial kernel of cv2.pyrDown, as Karras et al. (2018) use it.
_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16


def _blur(x: Tensor) -> Tensor:
    """x (N, C, H, W) filtered by the separable 5×5 binomial kernel, reflected borders."""
    c = x.shape[1]
    k = _BINOMIAL.to(x)
    x = F.pad(x, (2, 2, 2, 2), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, 5).expand(c, 1, 1, 5), groups=c)
    return F.conv2d(x, k.view(1, 1, 5, 1).expand(c, 1, 5, 1), groups=c)


def laplacian_pyramid(x: Tensor, levels: int) -> list[Tensor]:
    """The Laplacian pyramid of x (N, C, H, W): ``levels`` tensors, the finest first, each a
    band of detail (the level minus the upsampled next one) and the last the low-pass
    residual at H / 2^(levels-1). H and W must be divisible by 2^(levels-1)."""
    pyramid = [x]
    for _ in range(1, levels):
        down = _blur(pyramid[-1])[:, :, ::2, ::2]
        up = torch.zeros_like(pyramid[-1])
        up[:, :, ::2, ::2] = down
        pyramid[-1] = pyramid[-1] - 4 * _blur(up)
        pyramid.append(down)
    return pyramid


def _patches(level: Tensor, per_image: int, size: int, generator: torch.Generator) -> Tensor:
    """``per_image`` random size×size patches of every image of level (N, C, h, w), as rows
    (N·per_image, C·size²), channel-major."""
    n, c, h, w = level.shape
    rows = torch.randint(0, h - size + 1, (n, per_image), generator=generator)
    cols = torch.randint(0, w - size + 1, (n, per_image), generator=generator)
    offsets = torch.arange(size)
    r = (rows[..., None] + offsets).view(n, per_image, size, 1).expand(n, per_image, size, size)
    q = (cols[..., None] + offsets).view(n, per_image, 1, size).expand(n, per_image, size, size)
    flat = (r * w + q).reshape(n, 1, -1).expand(n, c, -1)  # (N, C, per_image·size²)
    picked = level.reshape(n, c, h * w).gather(2, flat.to(level.device))
    return picked.view(n, c, per_image, size * size).permute(0, 2, 1, 3).reshape(n * per_image, c * size * size)


_said_fewer_levels: set[tuple[int, int, int]] = set()


def pyramid_levels(size: int, levels: int, patch: int = 7) -> int:
    """How many of ``levels`` an image of side ``size`` allows: the coarsest level at least
    patch + 1 pixels wide, the side divisible by 2^(levels-1). Fewer levels are said once."""
    usable = 1
    while usable < levels and size % 2**usable == 0 and size // 2**usable >= patch + 1:
        usable += 1
    if usable < levels and (size, levels, patch) not in _said_fewer_levels:
        _said_fewer_levels.add((size, levels, patch))
        log.warning(
            f"SWD: {size}×{size} images allow {usable} pyramid level(s) of {patch}×{patch} patches, not {levels}"
        )
    return usable


def sliced_wasserstein(
    x: Tensor,
    reference: Tensor,
    levels: int = 3,
    patch: int = 7,
    patches_per_image: int = 64,
    projections: int = 512,
    seed: int = 0,
) -> dict[str, float]:
    """Multi-scale sliced Wasserstein distance (Karras et al. 2018, the progressive GAN's
    SWD) between the images x (N, C, H, W) and ``reference`` (M, C, H, W), both in [0, 1].

    Per level of their Laplacian pyramids (finest first; fewer when the images are too
    small, said once): ``patches_per_image`` random patch×patch patches of each image, drawn
    independently for the two sets, normalised per channel with the reference's patch mean
    and std at that level (one map for both sets, so that a loss of contrast counts; Karras
    normalises each set by its own), projected on ``projections`` random unit directions;
    the level's distance is the mean over directions of the mean |difference| of the sorted
    projections (the 1-D Wasserstein-1 distance), × 1000 as Karras reports it. Returns
    {"swd_<side>": one per level (its side in pixels), "swd": their mean}. Two independent
    patch draws from the same images do not score 0: ``sliced_wasserstein(ref, ref)`` is the
    estimate's floor.
    """
    if x.dim() != 4 or reference.dim() != 4 or x.shape[1:] != reference.shape[1:]:
        raise ValueError(
            f"SWD compares image sets of one shape (N, C, H, W): got {tuple(x.shape)}, {tuple(reference.shape)}"
        )
    levels = pyramid_levels(min(x.shape[-2:]), levels, patch)
    generator = torch.Generator().manual_seed(seed)
    out: dict[str, float] = {}
    pyramids = laplacian_pyramid(x.float(), levels), laplacian_pyramid(reference.float(), levels)
    for a, b in zip(*pyramids, strict=True):
        pa = _patches(a, patches_per_image, patch, generator)
        pb = _patches(b, patches_per_image, patch, generator)
        channels = b.shape[1]
        per_channel = pb.view(len(pb), channels, -1)
        mean = per_channel.mean((0, 2)).repeat_interleave(patch * patch)
        std = per_channel.std((0, 2)).clamp_min(1e-8).repeat_interleave(patch * patch)
        pa, pb = (pa - mean) / std, (pb - mean) / std
        directions = torch.randn(pa.shape[1], projections, generator=generator)
        directions = (directions / directions.norm(dim=0, keepdim=True)).to(pa.device)
        # (projections, patches), each row sorted: the projections' empirical quantiles
        qa, qb = ((p @ directions).T.contiguous().sort(1).values for p in (pa, pb))
        if qa.shape[1] != qb.shape[1]:  # sets of different sizes: the same quantiles of each
            m = min(qa.shape[1], qb.shape[1])
            qa, qb = (q[:, torch.linspace(0, q.shape[1] - 1, m, device=q.device).round().long()] for q in (qa, qb))
        out[f"swd_{a.shape[-1]}"] = 1000 * (qa - qb).abs().double().mean().item()
    out["swd"] = sum(out.values()) / len(out)
    return out
