import pytest
import torch

from miri_lightning import flow
from miri_lightning.interp import curvature_fill, harmonic_fill
from miri_lightning.nets import ConditionalUNet


def tiny_unet(channels=3, image_size=16, still=False, **kwargs):
    """A tiny U-Net whose last layer is random, as after training (``still``: as built, zero)."""
    kwargs = {"block_out_channels": (8, 16), "attention": (False, True), "norm_num_groups": 4, **kwargs}
    net = ConditionalUNet(channels, image_size, **kwargs)
    if not still:
        torch.nn.init.normal_(net.unet.conv_out.weight, std=0.05)
    return net


def test_a_fresh_field_is_still_and_keeps_the_fill_a_draw_starts_from():
    torch.manual_seed(0)
    net = tiny_unet(still=True, interp_inputs="biharmonic").eval()
    x = torch.rand(2, 3, 16, 16)
    o = torch.rand(2, 1, 16, 16).expand(-1, 3, -1, -1) > 0.5
    assert torch.equal(flow.impute(net, x, o, steps=3, solver="heun"), x)


@pytest.mark.parametrize("interp_inputs", ["none", "harmonic", "biharmonic"])
@pytest.mark.parametrize("channels", [1, 3])
def test_velocity_is_zero_on_observed_entries_and_not_elsewhere(channels, interp_inputs):
    torch.manual_seed(0)
    net = tiny_unet(channels, interp_inputs=interp_inputs)
    a = torch.rand(4, channels, 16, 16)
    o = torch.rand(4, channels, 16, 16) > 0.5
    v = net(a, torch.rand_like(a), o, torch.rand(4))
    assert v.shape == a.shape
    assert torch.count_nonzero(v[o]) == 0
    assert torch.count_nonzero(v[~o]) == (~o).sum()


def test_time_is_passed_as_a_float_not_rounded_to_an_integer_step():
    torch.manual_seed(0)
    net = tiny_unet().eval()
    a = torch.rand(2, 3, 16, 16)
    o = torch.zeros_like(a, dtype=torch.bool)
    # 0.3001 and 0.3004 map to timesteps 300.1 and 300.4: a cast to long would make them equal
    v1 = net(a, a, o, torch.full((2,), 0.3001))
    v2 = net(a, a, o, torch.full((2,), 0.3004))
    assert not torch.equal(v1, v2)


def test_views_and_mask_all_reach_the_network():
    torch.manual_seed(0)
    net = tiny_unet().eval()
    a, b = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    o = torch.rand(1, 3, 16, 16) > 0.5
    t = torch.full((1,), 0.5)
    base = net(a, b, o, t)
    assert not torch.equal(base, net(a, b.flip(-1), o, t))
    assert not torch.equal(base, net(a.flip(-1), b, o, t))
    o2 = o.clone()
    o2[0, 0, 0, :4] = ~o2[0, 0, 0, :4]
    assert not torch.equal(base[~o2 & ~o], net(a, b, o2, t)[~o2 & ~o])


@pytest.mark.parametrize(
    ("interp_inputs", "interpolate"),
    [("harmonic", harmonic_fill), ("biharmonic", lambda x, o: curvature_fill(x, o, iterations=10))],
)
def test_interp_inputs_give_the_unet_each_views_interpolation(interp_inputs, interpolate):
    torch.manual_seed(0)
    net = tiny_unet(interp_inputs=interp_inputs).eval()
    seen = []
    net.unet.conv_in.register_forward_hook(lambda module, args, out: seen.append(args[0]))
    a, b = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    o = torch.rand(2, 3, 16, 16) > 0.6
    net(a, b, o, torch.full((2,), 0.5))
    (h,) = seen
    assert h.shape[1] == 5 * 3
    assert torch.allclose(h[:, 9:12], interpolate(a, o) * 2 - 1)
    assert torch.allclose(h[:, 12:15], interpolate(b, o) * 2 - 1)
    # the interpolation of b's observed entries differs from a's: the partner is seen through o
    assert not torch.allclose(h[:, 9:12], h[:, 12:15])


def test_unknown_interp_inputs_are_refused_with_the_setting_named():
    with pytest.raises(ValueError, match="model.interp_inputs"):
        tiny_unet(interp_inputs="bicubic")
    with pytest.raises(ValueError, match="model.interp_skip needs model.interp_inputs"):
        tiny_unet(interp_skip=True)


def test_interp_skip_starts_as_the_velocity_towards_the_partner_views_interpolation():
    torch.manual_seed(0)
    net = tiny_unet(still=True, interp_inputs="biharmonic", interp_skip=True)
    a, b = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    o = torch.rand(2, 3, 16, 16) > 0.6
    t = torch.full((2,), 0.3)
    towards = (curvature_fill(b, o, iterations=10) - b) * ~o
    assert torch.allclose(net(a, b, o, t), towards)
    # the U-Net's correction is trainable: one step away from zero changes the field
    loss = (net(a, b, o, t) - torch.rand_like(a)).pow(2).mean()
    loss.backward()
    with torch.no_grad():
        for p in net.parameters():
            p -= 0.1 * p.grad if p.grad is not None else 0
    assert not torch.allclose(net(a, b, o, t), towards)


def test_the_ode_solves_each_batchs_interpolation_once_and_gets_the_same_imputation():
    torch.manual_seed(0)
    net = tiny_unet(interp_inputs="biharmonic", interp_skip=True).eval()
    torch.nn.init.normal_(net.unet.conv_out.weight, std=0.1)  # a field that is not only the skip
    x, o = torch.rand(2, 3, 3, 16, 16), torch.rand(2, 3, 3, 16, 16) > 0.6
    solves = []
    net.interp = lambda v, m: solves.append(1) or curvature_fill(v, m, iterations=10)
    with torch.no_grad():
        cached = [flow.impute(net, x[k], o[k], steps=4) for k in range(2)]
        assert len(solves) == 2  # one per batch, not one per step

        def uncached_field(a, b, m, t):  # a fresh solve at every step: what the cache must match
            object.__setattr__(net, "_interp_cache", None)
            return net(a, b, m, t)

        uncached = [flow.impute(uncached_field, x[k], o[k], steps=4) for k in range(2)]
    assert len(solves) == 2 + 8
    for got, want in zip(cached, uncached, strict=True):
        assert torch.allclose(got, want, atol=1e-6)
    assert not torch.allclose(cached[0], cached[1])
    # the same observed values under another mask are another batch: black images whose
    # first channel is seen somewhere, then nowhere (where the interpolation is 0.5, not 0)
    black, seen = torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 16, dtype=torch.bool)
    seen[..., :4] = True
    unseen = seen.clone()
    unseen[:, 0] = False
    with torch.no_grad():
        first, _ = net.interpolations(black, black, seen)
        second, _ = net.interpolations(black, black, unseen)
    assert first[:, 0].abs().max() == 0 and torch.allclose(second[:, 0], torch.full_like(second[:, 0], 0.5))


def test_image_size_the_unet_cannot_take_is_refused_with_the_setting_named():
    with pytest.raises(ValueError, match="data.image_size=18"):
        ConditionalUNet(3, 18, block_out_channels=(8, 16, 32), attention=(False, False, False), norm_num_groups=4)


def test_inconsistent_levels_and_groups_are_refused():
    with pytest.raises(ValueError, match="model.attention"):
        ConditionalUNet(3, 16, block_out_channels=(8, 16), attention=(False,), norm_num_groups=4)
    with pytest.raises(ValueError, match="model.norm_num_groups"):
        ConditionalUNet(3, 16, block_out_channels=(12, 16), attention=(False, False), norm_num_groups=8)


def test_input_of_another_shape_is_refused():
    net = tiny_unet()
    a = torch.rand(1, 3, 32, 32)
    with pytest.raises(ValueError, match="built for images of shape"):
        net(a, a, torch.ones_like(a, dtype=torch.bool), torch.rand(1))


def test_fill_skip_keeps_any_fill_with_a_still_u_net():
    """model.fill_skip: untrained, the field carries every fill onto itself (∫ keep_spread = 0),
    where interp_skip pulls it to the interpolation."""
    from miri_lightning.nets.unet import keep_spread

    assert keep_spread(torch.tensor([0.0, 0.5, 1.0])).tolist() == [-1.0, 0.0, 1.0]
    torch.manual_seed(0)
    x = 0.2 + 0.6 * torch.rand(2, 3, 16, 16)  # away from the clamp at 0 and 1
    o = torch.rand(2, 1, 16, 16).expand(-1, 3, -1, -1) > 0.5
    kept = tiny_unet(still=True, interp_inputs="biharmonic", fill_skip=True).eval()
    with torch.no_grad():
        assert (flow.impute(kept, x, o, steps=20, solver="heun") - x).abs().max() < 2e-3
        pulled = tiny_unet(still=True, interp_inputs="biharmonic", interp_skip=True).eval()
        assert (flow.impute(pulled, x, o, steps=20, solver="heun") - x).abs().max() > 0.05
    with pytest.raises(ValueError, match="model.fill_skip needs"):
        tiny_unet(fill_skip=True)
