import pytest
import torch

from miri_lightning.masks import MCARMask


@pytest.mark.parametrize("level", ["pixel", "channel"])
@pytest.mark.parametrize("rate", [0.2, 0.6])
def test_missing_fraction_is_close_to_the_rate(level, rate):
    observed = MCARMask(rate, level, seed=1)((200, 3, 16, 16))
    assert observed.dtype == torch.bool and observed.shape == (200, 3, 16, 16)
    assert abs((~observed).float().mean().item() - rate) < 0.01


def test_pixel_masks_agree_across_channels_and_channel_masks_do_not():
    pixel = MCARMask(0.5, "pixel", seed=0)((20, 3, 8, 8))
    assert torch.equal(pixel, pixel[:, :1].expand_as(pixel))
    channel = MCARMask(0.5, "channel", seed=0)((20, 3, 8, 8))
    assert not torch.equal(channel, channel[:, :1].expand_as(channel))


def test_same_seed_same_mask_other_seed_other_mask():
    shape = (10, 3, 8, 8)
    assert torch.equal(MCARMask(0.4, seed=7)(shape), MCARMask(0.4, seed=7)(shape))
    assert not torch.equal(MCARMask(0.4, seed=7)(shape), MCARMask(0.4, seed=8)(shape))


@pytest.mark.parametrize("rate", [0.0, 1.0, -0.1, 1.5])
def test_rate_outside_open_unit_interval_is_refused(rate):
    with pytest.raises(ValueError, match="mask.rate"):
        MCARMask(rate)


def test_unknown_level_is_refused():
    with pytest.raises(ValueError, match="mask.level"):
        MCARMask(0.5, "block")
