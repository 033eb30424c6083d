"""Each fast-path switch keeps MIRI's invariants and imputes like the plain path (compile on
the CPU takes ~2 minutes: ``pytest -m slow``)."""

import itertools

import pytest
import torch
from safetensors.torch import load_file

from miri_lightning import flow
from miri_lightning.data.store import decode, fill_seed
from miri_lightning.run import train

SWITCHES = {
    "channels_last": (["miri.channels_last=true"], 1e-4),
    "store_on_device": (["miri.store_on_device=true"], 0.0),  # a no-op on the CPU: identical
    "bf16": (["trainer.precision=bf16-mixed"], 0.03),
    "compile": (["miri.compile=true"], 1e-3),
}


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    from conftest import compose_config

    run = train(compose_config(["miri.rounds=1"], tmp_path_factory.mktemp("plain") / "run"))
    return load_file(run.output_dir / "imputed" / "round_001.safetensors"), run.datamodule.store


@pytest.mark.parametrize(
    "switch",
    [pytest.param(name, marks=pytest.mark.slow) if name == "compile" else name for name in SWITCHES],
)
def test_switch_keeps_observed_entries_and_imputes_like_the_plain_path(plain, tiny_config, switch):
    if switch == "compile":
        pytest.importorskip("torch._inductor")
    overrides, tolerance = SWITCHES[switch]
    reference, store = plain
    run = train(tiny_config("miri.rounds=1", *overrides))
    imputed = load_file(run.output_dir / "imputed" / "round_001.safetensors")["imputed"]
    observed = reference["observed"]
    assert torch.equal(imputed[observed], reference["imputed"][observed])  # bit for bit
    difference = (imputed - reference["imputed"])[~observed].abs().mean().item()
    assert difference <= tolerance, difference
    # the round moved the imputation from its initial fill far more than the switch changes it
    initial = flow.initial_fill(decode(store.truth), observed, "noise", torch.Generator().manual_seed(fill_seed(0)))
    moved = (reference["imputed"] - initial)[~observed].abs().mean().item()
    assert moved > 5 * difference, (moved, difference)


def test_cosine_schedule_decays_within_each_round_and_restarts(tiny_config):
    from lightning import Callback

    from miri_lightning.run import build

    class RecordLr(Callback):
        def __init__(self):
            self.lrs = []

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            self.lrs.append((trainer.current_epoch, trainer.optimizers[0].param_groups[0]["lr"]))

    run, _ = build(tiny_config("optim.schedule=cosine", "optim.lr=0.002", "miri.steps_per_round=8"))
    record = RecordLr()
    run.trainer.callbacks.append(record)
    run.trainer.fit(run.module, datamodule=run.datamodule)
    for round_index in (0, 1):
        lrs = [lr for epoch, lr in record.lrs if epoch == round_index]
        assert len(lrs) == 8
        assert lrs[0] == pytest.approx(0.002)  # every round starts at optim.lr
        assert all(a > b for a, b in itertools.pairwise(lrs)), lrs
        assert lrs[-1] < 0.002 * 0.05


def test_mirroring_flips_images_with_their_masks_and_keeps_observed_entries(tiny_config):
    from miri_lightning.module import mirror

    x = torch.rand(64, 3, 8, 8)
    mask = x > 0.5
    flipped, flipped_mask = mirror((x, mask), torch.Generator().manual_seed(0))
    assert torch.equal(flipped_mask, flipped > 0.5)  # one draw per item, shared by image and mask
    mirrored = torch.tensor([torch.equal(a, b.flip(-1)) for a, b in zip(flipped, x, strict=True)])
    assert 16 < mirrored.sum() < 48
    assert all(torch.equal(a, b) for a, b, m in zip(flipped, x, mirrored, strict=True) if not m)

    run = train(tiny_config("miri.rounds=1", "miri.flip=true"))
    imputed = load_file(run.output_dir / "imputed" / "round_001.safetensors")
    truth = decode(run.datamodule.store.truth)
    assert torch.equal(imputed["imputed"][imputed["observed"]], truth[imputed["observed"]])


@pytest.mark.parametrize("loss_on", flow.LOSS_ON)
def test_loss_on_decides_which_entries_the_training_step_counts(tiny_config, loss_on):
    from miri_lightning.run import build

    run, _ = build(tiny_config(f"miri.loss_on={loss_on}"))
    g = torch.Generator().manual_seed(0)
    source, partner = torch.rand(2, 8, 3, 16, 16, generator=g)
    observed, partner_observed = torch.rand(2, 8, 3, 16, 16, generator=g) > 0.5
    torch.manual_seed(1)
    loss = run.module.training_step((source, observed, partner, partner_observed), 0)
    torch.manual_seed(1)
    t = torch.rand(8)
    counted = {"missing": None, "partner_observed": partner_observed}[loss_on]
    other = partner_observed if counted is None else None
    field = run.module.velocity
    assert loss.item() == pytest.approx(flow.miri_loss(field, source, partner, observed, t, counted).item())
    assert loss.item() != pytest.approx(flow.miri_loss(field, source, partner, observed, t, other).item())
