"""Runs you can trust: kill anywhere and resume, DDP stores, retention, damaged files, faults."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_distributed import check_shards_and_stores

from miri_lightning.run import train

ROOT = Path(__file__).resolve().parents[1]

#: The tiny run of these tests, as command-line overrides.
TINY_CLI = [
    "trainer=cpu",
    "data.n=48",
    "data.image_size=16",
    "model=unet_tiny",
    "miri.batch_size=16",
    "miri.impute_batch_size=16",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
]


def launch(output_dir, *overrides):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "train.py", *TINY_CLI, f"output_dir={output_dir}", *overrides],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def kill_when(process, pattern, delay=0.0, timeout=300):
    """SIGKILL ``process`` ``delay`` s after a line of its output matches ``pattern``."""
    deadline = time.monotonic() + timeout
    seen = []
    for line in process.stdout:
        seen.append(line)
        if re.search(pattern, line):
            time.sleep(delay)
            process.send_signal(signal.SIGKILL)
            process.wait(30)
            seen.append(process.stdout.read())  # what it printed up to the kill, not only up to the match
            return "".join(seen)
        assert time.monotonic() < deadline, "".join(seen)
    raise AssertionError(f"the run ended before {pattern!r}:\n" + "".join(seen))


def finish(process, timeout=300):
    out, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, out
    return out


def events(output_dir):
    accumulator = EventAccumulator(str(Path(output_dir) / "tensorboard"), size_guidance={"scalars": 0})
    accumulator.Reload()
    return accumulator


def steps(accumulator, tag):
    return [event.step for event in accumulator.Scalars(tag)]


@pytest.mark.slow
@pytest.mark.parametrize(
    "phase",
    # one process killed mid-training or mid-ODE: slow (~1 min each); the default tier kills a
    # 2-rank SLURM run mid-round and resumes it to the same result (test_distributed.py)
    ["training", "re-imputing"],
)
def test_a_run_killed_mid_round_resumes_to_the_same_result(tmp_path, phase):
    common = ["miri.rounds=3", "miri.steps_per_round=40", "miri.ode_steps=40"]
    killed = launch(tmp_path / "killed", *common)
    pattern = r"round 2: training" if phase == "training" else r"round 2: rank 0 re-imputing"
    output = kill_when(killed, pattern, delay=1.0 if phase == "training" else 0.2)
    assert killed.returncode == -signal.SIGKILL
    assert "round   1 |" in output and "round   2 |" not in output
    # the kill left round 1 whole: its snapshot loads, and no later one exists
    assert load_file(tmp_path / "killed" / "imputed" / "round_001.safetensors")["imputed"].shape[0] == 48
    assert not (tmp_path / "killed" / "imputed" / "round_002.safetensors").exists()

    resumed = finish(launch(tmp_path / "killed", *common, "ckpt_path=last"))
    assert "round   1 | resumed" in resumed
    assert re.search(r"round   2 \|\s+[\d.]+ s", resumed) and re.search(r"round   3 \|\s+[\d.]+ s", resumed)
    uninterrupted = launch(tmp_path / "whole", *common)
    finish(uninterrupted)

    for round_index in (1, 2, 3):
        load_file(tmp_path / "killed" / "imputed" / f"round_{round_index:03d}.safetensors")
    last = torch.load(tmp_path / "killed" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 2 and last["MIRIDataModule"]["round"] == 3

    # the same seeds per round: the resumed run repeats the killed round exactly
    a = load_file(tmp_path / "killed" / "imputed" / "round_003.safetensors")["imputed"]
    b = load_file(tmp_path / "whole" / "imputed" / "round_003.safetensors")["imputed"]
    assert torch.equal(a, b)

    # TensorBoard: one point per round and per step, in order, as in the uninterrupted run
    killed_events, whole_events = events(tmp_path / "killed"), events(tmp_path / "whole")
    for tag in ("round/psnr_missing", "train/loss"):
        assert steps(killed_events, tag) == steps(whole_events, tag)
    assert steps(killed_events, "round/psnr_missing") == [0, 40, 80, 120]
    assert steps(killed_events, "train/loss") == list(range(0, 120))
    assert not (tmp_path / "killed" / "version_1").exists()


@pytest.mark.slow  # Lightning's own launcher; the default tier checks the same under torchrun (test_distributed)
def test_ddp_ranks_impute_disjoint_shards_and_end_with_identical_stores(tmp_path):
    out = tmp_path / "ddp"
    # hydra.verbose: the callback's DEBUG line with each rank's store hash (a whole-store hash, off by default)
    overrides = ["data.n=45", "miri.rounds=2", "miri.steps_per_round=4", "miri.ode_steps=3"]
    finish(launch(out, "trainer=ddp_cpu", *overrides, "hydra.verbose=miri_lightning.callbacks.miri"))
    check_shards_and_stores(out, 45)  # odd: shards of 22 and 23


def tiny(tiny_config, *overrides):
    return tiny_config("trainer.log_every_n_steps=1", *overrides)


def test_only_the_last_k_rounds_are_kept_and_any_kept_round_resumes(tiny_config, tmp_path):
    run = train(tiny(tiny_config, "miri.rounds=4", "checkpoint.keep=2"))
    out = run.output_dir
    assert sorted(p.name for p in (out / "imputed").iterdir()) == ["round_003.safetensors", "round_004.safetensors"]
    assert sorted(p.name for p in out.glob("*.ckpt")) == ["last.ckpt", "round_003.ckpt", "round_004.ckpt"]
    resumed = train(tiny(tiny_config, "miri.rounds=4", f"ckpt_path={out / 'round_003.ckpt'}"))
    assert [h["round"] for h in resumed.miri.history] == [3, 4]


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_round(tiny_config, tmp_path):
    train(tiny(tiny_config, "miri.rounds=1"))
    out = tmp_path / "run"
    good = (out / "imputed" / "round_001.safetensors").read_bytes()
    with pytest.raises(FloatingPointError, match="ckpt_path=last"):
        train(tiny(tiny_config, "miri.rounds=2", "ckpt_path=last", "optim.lr=1e30"))
    assert (out / "imputed" / "round_001.safetensors").read_bytes() == good
    assert not (out / "imputed" / "round_002.safetensors").exists()
    assert torch.load(out / "last.ckpt", weights_only=True)["MIRIDataModule"]["round"] == 1
    # and the run goes on from there with a sane learning rate
    assert [h["round"] for h in train(tiny(tiny_config, "miri.rounds=2", "ckpt_path=last")).miri.history] == [1, 2]


def test_damaged_checkpoint_and_snapshot_get_clear_errors(tiny_config, tmp_path):
    train(tiny(tiny_config, "miri.rounds=1"))
    out = tmp_path / "run"
    snapshot = out / "imputed" / "round_001.safetensors"
    snapshot.write_bytes(snapshot.read_bytes()[:1000])
    with pytest.raises(ValueError, match="round_001.safetensors cannot be read"):
        train(tiny(tiny_config, "miri.rounds=2", "ckpt_path=last"))
    last = out / "last.ckpt"
    last.write_bytes(last.read_bytes()[:5000])
    with pytest.raises(ValueError, match="last.ckpt cannot be read"):
        train(tiny(tiny_config, "miri.rounds=2", "ckpt_path=last"))


def test_a_pickled_object_in_a_checkpoint_is_not_executed(tiny_config, tmp_path):
    train(tiny(tiny_config, "miri.rounds=1"))
    last = tmp_path / "run" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    checkpoint["payload"] = Path("/")  # an arbitrary class: weights_only loading must refuse it
    torch.save(checkpoint, last)
    with pytest.raises(ValueError, match="cannot be read"):
        train(tiny(tiny_config, "miri.rounds=2", "ckpt_path=last"))


def test_an_unwritable_output_dir_fails_before_any_work(tiny_config, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    cfg = tiny_config("miri.rounds=1")
    cfg.output_dir = str(blocker / "run")
    with pytest.raises(ValueError, match="is not writable"):
        train(cfg)
