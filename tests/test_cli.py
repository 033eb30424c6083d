"""The command line as a user meets it: bad settings in one line, multirun directories,
Lightning arguments the run sets itself."""

import subprocess
import sys
from pathlib import Path

import pytest

from miri_lightning.run import train
from miri_lightning.settings import check_trainer_args
from miri_lightning.train_cli import sweep_jobs

ROOT = Path(__file__).resolve().parents[1]

#: A run of seconds, as command-line overrides.
TINY_CLI = [
    "trainer=cpu",
    "data.n=32",
    "data.image_size=16",
    "model=unet_tiny",
    "miri.rounds=1",
    "miri.steps_per_round=2",
    "miri.batch_size=8",
    "miri.ode_steps=2",
    "miri.impute_batch_size=32",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


def run_cli(*arguments, cwd=ROOT):
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *arguments], cwd=cwd, capture_output=True, text=True, timeout=600
    )


def run_in_process(monkeypatch, capsys, *arguments) -> tuple[int, str]:
    """``python train.py *arguments`` in this process (train_cli.main, Hydra and all): its exit
    code and what it printed on stderr. For errors raised before any process-wide work."""
    from miri_lightning import train_cli

    monkeypatch.setattr(sys, "argv", ["train.py", *arguments])
    capsys.readouterr()
    try:
        train_cli.main()
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    return code, capsys.readouterr().err


BAD_SETTINGS = [
    (["miri.rounds=five"], "error: miri.rounds must be an integer, got 'five'"),
    (["optim.lr=fast"], "error: optim.lr must be a number, got 'fast'"),
    (["+trainer.max_epochs=3"], "error: the run sets these Lightning arguments itself: trainer.max_epochs"),
    (["+trainer.bogus_argument=1"], "error: lightning.Trainer takes no argument trainer.bogus_argument"),
    (["trainer.gradient_clip_val=x"], "error: trainer.gradient_clip_val='x' is not what lightning.Trainer takes"),
    # raised inside hydra's instantiate of the mask: the cause is printed, not the wrapper
    (["mask.rate=2"], "error: mask.rate is the missing fraction and must lie in (0, 1), got 2"),
    # an optional group: Hydra alone would train the default recipe without a word
    (["experiment=paper_sampel"], "error: experiment=paper_sampel names no recipe: choose one of celeba, cifar10"),
]


def earlier_run(tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "last.ckpt").write_bytes(b"an earlier run")
    return run_dir


@pytest.mark.parametrize(("overrides", "message"), BAD_SETTINGS)
def test_bad_settings_are_one_error_line_and_nothing_is_deleted(tmp_path, monkeypatch, capsys, overrides, message):
    """A run already in output_dir survives a bad command even with overwrite=true (in process:
    the checks run before anything process-wide; the real process is the test below)."""
    run_dir = earlier_run(tmp_path)
    monkeypatch.chdir(tmp_path)
    code, err = run_in_process(monkeypatch, capsys, *TINY_CLI, f"output_dir={run_dir}", "overwrite=true", *overrides)
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), err
    assert (run_dir / "last.ckpt").read_bytes() == b"an earlier run"


def test_unknown_key_gets_hydras_own_error(tmp_path, monkeypatch, capsys):
    code, err = run_in_process(monkeypatch, capsys, "miri.roundz=3", f"output_dir={tmp_path}")
    assert code != 0
    assert "Could not override 'miri.roundz'" in err


def test_trainer_arguments_the_run_sets_are_named_in_one_line():
    with pytest.raises(ValueError, match="trainer.logger .*trainer.callbacks") as error:
        check_trainer_args({"logger": False, "callbacks": None, "accelerator": "cpu"})
    assert "\n" not in str(error.value)
    check_trainer_args({"accelerator": "cpu", "max_time": "00:01:00:00", "gradient_clip_val": 0.5})


def test_the_python_api_refuses_a_type_error_before_writing(tiny_config, tmp_path):
    with pytest.raises(ValueError, match="miri.ema must be a number"):
        train(tiny_config("miri.ema=high"))
    assert not (tmp_path / "run").exists()


def test_sweep_jobs_are_named_by_their_swept_values_only():
    arguments = ["-m", "data.n=8", "miri.ema=0,0.99", "mask.rate=0.2,0.4", "ckpt_path=last", "hydra.verbose=true"]
    jobs = {frozenset(job) for job in sweep_jobs(arguments)}
    assert jobs == {frozenset({f"miri.ema={e}", f"mask.rate={r}"}) for e in ("0", "0.99") for r in ("0.2", "0.4")}
    assert sweep_jobs(["miri.ema=0,0"]) == [("miri.ema=0",), ("miri.ema=0",)]  # a collision, seen


def test_multirun_gives_every_job_its_own_directory_and_refuses_a_collision(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli("-m", *TINY_CLI, f"output_dir={sweep}", "miri.ema=0,0.9", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    for ema in ("0", "0.9"):
        job = sweep / f"miri.ema={ema}"
        assert (job / "last.ckpt").is_file() and (job / "flows" / "round_001.safetensors").is_file()
        assert f"ema: {ema}" in (job / "config.yaml").read_text()
        assert (job / "train_rank0.log").is_file()
    assert not (sweep / "last.ckpt").exists()
    # each of Lightning's notices once a job on the console, not again through Hydra's logging
    assert (result.stdout + result.stderr).count("GPU available:") == 2
    # the same value twice: both jobs would share a directory, refused before either trains; in a
    # real process (the one of this file's error tests): exit code 1, one error line, no traceback
    again = run_cli("-m", *TINY_CLI, f"output_dir={tmp_path / 'dup'}", "miri.ema=0.5,0.5", cwd=tmp_path)
    assert again.returncode == 1
    errors = [line for line in again.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "same directory" in errors[0] and "miri.ema=0.5" in errors[0]
    assert "Traceback" not in again.stderr
    assert not list((tmp_path / "dup").rglob("*.ckpt"))
