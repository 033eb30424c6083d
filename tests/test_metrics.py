import math

import numpy as np
import pytest
import scipy.linalg
import torch

from miri_lightning import metrics
from miri_lightning.baselines import biharmonic_fill, mean_fill, nearest_fill
from miri_lightning.fid import INCEPTION_FILE, fid, inception_features


def noisy(truth, sigma, observed, observed_error=0.5):
    """truth + exactly ±sigma on missing entries, a large error on observed ones."""
    g = torch.Generator().manual_seed(0)
    sign = torch.randint(0, 2, truth.shape, generator=g) * 2 - 1
    return torch.where(observed, truth + observed_error, truth + sign * sigma)


def test_psnr_rmse_mae_on_missing_entries_match_the_noise_level_and_ignore_observed_ones():
    truth = torch.full((4, 3, 8, 8), 0.5)
    observed = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(1)) > 0.5
    x = noisy(truth, 0.1, observed)
    assert metrics.psnr_missing(x, truth, observed).item() == pytest.approx(20.0, abs=1e-4)  # -10 log10(0.01)
    assert metrics.rmse_missing(x, truth, observed).item() == pytest.approx(0.1, abs=1e-6)
    assert metrics.mae_missing(x, truth, observed).item() == pytest.approx(0.1, abs=1e-6)
    full_mse = ((x - truth) ** 2).mean().item()
    assert metrics.psnr_full(x, truth).item() == pytest.approx(-10 * math.log10(full_mse), abs=1e-4)


def test_ssim_is_one_for_identical_images_and_lower_for_noisy_ones():
    g = torch.Generator().manual_seed(2)
    truth = torch.rand(3, 3, 16, 16, generator=g)
    observed = torch.rand(3, 3, 16, 16, generator=g) > 0.5
    assert metrics.ssim(truth, truth).item() == pytest.approx(1.0, abs=1e-5)
    assert metrics.ssim_missing(truth, truth, observed).item() == pytest.approx(1.0, abs=1e-5)
    x = noisy(truth, 0.2, observed, observed_error=0.0)
    assert metrics.ssim(x, truth).item() < 0.95
    # the SSIM map is read where entries are missing: with the left half missing (and noisy)
    # and the right half exact, the two halves' averages differ widely and average to the whole
    half = torch.ones_like(observed)
    half[..., :8] = False
    x = noisy(truth, 0.2, half, observed_error=0.0)
    whole, left, right = (
        m.item() for m in (metrics.ssim(x, truth), *(metrics.ssim_missing(x, truth, o) for o in (half, ~half)))
    )
    assert left < whole - 0.05 and right > whole + 0.05, (left, whole, right)
    assert whole == pytest.approx((left + right) / 2, abs=1e-4)


def reference_mmd(x, y):
    """Unbiased MMD² with the median heuristic, written out with numpy loops' algebra."""
    z = np.concatenate([x.reshape(len(x), -1), y.reshape(len(y), -1)]).astype(np.float64)
    d2 = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
    bandwidth = np.median(d2[~np.eye(len(z), dtype=bool)])
    k = np.exp(-d2 / bandwidth)
    m, n = len(x), len(y)
    kxx, kyy, kxy = k[:m, :m], k[m:, m:], k[:m, m:]
    return (kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1)) - 2 * kxy.mean()


def test_mmd_matches_an_independent_computation_and_separates_shifted_sets():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(40, 3, 4, 4, generator=g)
    y = torch.rand(30, 3, 4, 4, generator=g)
    assert metrics.mmd(x, y).item() == pytest.approx(reference_mmd(x.numpy(), y.numpy()), abs=1e-6)
    same = metrics.mmd(x, torch.rand(40, 3, 4, 4, generator=g)).item()
    shifted = metrics.mmd(x, (torch.rand(40, 3, 4, 4, generator=g) + 0.3)).item()
    assert abs(same) < 0.02 and shifted > 0.1
    assert abs(metrics.mmd(x, x).item()) < 0.05


def test_frechet_distance_matches_scipy_sqrtm():
    g = torch.Generator().manual_seed(4)
    a = torch.randn(500, 6, generator=g) @ torch.randn(6, 6, generator=g)
    b = torch.randn(400, 6, generator=g) * 2 + 1
    ca, cb = np.cov(a.numpy().T), np.cov(b.numpy().T)
    expected = (
        ((a.numpy().mean(0) - b.numpy().mean(0)) ** 2).sum()
        + np.trace(ca)
        + np.trace(cb)
        - 2 * np.trace(scipy.linalg.sqrtm(ca @ cb).real)
    )
    assert metrics.frechet_distance(a, b).item() == pytest.approx(expected, rel=1e-4)


def stand_in_features(images):
    """A small fixed feature network in place of Inception: channel means and a 4×4 pooling."""
    pooled = torch.nn.functional.adaptive_avg_pool2d(images, 4).flatten(1)
    return torch.cat([pooled, images.mean((2, 3))], 1)


def test_fid_is_zero_for_a_set_with_itself_and_grows_as_sets_drift_apart():
    g = torch.Generator().manual_seed(5)
    x = torch.rand(300, 3, 8, 8, generator=g)
    assert fid(x, x, stand_in_features) == pytest.approx(0.0, abs=1e-6)
    drifts = [fid(x, (x + shift).clamp(0, 1), stand_in_features, batch_size=64) for shift in (0.05, 0.1, 0.2)]
    assert 0 < drifts[0] < drifts[1] < drifts[2]


def test_fid_without_inception_weights_names_the_file_to_place(tmp_path):
    with pytest.raises(FileNotFoundError, match=INCEPTION_FILE):
        inception_features(str(tmp_path / INCEPTION_FILE))


def test_mean_fill_uses_each_channels_observed_mean():
    x = torch.tensor([[[[0.2, 0.4], [0.0, 0.0]], [[1.0, 0.0], [0.0, 0.0]]]])
    observed = torch.tensor([[[[1, 1], [0, 0]], [[1, 0], [0, 0]]]], dtype=torch.bool)
    filled = mean_fill(x, observed)
    assert torch.allclose(filled[0, 0, 1], torch.tensor([0.3, 0.3]))
    assert torch.allclose(filled[0, 1], torch.tensor([[1.0, 1.0], [1.0, 1.0]]))


def test_nearest_fill_copies_the_nearest_observed_pixel():
    x = torch.zeros(1, 1, 1, 6)
    x[0, 0, 0, 0], x[0, 0, 0, 5] = 0.1, 0.9
    observed = torch.zeros_like(x, dtype=torch.bool)
    observed[0, 0, 0, [0, 5]] = True
    assert torch.allclose(nearest_fill(x, observed)[0, 0, 0], torch.tensor([0.1, 0.1, 0.1, 0.9, 0.9, 0.9]))


@pytest.mark.parametrize("per_channel", [False, True])
def test_biharmonic_fill_nearly_restores_a_linear_ramp(per_channel):
    ramp = torch.linspace(0.1, 0.9, 12)
    truth = (ramp.view(1, 1, 1, 12) + 0 * ramp.view(1, 1, 12, 1)).expand(2, 3, 12, 12).clone()
    g = torch.Generator().manual_seed(6)
    shape = (2, 3, 12, 12) if per_channel else (2, 1, 12, 12)
    observed = (torch.rand(shape, generator=g) > 0.5).expand(2, 3, 12, 12).clone()
    observed[..., 0], observed[..., -1] = True, True
    x = torch.where(observed, truth, 0)
    filled = biharmonic_fill(x, observed)
    assert torch.equal(filled[observed], truth[observed])
    # smooth data: biharmonic is close to exact, and far better than copying neighbours
    error = (filled - truth)[~observed].abs().mean()
    assert error < 0.005
    assert error < (nearest_fill(x, observed) - truth)[~observed].abs().mean() / 4
