"""End to end through the real Trainer, the real U-Net (tiny) and the embedded data."""

import itertools
from pathlib import Path

import pytest
import torch
from conftest import PAPER_FILL
from hydra.errors import InstantiationException
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from miri_lightning import flow
from miri_lightning.data.store import decode
from miri_lightning.run import train

ROOT = Path(__file__).resolve().parents[1]

#: What three short rounds of a tiny U-Net must gain over the uniform-noise fill (~8 dB) at
#: 30 % missing. Measured: +6.7 dB (8.0 -> 14.7); a broken loss, ODE or store gains nothing.
MARGIN_DB = 3.0


def scalars(output_dir, tag):
    events = EventAccumulator(str(output_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)], events.Tags()


def test_psnr_on_missing_entries_rises_over_the_initial_fill(tiny_config):
    cfg = tiny_config(*PAPER_FILL, "miri.rounds=3", "miri.steps_per_round=40", "mask.rate=0.3", "metrics.mine_steps=30")
    run = train(cfg)
    history = run.miri.history
    assert [h["round"] for h in history] == [0, 1, 2, 3]
    psnr = [h["psnr_missing"] for h in history]
    assert psnr[-1] > psnr[0] + MARGIN_DB, psnr
    assert all(later > earlier for earlier, later in itertools.pairwise(psnr)), psnr

    out = run.output_dir
    assert (out / "last.ckpt").is_file() and (out / "config.yaml").is_file()
    logged, tags = scalars(out, "round/psnr_missing")
    assert [step for step, _ in logged] == [0, 40, 80, 120]  # the step that ends each round
    assert [v for _, v in logged] == pytest.approx(psnr)
    for tag in ("train/loss", "round/psnr_full", "round/rmse_missing", "round/ssim", "round/mmd", "round/swd"):
        assert tag in tags["scalars"]
    assert history[-1]["swd"] < history[0]["swd"]  # the uniform-noise fill is the least realistic
    assert "round/mutual_information" in tags["scalars"]
    assert {"round/reconstructions", "round/difference"} <= set(tags["images"])

    store = run.datamodule.store
    for round_index in (1, 2, 3):
        snapshot = load_file(out / "imputed" / f"round_{round_index:03d}.safetensors")
        assert snapshot["imputed"].shape == store.truth.shape
        assert torch.equal(snapshot["observed"], store.observed)
        # observed entries are the data, bit for bit, in every round
        assert torch.equal(snapshot["imputed"][store.observed], decode(store.truth)[store.observed])
    assert torch.equal(snapshot["imputed"], store.imputed)
    assert not list((out / "imputed").glob(".*tmp*"))


def test_resume_continues_rounds_and_curves_without_gap_or_duplicate(tiny_run, tiny_run_copy, tiny_config):
    first = tiny_run  # two rounds, copied to tiny_config's output_dir
    second = train(tiny_config("miri.rounds=3", "ckpt_path=last"))
    # the restored store of round 2 (read back from its snapshot) is reported again, then round 3
    assert [h["round"] for h in second.miri.history] == [2, 3]
    assert second.miri.history[0]["psnr_missing"] == pytest.approx(first.miri.history[-1]["psnr_missing"])
    assert second.trainer.current_epoch == 3
    assert second.output_dir == tiny_run_copy
    logged, _ = scalars(second.output_dir, "round/psnr_missing")
    assert [step for step, _ in logged] == [0, 10, 20, 30]
    # one events file per launch, both in the same directory: the curves continue
    names = [p.name for p in (second.output_dir / "tensorboard").iterdir()]
    assert sum(name.startswith("events.out.tfevents") for name in names) == 2, names
    assert not (second.output_dir / "tensorboard" / "version_1").exists()


def test_a_new_run_does_not_overwrite_an_existing_one(tiny_config):
    train(tiny_config("miri.rounds=1"))
    with pytest.raises(ValueError, match="ckpt_path=last"):
        train(tiny_config("miri.rounds=1"))
    train(tiny_config("miri.rounds=1", "overwrite=true"))


def test_resume_with_other_data_mask_or_size_is_refused_before_training(tiny_config):
    train(tiny_config("miri.rounds=1"))
    with pytest.raises(ValueError, match="another mask"):
        train(tiny_config("miri.rounds=2", "ckpt_path=last", "mask.seed=5"))
    with pytest.raises(ValueError, match="shape"):
        train(tiny_config("miri.rounds=2", "ckpt_path=last", "data.n=50"))
    with pytest.raises(ValueError, match="shape"):
        train(tiny_config("miri.rounds=2", "ckpt_path=last", "data.image_size=8"))
    with pytest.raises(ValueError, match="other images"):
        train(tiny_config("miri.rounds=2", "ckpt_path=last", "data.seed=1"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("mask.rate=1.5", "mask.rate"),
        ("mask.rate=0", "mask.rate"),
        ("data.image_size=15", "data.image_size=15"),
        ("model.channels=1", "model.channels=1"),
        ("miri.solver=rk4", "miri.solver"),
        ("optim.schedule=linear", "optim.schedule"),
        ("miri.loss_on=observed", "miri.loss_on"),
        ("miri.coupling=paper", "miri.coupling"),
        ("miri.init=median", "miri.init"),
    ],
)
def test_bad_settings_fail_with_the_setting_named_before_training(tiny_config, monkeypatch, override, message):
    import lightning

    def fit(*args, **kwargs):
        raise AssertionError("training started before the bad setting was refused")

    monkeypatch.setattr(lightning.Trainer, "fit", fit)
    # a mask's own check is raised through hydra's instantiate, which wraps it
    with pytest.raises((ValueError, InstantiationException), match=message):
        train(tiny_config(override))


# uint8 (quantised to 1/255) in the default tier, float16 (the same encode/decode path) in slow
@pytest.mark.parametrize("dtype", [pytest.param("float16", marks=pytest.mark.slow), "uint8"])
def test_compact_stores_keep_observed_pixels_and_still_improve(tiny_config, dtype):
    settings = [*PAPER_FILL, f"data.store_dtype={dtype}", "miri.steps_per_round=30", "mask.rate=0.3"]
    run = train(tiny_config(*settings, "miri.rounds=2"))
    store = run.datamodule.store
    assert store.imputed.dtype == getattr(torch, dtype) and store.truth.dtype == torch.uint8
    per_value = {"float16": 2, "uint8": 1}[dtype] + 1 + 1  # imputed, mask, truth
    assert store.nbytes == store.imputed.numel() * per_value
    snapshot = load_file(run.output_dir / "imputed" / "round_002.safetensors")
    assert snapshot["imputed"].dtype == store.imputed.dtype
    # observed pixels come back exactly after the 8-bit round trip
    levels = (decode(snapshot["imputed"]) * 255).round().to(torch.uint8)
    assert torch.equal(levels[store.observed], store.truth[store.observed])
    psnr = [h["psnr_missing"] for h in run.miri.history]
    assert psnr[-1] > psnr[0] + 2, psnr
    resumed = train(tiny_config(*settings, "miri.rounds=3", "ckpt_path=last"))
    assert [h["round"] for h in resumed.miri.history] == [2, 3]


def test_round_fid_without_inception_weights_is_skipped_with_one_line(tiny_config, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-cache"))
    run = train(tiny_config("metrics.fid=true", "miri.rounds=1"))
    out = capsys.readouterr().out
    assert out.count("round/fid skipped") == 1 and "weights-inception-2015-12-05-6726825d.pth" in out
    assert all("fid" not in record for record in run.miri.history)
    assert {"ssim_missing", "mae_missing"} <= set(run.miri.history[-1])


@pytest.mark.parametrize("ema", [0.0, "default"])
def test_every_rounds_flow_is_saved_and_reproduces_its_round(request, tiny_config, ema):
    """With miri.ema > 0 (the default, 0.99: the session's tiny run) the EMA weights impute and
    are saved as the flow; the checkpoint holds the trained weights only (loadable with or
    without EMA)."""
    from miri_lightning import flow
    from miri_lightning.data.datamodule import round_seed
    from miri_lightning.nets import build_net
    from miri_lightning.snapshots import load_flow

    run = request.getfixturevalue("tiny_run") if ema == "default" else train(tiny_config(f"miri.ema={ema}"))
    assert (run.module.hparams.ema == 0) == (ema == 0)
    out = run.output_dir
    trained = run.module.velocity.state_dict()
    saved, _ = load_flow(out / "flows" / "round_002.safetensors")
    same = all(torch.equal(saved[k], trained[k]) for k in trained)
    assert same == (ema == 0)
    checkpoint = torch.load(out / "last.ckpt", weights_only=True)
    assert all(k.startswith("velocity.") for k in checkpoint["state_dict"])
    assert sorted(p.name for p in (out / "flows").iterdir()) == ["round_001.safetensors", "round_002.safetensors"]
    before = load_file(out / "imputed" / "round_001.safetensors")
    after = load_file(out / "imputed" / "round_002.safetensors")
    state, net_config = load_flow(out / "flows" / "round_002.safetensors")
    net = build_net(net_config, "flow").eval()
    net.load_state_dict(state)
    # round 2's flow carries a fresh noisy fill of each item (miri.coupling=fill, the default),
    # drawn from the round's own seed, onto round 2's imputation; round 1's missing entries unused
    fill = run.module.hparams.fill
    fresh = torch.Generator().manual_seed(round_seed(0, 1, 0, stream=3))
    parts = []
    with torch.no_grad():
        for k in range(0, 64, 32):
            x, o = before["imputed"][k : k + 32], before["observed"][k : k + 32]
            start = flow.fill_source(x, o, fill["init"], fill["noise"], fill["noise_mode"], fresh)
            parts.append(flow.impute(net, start, o, 4, "heun"))
    assert torch.equal(torch.cat(parts), after["imputed"])


@pytest.mark.filterwarnings(r"ignore:You are trying to `self.log\(\)`")
def test_fill_coupling_trains_from_fresh_fills_of_the_partner_view_not_from_the_source_item():
    """miri.coupling=fill: a step's sources are noisy fills of the partner views (fresh noise
    every step); the source items' own values never enter the loss, only their masks."""
    from miri_lightning.module import MIRIModule

    net = {"name": "unet", "channels": 3, "image_size": 16, "block_out_channels": [8, 16]}
    net |= {"attention": [False, False], "mid_attention": False, "norm_num_groups": 4, "interp_inputs": "biharmonic"}
    fill = {"init": "biharmonic", "noise": 0.6, "noise_mode": "local"}
    module = MIRIModule(net, coupling="fill", fill=fill, loss_on="partner_observed")
    torch.nn.init.normal_(module.velocity.unet.conv_out.weight, std=0.05)  # as if trained
    g = torch.Generator().manual_seed(0)
    source, partner = torch.rand(2, 4, 3, 16, 16, generator=g)
    observed, partner_observed = (torch.rand(2, 4, 1, 16, 16, generator=g) > 0.5).expand(-1, -1, 3, -1, -1)

    def loss(items, seed=1):
        module._times = torch.Generator().manual_seed(seed)
        return module.training_step((items, observed, partner, partner_observed), 0).item()

    garbage = torch.where(observed, source, torch.full_like(source, float("nan")))
    assert loss(source) == loss(garbage) == loss(torch.rand_like(source))  # the source item is unused
    assert loss(source, seed=1) != loss(source, seed=2)  # the fill's noise is drawn at every step
    # the source's observed entries are the partner's, so its two views are one: the step solves
    # the field's interpolation once, and scores exactly what two separate views would
    solves, interp = [], module.velocity.interp
    module.velocity.interp = lambda x, o: solves.append(1) or interp(x, o)
    one = loss(source)
    g = torch.Generator().manual_seed(1)
    t = torch.rand(4, generator=g)
    z0 = flow.fill_source(partner, observed, "biharmonic", 0.6, "local", g)
    two = flow.miri_loss(module.velocity, z0, partner, observed, t, partner_observed).item()
    assert len(solves) == 3 and one == pytest.approx(two, rel=1e-6)  # 1 (one view) + 2 (two views)
