"""data=celeba and data=cifar10 bring a recipe sized for a GPU; every choice overridable."""

import pytest
import torch
from conftest import QUIET, compose_config

from miri_lightning.run import recipe_notice

GPU_UNET = [128, 256, 256]


@pytest.mark.parametrize("data", ["celeba", "cifar10"])
def test_the_data_set_brings_its_gpu_recipe(data, tmp_path):
    cfg = compose_config([f"data={data}"], tmp_path, base=[])
    assert list(cfg.model.block_out_channels) == GPU_UNET and cfg.model.interp_inputs == "biharmonic"
    assert cfg.trainer.precision == "bf16-mixed" and cfg.trainer.accelerator == "auto"  # runs where it is
    assert cfg.miri.init == "biharmonic" and cfg.miri.ema > 0 and cfg.miri.store_on_device
    # the measured draws: at the training noise, from fills like the sources' (docs/experiments.md)
    assert (cfg.miri.init_noise, cfg.miri.init_noise_mode, cfg.miri.sample_noise) == (0.6, "correlated", None)
    assert (cfg.miri.coupling, cfg.miri.solver, cfg.model.interp_skip) == ("fill", "heun", False)
    assert cfg.miri.impute_batch_size >= 1000 and cfg.miri.batch_size >= 128
    assert cfg.data.name == data and cfg.recipe.device == "gpu"


def test_command_line_overrides_win_over_the_recipe(tmp_path):
    overrides = ["data=celeba", "model=unet_small", "trainer.precision=32-true", "miri.init=noise", "miri.rounds=3"]
    cfg = compose_config(overrides, tmp_path, base=[])
    assert list(cfg.model.block_out_channels) == [16, 32, 64]
    assert (cfg.trainer.precision, cfg.miri.init, cfg.miri.rounds) == ("32-true", "noise", 3)
    # '~experiment' drops the recipe: the CPU-sized defaults of python train.py
    cfg = compose_config(["data=celeba", "~experiment", "model=unet_small"], tmp_path, base=[])
    plain = compose_config([], tmp_path, base=[])
    assert cfg.miri == plain.miri and cfg.optim == plain.optim and cfg.trainer == plain.trainer
    assert cfg.model.block_out_channels == plain.model.block_out_channels and "recipe" not in cfg
    # another experiment replaces the recipe whole: the paper's settings stay the paper's
    cfg = compose_config(["experiment=paper_cifar10"], tmp_path, base=[])
    assert cfg.model._target_.endswith("ResidualCNN") and cfg.trainer.precision == "32-true"
    assert cfg.miri.init == "noise" and cfg.miri.sample_noise is None and "recipe" not in cfg


def test_other_data_keep_the_cpu_defaults(tmp_path):
    for data in ("sample", "folder", "toy"):
        cfg = compose_config([f"data={data}"], tmp_path, base=QUIET)
        assert "recipe" not in cfg and cfg.trainer.precision == "32-true"


def test_a_cpu_only_machine_is_told_once_how_to_shrink_the_recipe(tmp_path, monkeypatch):
    cfg = compose_config(["data=celeba"], tmp_path, base=[])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    notice = recipe_notice(cfg)
    assert "sized for a GPU" in notice and "'~experiment' model=unet_small" in notice
    assert "bf16-mixed" in notice and "miri.steps_per_round=20000" in notice
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert recipe_notice(cfg) is None
    assert recipe_notice(compose_config([], tmp_path, base=[])) is None


#: What a table recipe owns: a change to the images' default (train.yaml) must not move it.
TABLE_KEYS = (
    "rounds",
    "steps_per_round",
    "batch_size",
    "ode_steps",
    "solver",
    "ema",
    "reinit",
    "init",
    "init_noise",
    "coupling",
)


@pytest.mark.parametrize("data", ["csv", "toy"])
def test_table_recipes_pin_their_schedule(data, tmp_path):
    from omegaconf import OmegaConf

    from miri_lightning import CONFIG_DIR

    own = OmegaConf.load(CONFIG_DIR / "data" / f"{data}.yaml")
    assert set(TABLE_KEYS) <= set(own.miri) and {"lr", "schedule"} <= set(own.optim)  # written in the recipe
    cfg = compose_config([f"data={data}"], tmp_path, base=[])
    assert (cfg.miri.rounds, cfg.miri.steps_per_round, cfg.miri.coupling, cfg.miri.init) == (3, 300, "fill", "noise")
    assert all(cfg.miri[key] == own.miri[key] for key in TABLE_KEYS) and cfg.optim.lr == own.optim.lr
    assert cfg.model._target_.endswith("VelocityMLP") and list(cfg.model.widths) == [256, 256, 256]
