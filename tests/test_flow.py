import pytest
import torch

from miri_lightning import flow


def masked_constant(value):
    """A velocity field equal to ``value`` on missing entries and 0 on observed ones."""
    return lambda a, b, o, t: torch.where(o.bool(), 0.0, torch.as_tensor(value, dtype=a.dtype))


@pytest.mark.parametrize("channels", [1, 3])
def test_views_take_observed_entries_from_source_and_partner(channels):
    g = torch.Generator().manual_seed(0)
    z0, z1 = torch.rand(4, channels, 5, 5, generator=g), torch.rand(4, channels, 5, 5, generator=g)
    o = torch.rand(4, channels, 5, 5, generator=g) > 0.5
    t = torch.tensor([0.0, 0.25, 0.5, 1.0])
    a, b = flow.views(z0, z1, o, t)
    x_t = (1 - t.view(-1, 1, 1, 1)) * z0 + t.view(-1, 1, 1, 1) * z1
    assert torch.equal(a[o], z0[o]) and torch.equal(b[o], z1[o])
    assert torch.allclose(a[~o], x_t[~o]) and torch.allclose(b[~o], x_t[~o])
    assert torch.allclose(flow.interpolate(z0, z1, t)[0], z0[0]) and torch.allclose(
        flow.interpolate(z0, z1, t)[3], z1[3]
    )


@pytest.mark.parametrize("channels", [1, 3])
def test_loss_gradient_is_zero_on_observed_entries(channels):
    g = torch.Generator().manual_seed(1)
    shape = (6, channels, 4, 4)
    z0, z1 = torch.rand(shape, generator=g), torch.rand(shape, generator=g)
    o = torch.rand(shape, generator=g) > 0.4
    raw = torch.randn(shape, generator=g, requires_grad=True)  # a "network" that outputs raw
    loss = flow.miri_loss(lambda a, b, m, t: raw, z0, z1, o, torch.rand(6, generator=g))
    loss.backward()
    assert torch.count_nonzero(raw.grad[o]) == 0
    assert torch.count_nonzero(raw.grad[~o]) == (~o).sum()


def test_loss_averages_over_missing_entries_only():
    z0 = torch.zeros(2, 1, 2, 2)
    z1 = torch.ones(2, 1, 2, 2)
    o = torch.tensor([[[[1, 0], [0, 0]]], [[[1, 1], [1, 0]]]], dtype=torch.bool)
    # target z1 - z0 = 1 everywhere; v = 0 gives error 1 on the 4 missing entries; observed
    # entries carry a huge velocity that must not count.
    loss = flow.miri_loss(lambda a, b, m, t: torch.where(m, 1e6, 0.0), z0, z1, o, torch.rand(2))
    assert loss.item() == pytest.approx(1.0)
    # the exact velocity (z1 - z0 on missing entries) has zero loss
    loss = flow.miri_loss(lambda a, b, m, t: torch.where(m, 0.0, 1.0), z0, z1, o, torch.rand(2))
    assert loss.item() == 0.0


def test_partner_observed_loss_counts_only_targets_the_partner_observed():
    g = torch.Generator().manual_seed(3)
    shape = (8, 3, 4, 4)
    z0, z1 = torch.rand(shape, generator=g), torch.rand(shape, generator=g)
    o, o_partner = torch.rand(shape, generator=g) > 0.5, torch.rand(shape, generator=g) > 0.5
    t = torch.rand(8, generator=g)
    counted = ~o & o_partner
    # a field exact where the partner observed its value and far off where it imputed it
    field = lambda a, b, m, t: torch.where(o_partner, z1 - z0, 5.0)  # noqa: E731
    assert flow.miri_loss(field, z0, z1, o, t, o_partner).item() == 0.0
    assert flow.miri_loss(field, z0, z1, o, t).item() > 1.0  # the paper's loss counts those too
    raw = torch.randn(shape, generator=g, requires_grad=True)
    loss = flow.miri_loss(lambda a, b, m, t: raw, z0, z1, o, t, o_partner)
    loss.backward()
    assert torch.equal(raw.grad != 0, counted)
    assert loss.item() == pytest.approx(((raw - (z1 - z0))[counted] ** 2).mean().item(), rel=1e-5)


@pytest.mark.parametrize("solver", flow.SOLVERS)
@pytest.mark.parametrize("channels", [1, 3])
def test_solvers_leave_observed_entries_bit_identical(solver, channels):
    g = torch.Generator().manual_seed(2)
    x = torch.rand(5, channels, 6, 6, generator=g)
    o = torch.rand(5, channels, 6, 6, generator=g) > 0.5
    # a field that ignores the mask: the solver itself must keep observed entries
    wild = lambda a, b, m, t: torch.sin(37 * a) + t.view(-1, 1, 1, 1)  # noqa: E731
    y = flow.impute(wild, x, o, steps=7, solver=solver)
    assert torch.equal(y[o], x[o])
    assert not torch.equal(y[~o], x[~o])


@pytest.mark.parametrize("solver", flow.SOLVERS)
def test_constant_velocity_lands_at_start_plus_velocity(solver):
    x = torch.full((3, 3, 4, 4), 0.2)
    o = torch.zeros_like(x, dtype=torch.bool)
    o[:, :, 0] = True
    y = flow.impute(masked_constant(0.5), x, o, steps=10, solver=solver)
    assert torch.allclose(y[~o], torch.full_like(y[~o], 0.7), atol=1e-6)
    assert torch.equal(y[o], x[o])


@pytest.mark.parametrize("steps", [1, 4, 10])
def test_time_dependent_velocity_matches_known_discretisations(steps):
    """dy/ds = s from y(0) = 0: exact y(1) = 1/2. Euler's left sums give (1 - 1/n)/2;
    Heun's trapezoids are exact for a linear integrand."""
    x = torch.zeros(2, 1, 3, 3)
    o = torch.zeros_like(x, dtype=torch.bool)
    v = lambda a, b, m, t: t.view(-1, 1, 1, 1).expand_as(a)  # noqa: E731
    euler = flow.impute(v, x, o, steps, "euler", clamp=None)
    heun = flow.impute(v, x, o, steps, "heun", clamp=None)
    assert torch.allclose(euler, torch.full_like(x, (1 - 1 / steps) / 2), atol=1e-6)
    assert torch.allclose(heun, torch.full_like(x, 0.5), atol=1e-6)


def test_linear_ode_gives_the_solvers_growth_factors():
    """dy/ds = y: Euler multiplies by (1 + h)^n, Heun by (1 + h + h²/2)^n."""
    x = torch.full((1, 1, 2, 2), 0.1)
    o = torch.zeros_like(x, dtype=torch.bool)
    v = lambda a, b, m, t: a  # noqa: E731
    n, h = 5, 0.2
    assert torch.allclose(flow.impute(v, x, o, n, "euler", clamp=None), x * (1 + h) ** n)
    assert torch.allclose(flow.impute(v, x, o, n, "heun", clamp=None), x * (1 + h + h * h / 2) ** n)


def test_euler_follows_the_rectified_flow_to_a_point_exactly():
    """1-D toy: transporting 0.1 to the point 0.9 along the straight line has the field
    v(y, s) = (0.9 - y) / (1 - s), constant (0.8) on the path; Euler lands on 0.9."""
    x = torch.full((4, 1, 1, 1), 0.1)
    o = torch.zeros_like(x, dtype=torch.bool)
    v = lambda a, b, m, t: (0.9 - a) / (1 - t.view(-1, 1, 1, 1))  # noqa: E731
    y = flow.impute(v, x, o, 20, "euler")
    assert torch.allclose(y, torch.full_like(y, 0.9), atol=1e-5)


def test_clamping_keeps_missing_entries_in_the_data_range():
    x = torch.full((2, 3, 4, 4), 0.5)
    o = torch.rand(2, 3, 4, 4) > 0.5
    for solver in flow.SOLVERS:
        y = flow.impute(masked_constant(3.0), x, o, 4, solver)
        assert y[~o].max().item() == 1.0 and torch.equal(y[o], x[o])
        y = flow.impute(masked_constant(-3.0), x, o, 4, solver)
        assert y[~o].min().item() == 0.0


def test_bad_solver_and_steps_are_refused():
    x = torch.zeros(1, 1, 2, 2)
    o = torch.ones_like(x, dtype=torch.bool)
    with pytest.raises(ValueError, match="miri.solver"):
        flow.impute(masked_constant(0.0), x, o, 3, "rk45")
    with pytest.raises(ValueError, match="miri.ode_steps"):
        flow.impute(masked_constant(0.0), x, o, 0)


def test_initial_fills_keep_observed_entries():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(50, 3, 4, 4, generator=g) * 0.5 + 0.25
    o = torch.rand(50, 3, 4, 4, generator=g) > 0.3
    noise = flow.initial_fill(x, o, "noise", torch.Generator().manual_seed(0))
    again = flow.initial_fill(x, o, "noise", torch.Generator().manual_seed(0))
    assert torch.equal(noise, again) and torch.equal(noise[o], x[o])
    assert noise[~o].min() < 0.1 and noise[~o].max() > 0.9  # U[0, 1], not the data's range
    mean = flow.initial_fill(x, o, "mean")
    assert torch.equal(mean[o], x[o])
    for c in range(3):
        expected = x[:, c][o[:, c]].mean()
        assert torch.allclose(mean[:, c][~o[:, c]], expected.expand((~o[:, c]).sum()))
    with pytest.raises(ValueError, match="miri.init"):
        flow.initial_fill(x, o, "zeros")


def test_harmonic_fill_recovers_a_linear_ramp_and_keeps_observed_entries():
    """The discrete Laplace equation holds exactly for a linear image: with the border
    observed, the interpolation must give the ramp back inside."""
    rows, cols = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    ramp = (0.1 + 0.03 * rows + 0.02 * cols).expand(4, 2, 16, 16).clone()
    o = torch.rand(4, 2, 16, 16, generator=torch.Generator().manual_seed(0)) > 0.6
    o[..., 0, :] = o[..., -1, :] = o[..., :, 0] = o[..., :, -1] = True
    filled = flow.harmonic_fill(torch.where(o, ramp, 0), o, iterations=200)
    assert torch.equal(filled[o], ramp[o])
    assert (filled - ramp).abs().max() < 1e-3
    # a channel with nothing observed gets 0.5; the others are unaffected
    o[1, 0] = False
    filled = flow.harmonic_fill(torch.where(o, ramp, 0), o)
    assert torch.all(filled[1, 0] == 0.5) and torch.equal(filled[1, 1][o[1, 1]], ramp[1, 1][o[1, 1]])


@pytest.mark.parametrize("level", ["pixel", "channel"])
def test_curvature_fill_is_scikit_images_biharmonic_inpainting_batched(level):
    from miri_lightning.baselines import biharmonic_fill
    from miri_lightning.data.sample import sample_images
    from miri_lightning.masks import MCARMask
    from miri_lightning.metrics import psnr_missing

    x = sample_images(40).float()
    x = x / 255 if x.max() > 1 else x
    o = MCARMask(0.6, level)(x.shape)
    reference = biharmonic_fill(torch.where(o, x, 0), o)
    filled = flow.curvature_fill(torch.where(o, x, 0), o, iterations=25)
    assert torch.equal(filled[o], x[o])
    assert psnr_missing(filled, reference, o) > 45  # the same interpolation (to ~0.005 in [0, 1])
    assert psnr_missing(filled, x, o) > psnr_missing(flow.harmonic_fill(x, o), x, o) + 0.5


def test_interp_fill_with_noise_gives_distinct_draws_around_the_interpolation():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(20, 3, 8, 8, generator=g) * 0.5 + 0.25
    o = torch.rand(20, 1, 8, 8, generator=g).expand(20, 3, 8, 8) > 0.5
    base = flow.initial_fill(x, o, "interp")
    assert torch.equal(base, flow.deterministic_fill(x, o, "interp"))
    first = flow.initial_fill(x, o, "interp", torch.Generator().manual_seed(0), noise=0.05)
    second = flow.initial_fill(x, o, "interp", torch.Generator().manual_seed(1), noise=0.05)
    assert torch.equal(first[o], x[o]) and torch.equal(second[o], x[o])
    assert not torch.equal(first, second)
    assert (first - base)[~o].std().item() == pytest.approx(0.05, rel=0.1)
    wide = flow.initial_fill(x, o, "interp", torch.Generator().manual_seed(0), noise=2.0)
    assert wide.min() >= 0 and wide.max() <= 1  # clamped to the images' range
    with pytest.raises(ValueError, match="miri.init_noise"):
        flow.initial_fill(x, o, "interp", noise=-0.1)
    with pytest.raises(ValueError, match="images"):
        flow.initial_fill(torch.rand(5, 3), torch.rand(5, 3) > 0.5, "interp")


def test_noise_fill_of_unbounded_data_is_standard_normal():
    x, o = torch.zeros(4000, 3), torch.rand(4000, 3, generator=torch.Generator().manual_seed(0)) > 0.5
    fill = flow.initial_fill(x, o, "noise", torch.Generator().manual_seed(7), clamp=None)
    assert fill[~o].mean().abs() < 0.05 and fill[~o].std().item() == pytest.approx(1.0, abs=0.05)
    assert fill[~o].min() < -2.5 and torch.equal(fill[o], x[o])


def test_local_spread_is_the_std_of_observed_neighbours_in_a_5x5_window():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 3, 9, 9, generator=g)
    o = torch.rand(2, 3, 9, 9, generator=g) > 0.4
    spread = flow.local_spread(x, o)
    for n, c, i, j in [(0, 0, 4, 4), (1, 2, 0, 0), (0, 1, 8, 3), (1, 0, 2, 7)]:
        # the window with replicated edges: an edge entry counts once per padded copy
        ii = (torch.arange(i - 2, i + 3).clamp(0, 8)[:, None]).expand(5, 5)
        jj = (torch.arange(j - 2, j + 3).clamp(0, 8)[None, :]).expand(5, 5)
        values = x[n, c][ii, jj][o[n, c][ii, jj]]
        expected = values.double().var(unbiased=False).sqrt() if len(values) > 1 else 0.0
        assert spread[n, c, i, j].item() == pytest.approx(float(expected), abs=1e-5)
    # inside a large hole the window sees nothing: the image channel's own spread, not 0
    holed = o.clone()
    holed[:, :, 1:8, 1:8] = False
    inside = flow.local_spread(x, holed)[:, :, 4, 4]
    pairs = [(n, c) for n in range(2) for c in range(3)]
    expected = torch.stack([x[n, c][holed[n, c]].double().var(unbiased=False).sqrt() for n, c in pairs])
    assert torch.allclose(inside.flatten().double(), expected, atol=1e-5)


def test_local_noise_follows_the_picture_none_on_flat_regions():
    # left half flat grey, right half a checkerboard of 0.2 / 0.8: the local noise leaves the
    # flat half alone and spreads the textured half by about σ × 0.3 (the checkerboard's std)
    x = torch.full((400, 1, 16, 16), 0.5)
    board = (torch.arange(16)[:, None] + torch.arange(16)[None, :]) % 2
    x[..., 8:] = (0.2 + 0.6 * board[:, 8:]).float()
    o = torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) > 0.5
    base = flow.deterministic_fill(x, o, "mean")
    local = flow.perturb(base, o, 0.5, torch.Generator().manual_seed(1), clamp=None, mode="local")
    constant = flow.perturb(base, o, 0.5, torch.Generator().manual_seed(1), clamp=None)
    moved = (local - base)[~o].view(-1)
    flat = torch.zeros_like(o)  # the windows there hold 25 distinct entries of the flat half only
    flat[..., 2:14, 2:6] = True
    flat &= ~o
    textured = (~o).clone()
    textured[..., :11] = False
    assert (local - base)[flat].abs().max() < 1e-6
    assert (local - base)[textured].std().item() == pytest.approx(0.5 * 0.3, rel=0.1)
    assert (constant - base)[flat].std().item() == pytest.approx(0.5, rel=0.1)
    assert torch.equal(local[o], x[o]) and moved.abs().max() > 0


def test_correlated_noise_has_the_local_spread_and_the_stated_correlations():
    # the correlated mode keeps the local mode's σ per entry (unit variance) and correlates the
    # noise 0.65 across colours and 0.3 between neighbours; observed entries keep the data
    x = torch.full((300, 3, 16, 16), 0.5)
    o = torch.zeros_like(x, dtype=torch.bool)
    o[..., ::4, ::4] = True
    x[o] = torch.rand(int(o.sum()), generator=torch.Generator().manual_seed(0))
    base = flow.deterministic_fill(x, o, "mean")
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    local = flow.perturb(base, o, 0.5, g(), clamp=None, mode="local")
    noise = flow.perturb(base, o, 0.5, g(), clamp=None, mode="correlated") - base
    unit = (noise / (0.5 * flow.local_spread(base, o)).clamp_min(1e-6))[..., 5:8, 5:8]  # no observed entry
    colours = torch.corrcoef(unit.transpose(0, 1).reshape(3, -1))
    beside = torch.corrcoef(torch.stack([unit[..., 1:].flatten(), unit[..., :-1].flatten()]))[0, 1]
    below = torch.corrcoef(torch.stack([unit[..., 1:, :].flatten(), unit[..., :-1, :].flatten()]))[0, 1]
    assert unit.std().item() == pytest.approx(1.0, abs=0.03)
    assert colours[~torch.eye(3, dtype=torch.bool)].sub(flow.COLOUR_CORRELATION).abs().max() < 0.03
    assert beside.item() == pytest.approx(flow.NEIGHBOUR_CORRELATION, abs=0.03)
    assert below.item() == pytest.approx(flow.NEIGHBOUR_CORRELATION, abs=0.03)
    assert torch.equal(noise[o], torch.zeros(int(o.sum()))) and not torch.equal(local, base + noise)


def test_bad_noise_modes_are_refused():
    x, o = torch.rand(4, 3, 8, 8), torch.rand(4, 3, 8, 8) > 0.5
    with pytest.raises(ValueError, match="init_noise_mode must be one of"):
        flow.perturb(x, o, 0.1, mode="gaussian")
    with pytest.raises(ValueError, match="init_noise_mode=local needs images"):
        flow.perturb(torch.rand(5, 3), torch.rand(5, 3) > 0.5, 0.1, mode="local")


def test_fill_source_is_the_runs_noisy_fill_of_the_partner_view():
    g = torch.Generator().manual_seed(0)
    partner = torch.rand(3, 3, 16, 16, generator=g)
    observed = (torch.rand(3, 1, 16, 16, generator=g) > 0.6).expand(-1, 3, -1, -1)
    still = flow.fill_source(partner, observed, "biharmonic", 0.0)
    assert torch.equal(still, flow.deterministic_fill(torch.where(observed, partner, 0), observed, "biharmonic"))
    assert torch.equal(still[observed], partner[observed])
    noisy = [
        flow.fill_source(partner, observed, "biharmonic", 0.6, "local", torch.Generator().manual_seed(s))
        for s in (1, 1, 2)
    ]
    assert torch.equal(noisy[0], noisy[1]) and not torch.equal(noisy[0], noisy[2])
    assert torch.equal(noisy[2][observed], partner[observed])
    expected = flow.perturb(still, observed, 0.6, torch.Generator().manual_seed(1), mode="local")
    assert torch.equal(noisy[0], expected)  # the very fill a draw of the item starts from
