"""A fault stops the run, on every rank, with its message and the last good round intact."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from miri_lightning import flow
from miri_lightning.run import train

ROOT = Path(__file__).resolve().parents[1]


def test_a_non_finite_loss_stops_the_run_at_the_next_check_naming_round_and_step(tiny_config, tmp_path, monkeypatch):
    plain, calls = flow.miri_loss, []

    def nan_from_step_12(*args, **kwargs):  # round 2 (10 steps a round), its third step
        calls.append(1)
        return plain(*args, **kwargs) * (float("nan") if len(calls) > 12 else 1.0)

    monkeypatch.setattr(flow, "miri_loss", nan_from_step_12)
    cfg = tiny_config("miri.rounds=2", "trainer.log_every_n_steps=4")
    with pytest.raises(
        FloatingPointError, match=r"round 2, steps 10\.\.13 \(first: rank 0 at step 12\).*ckpt_path=last"
    ):
        train(cfg)
    # read on the device every 4 steps: the run stopped at the first read after the NaN, before the round's end
    assert len(calls) == 14
    out = tmp_path / "run"
    assert load_file(out / "imputed" / "round_001.safetensors")["imputed"].shape[0] == 64
    assert not (out / "imputed" / "round_002.safetensors").exists()
    assert torch.load(out / "last.ckpt", weights_only=True)["MIRIDataModule"]["round"] == 1


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("nan", "train/loss is not finite in round 2, steps 8..9 (first: rank 1 at step 8"),
        pytest.param(
            "impute_error",
            "injected fault in the re-imputation of rank 1",
            marks=pytest.mark.slow,  # the same mechanism at round end; ~1 minute more
        ),
    ],
)
def test_a_fault_on_one_rank_stops_every_rank_with_the_last_good_round_intact(tmp_path, fault, message):
    out, exits = tmp_path / "ddp", tmp_path / "exits"
    exits.mkdir()
    overrides = [
        "trainer=ddp_cpu",
        "data.n=48",
        "data.image_size=16",
        "model=unet_tiny",
        "miri.batch_size=16",
        "miri.impute_batch_size=16",
        "miri.rounds=2",
        "miri.steps_per_round=6",
        "miri.ode_steps=3",
        "trainer.enable_progress_bar=false",
        "trainer.log_every_n_steps=2",
        f"output_dir={out}",
    ]
    # test-only: tests/fault_injection.py makes rank 1's loss NaN from step 8 on (round 2), or
    # its re-imputation raise (round 1: round 0, the initial fill, is then the last good round)
    env = {
        **os.environ,
        "MIRI_TEST_FAULT": fault,
        "MIRI_TEST_FAULT_RANK": "1",
        "MIRI_TEST_FAULT_STEP": "8",
        "MIRI_TEST_EXITS": str(exits),
    }
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "fault_injection.py"), *overrides],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise AssertionError("a rank was left waiting: the run did not stop within 600 s") from None
    deadline = time.monotonic() + 60  # rank 1 is Lightning's child: give it time to write its exit
    while not (exits / "rank1.exit").exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    injected = float((exits / "injected").read_text())
    codes = {}
    for rank in (0, 1):
        code, when = (exits / f"rank{rank}.exit").read_text().split()
        codes[rank] = int(code)
        print(f"{fault}: rank {rank} exited with {code} {float(when) - injected:.1f} s after the fault")
    assert process.returncode != 0 and codes[0] != 0 and codes[1] != 0, output
    assert message in output, output
    if fault == "nan":
        assert load_file(out / "imputed" / "round_001.safetensors")["imputed"].shape[0] == 48
        assert not (out / "imputed" / "round_002.safetensors").exists()
        assert torch.load(out / "last.ckpt", weights_only=True)["MIRIDataModule"]["round"] == 1
    else:  # rank 0 names the failed rank; no round was completed, none saved
        assert "rank 1 failed in the re-imputation of round 1" in output, output
        assert not (out / "imputed").exists() or not list((out / "imputed").iterdir())
        assert not (out / "last.ckpt").exists()
