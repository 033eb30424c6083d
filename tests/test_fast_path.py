"""Each fast-path switch keeps MIRI's invariants and imputes like the plain path (compile on
the CPU takes ~2 minutes: ``pytest -m slow``)."""

import itertools

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from miri_lightning import flow
from miri_lightning.data.store import decode, fill_seed
from miri_lightning.inference import RunFlows
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
    return load_file(run.output_dir / "imputed" / "round_001.safetensors"), run.datamodule.store, run.output_dir


@pytest.mark.parametrize(
    "switch",
    [pytest.param(name, marks=pytest.mark.slow) if name == "compile" else name for name in SWITCHES],
)
def test_switch_keeps_observed_entries_and_imputes_like_the_plain_path(plain, tiny_config, switch):
    if switch == "compile":
        pytest.importorskip("torch._inductor")
    overrides, tolerance = SWITCHES[switch]
    reference, store, reference_dir = plain
    run = train(tiny_config("miri.rounds=1", *overrides))
    imputed = load_file(run.output_dir / "imputed" / "round_001.safetensors")["imputed"]
    observed = reference["observed"]
    assert torch.equal(imputed[observed], reference["imputed"][observed])  # bit for bit
    difference = (imputed - reference["imputed"])[~observed].abs().mean().item()
    assert difference <= tolerance, difference
    # the round moved the imputation from the run's own round-0 fill (the store's draw: the
    # run's fill and training noise, the store's seed) far more than the switch changes it
    flows = RunFlows(reference_dir, sample_noise=float(OmegaConf.load(reference_dir / "config.yaml").miri.init_noise))
    x = torch.where(observed, decode(store.truth), 0)
    initial = flows.initial_fill(x, observed, torch.Generator().manual_seed(fill_seed(0)))
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

    run, _ = build(tiny_config(f"miri.loss_on={loss_on}", "miri.coupling=independent"))  # sources as given
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


def run_with_probe(tiny_config, *overrides):
    """Train one tiny round with a probe on the net's first convolution: per call, whether
    gradients were on (training) or off (the re-imputation), the dtype it computed in, and
    whether its input and weights were in channels-last layout."""
    from miri_lightning.run import build

    run, _ = build(tiny_config("miri.rounds=1", "miri.steps_per_round=2", *overrides))
    conv = next(m for m in run.module.velocity.modules() if isinstance(m, torch.nn.Conv2d))
    seen = []

    def probe(module, args, out):
        layout = torch.channels_last
        seen.append(
            (
                torch.is_grad_enabled(),
                out.dtype,
                args[0].is_contiguous(memory_format=layout) and not args[0].is_contiguous(),
                module.weight.is_contiguous(memory_format=layout) and not module.weight.is_contiguous(),
            )
        )

    conv.register_forward_hook(probe)
    run.trainer.fit(run.module, datamodule=run.datamodule)
    training, imputing = [s for s in seen if s[0]], [s for s in seen if not s[0]]
    assert training and imputing
    return run, training, imputing


@pytest.mark.parametrize("switch", ["plain", "bf16", "channels_last"])
def test_each_switch_is_engaged_inside_the_net_in_training_and_imputation(tiny_config, switch):
    """Not only harmless: bf16 autocast computes the convolutions in bfloat16 and channels-last
    feeds them channels-last inputs and weights, in the training step and in the ODE pass (the
    plain run is the control: float32, contiguous)."""
    overrides = {"plain": [], "bf16": SWITCHES["bf16"][0], "channels_last": SWITCHES["channels_last"][0]}[switch]
    _, training, imputing = run_with_probe(tiny_config, *overrides)
    for calls in (training, imputing):
        assert {dtype for _, dtype, _, _ in calls} == {torch.bfloat16 if switch == "bf16" else torch.float32}
        assert {inp and weight for _, _, inp, weight in calls} == {switch == "channels_last"}


@pytest.mark.slow
def test_compile_switch_runs_the_compiled_field(tiny_config):
    pytest.importorskip("torch._inductor")
    from torch._dynamo.utils import counters

    from miri_lightning.run import build

    torch._dynamo.reset()  # forget graphs an earlier test compiled (a cache hit captures none)
    counters.clear()
    # no probe here: a forward hook inside a compiled graph is not called from Python
    run, _ = build(tiny_config("miri.rounds=1", "miri.steps_per_round=2", "miri.compile=true"))
    run.trainer.fit(run.module, datamodule=run.datamodule)
    assert run.module._compiled is not None
    # TorchDynamo captured graphs of the field and ran them (set but unused: no graph at all)
    assert counters["stats"]["unique_graphs"] > 0, dict(counters["stats"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_fast_path_bf16_channels_last_store_on_device(tmp_path):
    """On a GPU: the store lives on the device, the net computes in bfloat16 with channels-last
    inputs, observed entries stay bit for bit, and the round improves on the fill."""
    from conftest import PAPER_FILL, TINY, compose_config

    on_gpu = [o if o != "trainer=cpu" else "trainer=gpu" for o in TINY]
    run, training, imputing = run_with_probe(
        lambda *overrides: compose_config(list(overrides), tmp_path / "run", base=on_gpu),
        *PAPER_FILL,  # from the noise fill a round gains dB; from the default's fill it may not in 50 steps
        "trainer.precision=bf16-mixed",
        "miri.channels_last=true",
        "miri.store_on_device=true",
        "miri.steps_per_round=50",
    )
    store = run.datamodule.store
    assert store.imputed.device.type == "cuda" and store.observed.device.type == "cuda"
    for calls in (training, imputing):
        assert {dtype for _, dtype, _, _ in calls} == {torch.bfloat16}
        assert all(inp and weight for _, _, inp, weight in calls)
    snapshot = load_file(run.output_dir / "imputed" / "round_001.safetensors")
    truth, observed = decode(store.truth).cpu(), snapshot["observed"]
    assert torch.equal(snapshot["imputed"][observed], truth[observed])
    history = run.miri.history
    assert history[-1]["psnr_missing"] > history[0]["psnr_missing"] + 1, history
