"""The source view's interpolation solved once per item and kept with the store: the same
losses and imputations as solving it at every step, with far fewer solves."""

import pytest
import torch
from lightning import Callback
from safetensors.torch import load_file

from miri_lightning.nets import ConditionalUNet
from miri_lightning.run import build, check_data

INTERP = [
    "model.interp_inputs=biharmonic",
    "model.interp_skip=true",
    "miri.coupling=independent",  # the cache serves the source items; coupling=fill builds them from the partner
    "miri.rounds=1",
    "miri.steps_per_round=5",
    "miri.ode_steps=3",
]


class Losses(Callback):
    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.losses.append(outputs["loss"].item())


def fit(cfg, monkeypatch, cached: bool):
    """Train ``cfg``; returns (losses, round-1 imputation, interpolation solves, the store)."""
    solves = []
    original = ConditionalUNet.__init__

    def counting_init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        solve = self.interp
        self.interp = lambda x, o: solves.append(x.shape[0]) or solve(x, o)

    monkeypatch.setattr(ConditionalUNet, "__init__", counting_init)
    if not cached:  # the field offers no per-item interpolation: solved at every step
        monkeypatch.setattr(ConditionalUNet, "interpolate_items", lambda self, x, o: None)
    run, _ = build(cfg)
    check_data(run)
    losses = Losses()
    run.trainer.callbacks.append(losses)
    run.trainer.fit(run.module, datamodule=run.datamodule)
    monkeypatch.undo()
    imputed = load_file(run.output_dir / "imputed" / "round_001.safetensors")["imputed"]
    return losses.losses, imputed, solves, run.datamodule.store


def test_cached_source_interpolation_gives_the_same_losses_and_imputation(tiny_config, tmp_path, monkeypatch):
    overrides = [*INTERP, "miri.flip=true"]  # the cached interpolation must be mirrored with its item
    cached = fit(tiny_config(*overrides), monkeypatch, cached=True)
    cfg = tiny_config(*overrides)
    cfg.output_dir = str(tmp_path / "uncached")
    uncached = fit(cfg, monkeypatch, cached=False)
    (losses, imputed, solves, store), (losses_ref, imputed_ref, solves_ref, store_ref) = cached, uncached
    assert store.interp is not None and store.interp.shape == store.imputed.shape and store_ref.interp is None
    assert losses == pytest.approx(losses_ref, rel=1e-4, abs=1e-6)
    assert torch.allclose(imputed, imputed_ref, atol=1e-4), (imputed - imputed_ref).abs().max()
    observed = store.observed
    assert torch.equal(imputed[observed], imputed_ref[observed])
    # cached: 64 items once, then the partner view's per step (16 pairs x 5 steps), none in the ODE;
    # solving it every step: both views per step, and once per ODE batch (2 batches of 32)
    assert sum(solves) == 64 + 5 * 16
    assert sum(solves_ref) == 5 * 2 * 16 + 64
    # derived from the data alone: not saved with the run (a resumed run rebuilds it as it starts)
    checkpoint = torch.load(tmp_path / "run" / "last.ckpt", weights_only=True)
    assert all("interp" not in key for key in checkpoint["MIRIDataModule"])


def test_the_cache_is_the_interpolation_of_each_items_observed_entries(tiny_config):
    run, _ = build(tiny_config(*INTERP))
    check_data(run)
    store = run.datamodule.store
    from miri_lightning.data.store import cache_interpolation, decode

    cache_interpolation(store, run.module.velocity.interpolate_items, "cpu", chunk=20)
    x, o = decode(store.imputed), store.observed
    want = run.module.velocity.interp(x, o)
    assert torch.allclose(store.interp, want, atol=1e-6)
    # it reads observed entries only: another fill of the missing ones gives the same cache
    refilled = torch.where(o, x, torch.rand_like(x))
    assert torch.allclose(run.module.velocity.interp(refilled, o), want, atol=1e-6)
    # a field without interpolation inputs keeps none
    cache_interpolation(store, lambda x, o: None, "cpu")
    assert store.interp is None


def test_the_progress_bar_reads_the_loss_every_log_interval_not_every_step(tiny_config, monkeypatch):
    from lightning.pytorch.callbacks import RichProgressBar

    reads = []
    plain = RichProgressBar.get_metrics
    monkeypatch.setattr(RichProgressBar, "get_metrics", lambda self, *a: reads.append(1) or plain(self, *a))
    cfg = tiny_config("miri.rounds=1", "miri.steps_per_round=12", "trainer.log_every_n_steps=4")
    cfg.trainer.enable_progress_bar = True
    run, _ = build(cfg)
    run.trainer.fit(run.module, datamodule=run.datamodule)
    # each read converts the logged loss with .item(): a host sync on an accelerator
    assert 3 <= len(reads) <= 5, len(reads)  # steps 4, 8, 12 and the round's end (not 12 reads)


def test_compiled_ode_batches_are_padded_to_one_size_and_impute_the_same(tiny_config):
    run, _ = build(tiny_config(*INTERP, "data.n=40", "miri.impute_batch_size=16"))
    run.trainer.fit(run.module, datamodule=run.datamodule)
    store, trainer, module = run.datamodule.store, run.trainer, run.module
    sizes = []
    module.imputer().register_forward_pre_hook(lambda m, args: sizes.append(args[0].shape[0]))
    # reimpute writes the new imputation into the tensor it is given: each call gets a copy
    plain = run.miri.reimpute(trainer, module, store.imputed.clone(), store.observed, store.interp)
    assert sorted(set(sizes)) == [8, 16]  # 40 items: 16, 16, 8
    sizes.clear()
    module.hparams.compile = True  # what the callback does for a compiled field (not compiled here)
    padded = run.miri.reimpute(trainer, module, store.imputed.clone(), store.observed, store.interp)
    assert set(sizes) == {16}  # the last batch padded: one shape, no recompilation
    assert padded.shape == plain.shape and torch.allclose(padded, plain, atol=1e-6)
