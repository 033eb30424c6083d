import torch

from miri_lightning.mine import mine_estimate


def test_mine_sees_information_only_when_the_data_reveal_their_mask():
    g = torch.Generator().manual_seed(0)
    truth = torch.rand(400, 1, 8, 8, generator=g) * 0.5 + 0.25
    observed = torch.rand(400, 1, 8, 8, generator=g) > 0.5
    # filled with values drawn like the data: the mask cannot be read off the images
    faithful = torch.where(observed, truth, torch.rand(400, 1, 8, 8, generator=g) * 0.5 + 0.25)
    # filled with zeros: every missing entry gives itself away
    zeros = torch.where(observed, truth, 0.0)
    independent = mine_estimate(faithful, observed, steps=150, seed=1)
    revealing = mine_estimate(zeros, observed, steps=150, seed=1)
    assert independent < 0.1
    assert revealing > 1.0
