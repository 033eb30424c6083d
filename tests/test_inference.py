"""RunFlows is the run's own imputer: on the training items, from the same fill, every round's
flow in order reproduces the stored imputation; init=mean uses the training set's means."""

import pytest
import torch

from miri_lightning import flow
from miri_lightning.data.store import decode, fill_seed
from miri_lightning.inference import RunFlows
from miri_lightning.run import train
from miri_lightning.snapshots import load_snapshot


@pytest.mark.parametrize("init", ["noise", "mean"])
def test_run_flows_reproduce_the_stored_imputation_and_need_every_round(tiny_config, init):
    # no fill noise (sample_noise null: draws take init_noise=0): the subset below is filled
    # without a generator to match the store's draws
    settings = ("miri.rounds=2", "miri.steps_per_round=8", f"miri.init={init}", "miri.init_noise=0")
    settings += ("miri.coupling=independent",)  # the paper's chain Φ_2 ∘ Φ_1 (coupling=fill: below)
    run = train(tiny_config(*settings, "miri.sample_noise=null"))
    stored = load_snapshot(run.output_dir / "imputed" / "round_002.safetensors")
    observed, truth = stored["observed"], decode(run.datamodule.store.truth)
    x = torch.where(observed, truth, 0)
    flows = RunFlows(run.output_dir)
    # the fill the store drew in round 0: the same generator and seed path
    again = flows.impute(x, observed, torch.Generator().manual_seed(fill_seed(0)), batch_size=32)
    assert torch.allclose(again, stored["imputed"], atol=1e-5), (again - stored["imputed"]).abs().max()
    fill = flow.initial_fill(x, observed, init, torch.Generator().manual_seed(fill_seed(0)))
    assert not torch.allclose(fill, stored["imputed"], atol=1e-3)  # the flows moved it
    flows.nets.pop(0)  # without round 1's flow the composition is another map
    skipped = flows.impute(x, observed, torch.Generator().manual_seed(fill_seed(0)), batch_size=32)
    assert (skipped - stored["imputed"]).abs().max() > 1e-3
    if init == "mean":
        # new items get the TRAINING set's channel means, not their own: a subset of 4 items
        # whose own means differ is filled with the training means, so it reproduces the store
        expected = flow.observed_channel_mean(x, observed)
        assert torch.allclose(torch.tensor(flows.fill_mean), expected, atol=1e-5)
        own = flow.observed_channel_mean(x[:4], observed[:4])
        assert (own - expected).abs().max() > 1e-3
        flows = RunFlows(run.output_dir)
        part = flows.impute(x[:4], observed[:4], torch.Generator(), batch_size=32)
        assert torch.allclose(part, stored["imputed"][:4], atol=1e-5)


def test_run_flows_draw_their_fill_noise_as_the_run_did(tiny_config):
    # init_noise_mode=local: new draws scale σ by the local spread, as the run's store did;
    # drawn with a constant σ instead, the same generator gives another fill and imputation
    overrides = ("miri.steps_per_round=4", "miri.init=biharmonic", "miri.init_noise=0.5", "miri.init_noise_mode=local")
    overrides += ("miri.coupling=independent",)  # round 1 then starts from the store's round-0 fill
    run = train(tiny_config("miri.rounds=1", "miri.sample_noise=null", *overrides))
    stored = load_snapshot(run.output_dir / "imputed" / "round_001.safetensors")
    observed, truth = stored["observed"], decode(run.datamodule.store.truth)
    x = torch.where(observed, truth, 0)
    flows = RunFlows(run.output_dir)
    assert flows.noise_mode == "local"
    again = flows.impute(x, observed, torch.Generator().manual_seed(fill_seed(0)), batch_size=32)
    assert torch.allclose(again, stored["imputed"], atol=1e-5), (again - stored["imputed"]).abs().max()
    flows.noise_mode = "constant"
    other = flows.impute(x, observed, torch.Generator().manual_seed(fill_seed(0)), batch_size=32)
    assert (other - stored["imputed"]).abs().max() > 1e-2


def test_with_fill_coupling_a_draw_is_the_last_rounds_flow_on_a_fresh_fill(tiny_run):
    """miri.coupling=fill (the default; the session's tiny run): each round's flow is a whole
    sampler, so the imputer is Φ_R on a noisy fill, not Φ_R ∘ … ∘ Φ_1; the store's last round is
    that flow on fills drawn from the round's own seed."""
    from miri_lightning.data.datamodule import round_seed

    out = tiny_run.output_dir
    stored = load_snapshot(out / "imputed" / "round_002.safetensors")
    observed, truth = stored["observed"], decode(tiny_run.datamodule.store.truth)
    x = torch.where(observed, truth, 0)
    flows = RunFlows(out)
    assert flows.coupling == "fill" and flows.imputers == flows.nets[-1:] and len(flows.nets) == 2
    seed = round_seed(0, 1, 0, stream=3)  # the round-2 re-imputation's fresh fills
    again = flows.impute(x, observed, torch.Generator().manual_seed(seed), batch_size=32)
    assert torch.allclose(again, stored["imputed"], atol=1e-5), (again - stored["imputed"]).abs().max()
    flows.coupling = "independent"  # through both rounds' flows: another imputation
    chained = flows.impute(x, observed, torch.Generator().manual_seed(seed), batch_size=32)
    assert (chained - stored["imputed"]).abs().max() > 1e-3
