import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "miri_lightning" / "configs"

#: Shrinks the default run to seconds on a CPU: a tiny U-Net on 16×16 crops.
TINY = [
    "trainer=cpu",
    "data.n=64",
    "data.image_size=16",
    "model=unet_tiny",
    "miri.rounds=2",
    "miri.steps_per_round=10",
    "miri.batch_size=16",
    "miri.ode_steps=4",
    "miri.impute_batch_size=32",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]

#: The paper's start (uniform-noise fill, loss on every missing entry, no EMA), for tests that
#: watch PSNR climb from noise over rounds (the default starts from a biharmonic fill).
PAPER_FILL = ["miri.init=noise", "miri.init_noise=0", "miri.loss_on=missing", "miri.ema=0", "miri.coupling=independent"]


#: The quiet CPU trainer alone, for runs on vectors (data=toy, data=csv), already small.
QUIET = ["trainer=cpu", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


def compose_config(overrides: list[str], output_dir: Path, base: list[str] = TINY) -> DictConfig:
    """The real composed config (configs/train.yaml) with ``base`` then ``overrides``,
    writing to ``output_dir``."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose("train", overrides=[*base, f"output_dir={output_dir}", *overrides])


@pytest.fixture
def tiny_config(tmp_path):
    """compose(overrides) -> the tiny config writing under tmp_path/run."""
    return lambda *overrides: compose_config(list(overrides), tmp_path / "run")


@pytest.fixture(autouse=True)
def cache_in_tmp(tmp_path, monkeypatch):
    """data.cache_dir's default (``$MIRI_CACHE_DIR``) under the test's tmp_path, not ./data/cache."""
    monkeypatch.setenv("MIRI_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The tiny two-round run (``TINY``), trained once for the whole session. Read it, never write
    into it: a test that damages, resumes or evaluates a run takes ``tiny_run_copy``."""
    from miri_lightning.run import train

    return train(compose_config([], tmp_path_factory.mktemp("tiny") / "run"))


@pytest.fixture
def tiny_run_copy(tiny_run, tmp_path):
    """A private copy of the session's tiny run directory at tmp_path/run (where ``tiny_config``
    writes, so ``tiny_config("miri.rounds=3", "ckpt_path=last")`` resumes it)."""
    return Path(shutil.copytree(tiny_run.output_dir, tmp_path / "run"))
