"""Each fast-path switch keeps MIRI's invariants and imputes like the plain path (compile on
the CPU takes ~2 minutes: ``pytest -m slow``)."""

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
