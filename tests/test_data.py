import pytest
import torch

from miri_lightning.data.datamodule import MIRIDataModule, PairBatches, round_seed
from miri_lightning.data.sample import sample_images
from miri_lightning.data.sources import LoadedImages
from miri_lightning.data.store import Store
from miri_lightning.masks import GivenMask, MCARMask


def test_sample_set_is_reproducible_and_varied():
    a = sample_images(40, 16, seed=0)
    assert a.shape == (40, 3, 16, 16) and a.dtype == torch.uint8
    assert torch.equal(a, sample_images(40, 16, seed=0))
    assert not torch.equal(a, sample_images(40, 16, seed=1))
    # crops of different photos and places: no two identical, and real contrast in each
    flat = a.flatten(1).float()
    assert torch.cdist(flat, flat).add(torch.eye(40) * 1e9).min() > 0
    assert flat.std(1).min() > 2


def indexed_store(n=50):
    """A store whose item i is the constant image i, so batches reveal the indices drawn; its
    mask observes the top-left pixel, and the bottom-right one when i is odd."""
    imputed = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 2, 2).clone()
    observed = torch.zeros_like(imputed, dtype=torch.bool)
    observed[:, :, 0, 0] = True
    observed[1::2, :, 1, 1] = True
    return Store(imputed, observed)


def drawn_indices(pairs):
    sources, partners = [], []
    for source, observed, partner, partner_observed in pairs:
        assert source.shape == partner.shape and observed.dtype == torch.bool
        # each item comes with its own mask, the partner's too
        for item, mask in ((source, observed), (partner, partner_observed)):
            assert torch.equal(mask[:, 0, 1, 1], item[:, 0, 0, 0].long() % 2 == 1)
        sources.append(source[:, 0, 0, 0].long())
        partners.append(partner[:, 0, 0, 0].long())
    return torch.cat(sources), torch.cat(partners)


def test_pairs_are_uniform_and_the_partner_independent_of_the_source():
    n = 50
    pairs = PairBatches(indexed_store(n), batch_size=200, steps=100, seed=0)
    assert len(pairs) == 100 and len(list(pairs)) == 100
    i, j = drawn_indices(pairs)
    counts = torch.bincount(i, minlength=n).float()
    assert (counts / counts.mean() - 1).abs().max() < 0.2  # every item drawn ~400 times
    joint = torch.zeros(n, n)
    joint.index_put_((i, j), torch.ones_like(i, dtype=torch.float32), accumulate=True)
    # independence: the joint histogram of (i, j) is flat, partner ≠ a function of source
    assert torch.corrcoef(torch.stack([i.float(), j.float()]))[0, 1].abs() < 0.02
    assert (i == j).float().mean() < 3 / n
    # the mask that comes with a source is the source's own
    store = indexed_store(n)
    store.observed[7] = True
    for source, observed, _, _ in PairBatches(store, 64, 5, seed=1):
        is7 = source[:, 0, 0, 0] == 7
        assert observed[is7].all() and not observed[~is7].all()


def test_round_and_rank_give_different_draws_and_the_same_seed_the_same():
    store = indexed_store()
    draw = lambda s: drawn_indices(PairBatches(store, 32, 3, s))  # noqa: E731
    assert torch.equal(draw(round_seed(0, 1, 0))[0], draw(round_seed(0, 1, 0))[0])
    seeds = {round_seed(s, r, k, stream) for s in range(3) for r in range(20) for k in range(8) for stream in range(3)}
    assert len(seeds) == 3 * 20 * 8 * 3
    assert not torch.equal(draw(round_seed(0, 1, 0))[0], draw(round_seed(0, 1, 1))[0])
    assert not torch.equal(draw(round_seed(0, 1, 0))[0], draw(round_seed(0, 2, 0))[0])


class FixedSource:
    def __init__(self, values, observed=None):
        self.loaded = LoadedImages(values, observed)

    def load(self):
        return self.loaded


def test_datamodule_builds_the_store_once_with_mask_and_initial_fill():
    values = torch.rand(30, 3, 8, 8)
    dm = MIRIDataModule(FixedSource(values), MCARMask(0.5, seed=3), batch_size=8, steps_per_round=4, seed=0)
    dm.setup("fit")
    store = dm.store
    assert torch.equal(store.observed, MCARMask(0.5, seed=3)(values.shape))
    assert torch.equal(store.imputed[store.observed], values[store.observed])
    assert not torch.equal(store.imputed, values)
    assert store.truth is values
    dm.setup("fit")
    assert dm.store is store  # setup again (e.g. on every DDP rank) keeps the store
    assert len(dm.train_dataloader()) == 4


def test_data_without_missing_entries_are_refused():
    values = torch.rand(4, 3, 8, 8)
    dm = MIRIDataModule(FixedSource(values, torch.ones_like(values, dtype=torch.bool)), GivenMask(), 2, 1)
    with pytest.raises(ValueError, match="no missing entries"):
        dm.setup("fit")


def test_noise_fill_is_independent_of_a_mask_drawn_with_the_same_seed():
    """Seeded alike, mask and fill once replayed the same uniforms: with channel masks every
    missing entry's U[0, 1] fill was the very draw that made it missing (< rate)."""
    from miri_lightning.data.sources import LoadedImages
    from miri_lightning.data.store import build_store
    from miri_lightning.masks import MCARMask

    values = torch.full((200, 3, 8, 8), 128, dtype=torch.uint8)
    store = build_store(LoadedImages(values), MCARMask(0.6, "channel", seed=0), "noise", seed=0)
    fill = store.imputed[~store.observed]
    assert abs(fill.mean().item() - 0.5) < 0.01 and fill.max() > 0.95
