"""Builds a MIRI run from a composed Hydra config and trains it (the body of train.py)."""

import shutil
from dataclasses import dataclass
from pathlib import Path

import hydra
import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from miri_lightning.callbacks import MIRICallback
from miri_lightning.data.datamodule import MIRIDataModule
from miri_lightning.module import MIRIModule


@dataclass
class Run:
    trainer: L.Trainer
    module: MIRIModule
    datamodule: MIRIDataModule
    miri: MIRICallback
    output_dir: Path


def resolve_ckpt_path(cfg: DictConfig, output_dir: Path) -> str | None:
    """``ckpt_path``: null (new run), ``last`` (resume ``output_dir``) or a file."""
    ckpt = cfg.ckpt_path
    last = output_dir / "last.ckpt"
    if ckpt is None:
        if last.exists():
            if not cfg.overwrite:
                raise ValueError(
                    f"output_dir {output_dir} already holds a run ({last.name}): resume it with ckpt_path=last, "
                    "pick another run_name, or pass overwrite=true to delete it"
                )
            shutil.rmtree(output_dir)
        return None
    if ckpt == "last":
        if not last.exists():
            raise ValueError(f"ckpt_path=last, but {last} does not exist: there is no run to resume in output_dir")
        return str(last)
    if not Path(ckpt).is_file():
        raise ValueError(f"ckpt_path={ckpt} is not a file")
    return str(ckpt)


def build(cfg: DictConfig) -> tuple[Run, str | None]:
    """Validate the config and build trainer, module, data and callbacks (no training)."""
    output_dir = Path(cfg.output_dir)
    ckpt_path = resolve_ckpt_path(cfg, output_dir)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    miri = cfg.miri
    source = hydra.utils.instantiate(cfg.data)
    mask = hydra.utils.instantiate(cfg.mask)
    datamodule = MIRIDataModule(
        source, mask, miri.batch_size, miri.steps_per_round, miri.init, cfg.seed, output_dir=output_dir
    )
    net_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    module = MIRIModule(
        net_cfg, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay, reinit=miri.reinit, seed=cfg.seed
    )
    if miri.rounds < 1:
        raise ValueError(f"miri.rounds must be at least 1, got {miri.rounds}")
    callback = MIRICallback(miri.ode_steps, miri.solver, miri.impute_batch_size)
    output_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, output_dir / "config.yaml", resolve=True)
    trainer_args = OmegaConf.to_container(cfg.trainer, resolve=True)
    callbacks = [callback, ModelCheckpoint(dirpath=str(output_dir), save_last=True, save_top_k=0)]
    if trainer_args.get("enable_progress_bar", True):
        callbacks.append(RichProgressBar())
    trainer = L.Trainer(
        **trainer_args,
        max_epochs=miri.rounds,
        default_root_dir=str(output_dir),
        logger=TensorBoardLogger(str(output_dir), name="", version="tensorboard", default_hp_metric=False),
        callbacks=callbacks,
        reload_dataloaders_every_n_epochs=1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    return Run(trainer, module, datamodule, callback, output_dir), ckpt_path


def check_data(run: Run) -> None:
    """Load the data now, so that a mismatch with the model fails before any training."""
    run.datamodule.setup("fit")
    shape = run.datamodule.store.item_shape
    net = run.module.velocity
    if shape[0] != net.channels:
        raise ValueError(
            f"the data have {shape[0]} channels but model.channels={net.channels}: set data.channels to match "
            "(model.channels follows it by default)"
        )
    if shape[1:] != (net.image_size, net.image_size):
        raise ValueError(
            f"the data's images are {shape[1]}x{shape[2]} but model.image_size={net.image_size}: set data.image_size"
        )


def train(cfg: DictConfig) -> Run:
    run, ckpt_path = build(cfg)
    check_data(run)
    run.trainer.fit(run.module, datamodule=run.datamodule, ckpt_path=ckpt_path)
    return run
