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


def test_fid_offline_tries_torch_fidelitys_download_then_names_the_file_to_place(tmp_path, monkeypatch):
    import urllib.error

    import torch.hub

    asked = []

    def offline(request, *args, **kwargs):  # what urlopen does without a network
        asked.append(getattr(request, "full_url", request))
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "urlopen", offline)
    expected = tmp_path / "hub" / "checkpoints" / INCEPTION_FILE
    with pytest.raises(FileNotFoundError, match="the download failed") as error:
        inception_features()
    assert str(expected) in str(error.value)  # where torch-fidelity would have put it
    assert len(asked) == 1 and asked[0].endswith(INCEPTION_FILE)
    with pytest.raises(FileNotFoundError, match=INCEPTION_FILE):
        inception_features(download=False)
    assert len(asked) == 1  # download=False never reaches for the network


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


# -- probabilistic scores ------------------------------------------------------------------


def gaussian_draws(k: int, spread: float, seed: int = 0):
    """A posterior N(mu, 0.1²) per entry: the truth and k draws; ``spread`` scales the draws'
    deviations (1: calibrated, 0: collapsed onto mu)."""
    g = torch.Generator().manual_seed(seed)
    mu = torch.rand(300, 3, 8, 8, generator=g)
    truth = mu + 0.1 * torch.randn(mu.shape, generator=g)
    draws = mu + spread * 0.1 * torch.randn((k, *mu.shape), generator=g)
    observed = torch.rand(mu.shape, generator=g) < 0.3
    return draws, truth, observed


def test_crps_is_the_fair_ensemble_estimator_and_the_mae_for_one_draw():
    draws, truth, observed = gaussian_draws(5, 1.0)
    missing = ~observed
    d, y = draws[:, missing].double(), truth[missing].double()
    pairs = (d[:, None] - d[None]).abs().sum((0, 1)) / (5 * 4)  # every ordered pair of distinct draws
    brute = ((d - y).abs().mean(0) - 0.5 * pairs).mean()
    assert metrics.crps_missing(draws, truth, observed).item() == pytest.approx(brute.item(), rel=1e-5)
    point = draws[0]
    assert metrics.crps_missing(point[None], truth, observed).item() == pytest.approx(
        metrics.mae_missing(point, truth, observed).item(), rel=1e-6
    )


def test_calibrated_draws_score_spread_skill_one_and_the_gaussian_crps_collapsed_ones_do_not():
    draws, truth, observed = gaussian_draws(8, 1.0)
    assert metrics.spread_skill(draws, truth, observed).item() == pytest.approx(1.0, abs=0.03)
    # a calibrated Gaussian forecast's expected CRPS is σ/√π, below the posterior mean's MAE σ√(2/π)
    assert metrics.crps_missing(draws, truth, observed).item() == pytest.approx(0.1 / math.sqrt(math.pi), rel=0.03)
    # the finite-K correction: with K = 2 calibrated draws the ratio is still ≈ 1
    assert metrics.spread_skill(draws[:2], truth, observed).item() == pytest.approx(1.0, abs=0.05)
    collapsed, _, _ = gaussian_draws(8, 0.05)
    assert metrics.spread_skill(collapsed, truth, observed).item() < 0.1
    wide, _, _ = gaussian_draws(8, 2.0)
    assert metrics.spread_skill(wide, truth, observed).item() > 1.5
    with pytest.raises(ValueError, match="K ≥ 2"):
        metrics.spread_skill(draws[:1], truth, observed)


def test_energy_score_is_the_fair_estimator_on_windows_that_hold_a_missing_entry():
    g = torch.Generator().manual_seed(0)
    draws, truth = torch.rand(3, 2, 2, 7, 7, generator=g), torch.rand(2, 2, 7, 7, generator=g)
    observed = torch.rand(2, 1, 7, 7, generator=g).expand(-1, 2, -1, -1) < 0.5
    observed[1, :, :5, :5] = True  # a window with no missing entry: not scored
    draws = torch.where(observed, truth, draws)
    # 7×7 images hold one 5×5 window (the top-left one); item 1's holds no missing entry
    x, y = [d[0, :, :5, :5].double() for d in draws], truth[0, :, :5, :5].double()
    skill = sum((xk - y).norm() for xk in x) / 3
    pairs = sum((x[a] - x[b]).norm() for a in range(3) for b in range(3) if a != b) / (3 * 2)
    expected = skill - 0.5 * pairs
    assert metrics.energy_score(draws, truth, observed).item() == pytest.approx(expected.item(), rel=1e-5)
    # one draw: the mean Euclidean error of a window; a table row is one window
    rows, row_truth, row_observed = draws[:, :, 0, 0], truth[:, 0, 0], observed[:, 0, 0].clone()
    row_observed[:, 0] = False
    expected = (rows[0] - row_truth).norm(dim=1).mean()
    assert metrics.energy_score(rows[:1], row_truth, row_observed).item() == pytest.approx(expected.item(), rel=1e-5)


def test_energy_score_sees_the_joint_structure_that_crps_cannot():
    """Truth and one set of draws move together over each 5×5 window; the other draws have the
    same per-pixel spread but independent pixels: equal CRPS, a worse energy score."""
    g = torch.Generator().manual_seed(0)

    def windows_together(k: int) -> torch.Tensor:  # (k, 400, 1, 10, 10): one N(0, 0.1²) value per window
        values = 0.1 * torch.randn(k, 400, 1, 2, 2, generator=g)
        return values.repeat_interleave(5, -1).repeat_interleave(5, -2)

    truth, observed = windows_together(1)[0], torch.zeros(400, 1, 10, 10, dtype=torch.bool)
    coherent, independent = windows_together(8), 0.1 * torch.randn(8, 400, 1, 10, 10, generator=g)
    crps = [metrics.crps_missing(d, truth, observed).item() for d in (coherent, independent)]
    assert crps[0] == pytest.approx(crps[1], rel=0.05)
    energy = [metrics.energy_score(d, truth, observed).item() for d in (coherent, independent)]
    assert energy[0] < 0.9 * energy[1]  # 0.282 against 0.328


# -- sliced Wasserstein distance -------------------------------------------------------------


@pytest.fixture(scope="module")
def embedded_holes():
    """300 embedded 32×32 crops, 60 % of their pixels missing; a copy blurred on the holes and
    one with Gaussian noise of the same PSNR on the holes."""
    from torchvision.transforms.functional import gaussian_blur

    from miri_lightning.data.sample import sample_images
    from miri_lightning.data.store import decode
    from miri_lightning.masks import MCARMask

    truth = decode(sample_images(300, 32, 0))
    observed = MCARMask(0.6, "pixel", seed=0)(truth.shape)
    blurred = torch.where(observed, truth, gaussian_blur(truth, 5, 1.5))
    error = metrics.rmse_missing(blurred, truth, observed)
    grain = truth + error * torch.randn(truth.shape, generator=torch.Generator().manual_seed(0))
    grainy = torch.where(observed, truth, grain)
    return truth, observed, blurred, grainy


def test_swd_puts_the_truth_at_its_floor_and_sees_blur_and_grain(embedded_holes):
    truth, observed, blurred, grainy = embedded_holes
    # same PSNR (the noise is not clamped): a distance on PSNR alone could not tell them apart
    assert metrics.psnr_missing(grainy, truth, observed).item() == pytest.approx(
        metrics.psnr_missing(blurred, truth, observed).item(), abs=0.1
    )
    options = {"patches_per_image": 32, "projections": 128}
    floor = metrics.sliced_wasserstein(truth, truth, seed=1, **options)
    again = metrics.sliced_wasserstein(truth, truth, seed=2, **options)
    blur = metrics.sliced_wasserstein(blurred, truth, seed=1, **options)
    noise = metrics.sliced_wasserstein(grainy, truth, seed=1, **options)
    assert list(floor) == ["swd_32", "swd_16", "swd_8", "swd"]
    assert again["swd"] < 2 * floor["swd"]  # the floor is the estimator's, not one lucky draw
    assert blur["swd"] > 4 * floor["swd"] and noise["swd"] > 4 * floor["swd"]
    # both show at the finest level; blur removes detail at the middle one too, grain does not
    assert blur["swd_32"] > 4 * floor["swd_32"] and noise["swd_32"] > 4 * floor["swd_32"]
    assert blur["swd_16"] > 4 * floor["swd_16"] > noise["swd_16"]


def test_swd_on_small_images_uses_fewer_levels_and_says_so_once(caplog, monkeypatch):
    monkeypatch.setattr(metrics, "_said_fewer_levels", set())  # earlier tests' runs may have said it
    images = torch.rand(20, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with caplog.at_level("WARNING", logger="miri_lightning.metrics"):
        first = metrics.sliced_wasserstein(images, images, levels=3, patches_per_image=8, projections=16)
        metrics.sliced_wasserstein(images, images, levels=3, patches_per_image=8, projections=16)
    assert list(first) == ["swd_16", "swd_8", "swd"]
    assert [r.getMessage() for r in caplog.records].count(
        "SWD: 16×16 images allow 2 pyramid level(s) of 7×7 patches, not 3"
    ) == 1
