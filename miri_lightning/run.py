"""Builds a MIRI run from a composed Hydra config and trains it (the body of train.py)."""

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import hydra
import lightning as L
import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationKeyError

from miri_lightning.callbacks import MIRICallback
from miri_lightning.callbacks.centre import LearnedCentre
from miri_lightning.callbacks.progress import ModelSummary, ProgressBar
from miri_lightning.data.datamodule import MIRIDataModule, per_rank_batch
from miri_lightning.module import MIRIModule
from miri_lightning.run_dir import check_checkpoint, check_writable, config_rank, remove_run, resolve_ckpt_path
from miri_lightning.settings import check_trainer_args, check_types

log = logging.getLogger(__name__)

#: Warnings that Lightning and torch raise on every run and that tell a user nothing.
KNOWN_NOISE = (
    r".*`IterableDataset` has `__len__` defined.*",  # our pair batches are drawn in the main process
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",
    r".*torch.distributed.nn.functional.all_gather is deprecated.*",
    r".*smaller than the logging interval.*",
    r".*Checkpoint directory .* exists and is not empty.*",  # the run directory holds config and logs too
)


#: The loggers through which Lightning prints its one-line notices (``rank_zero_info``).
LIGHTNING_NOTICES = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning_utilities.core.rank_zero",
)


class NoAdvert(logging.Filter):
    """Drops Lightning's tips that advertise its cloud services (``💡 Tip: ... litlogger``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("💡 Tip") or "litlogger" in message or "litmodels" in message)


def quiet_known_warnings() -> None:
    for message in KNOWN_NOISE:
        warnings.filterwarnings("ignore", message=message)
    for name in LIGHTNING_NOTICES:
        notices = logging.getLogger(name)
        if not any(isinstance(f, NoAdvert) for f in notices.filters):
            notices.addFilter(NoAdvert())


@dataclass
class Run:
    trainer: L.Trainer
    module: MIRIModule
    datamodule: MIRIDataModule
    miri: MIRICallback
    output_dir: Path


def build(cfg: DictConfig, source=None) -> tuple[Run, str | None]:
    """Validate the config and build trainer, module, data and callbacks (no training).
    ``source``: images already in memory (anything with ``load() -> LoadedImages``), in
    place of ``cfg.data``'s ``_target_``."""
    quiet_known_warnings()
    check_types(cfg)  # before anything is written or deleted
    check_trainer_args(OmegaConf.to_container(cfg.trainer, resolve=True))
    output_dir = Path(cfg.output_dir)
    check_writable(output_dir)
    ckpt_path, delete_earlier_run = resolve_ckpt_path(cfg, output_dir)
    resumed_step = int(check_checkpoint(Path(ckpt_path))["global_step"]) if ckpt_path else None
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    miri = cfg.miri
    data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
    store_dtype = data_cfg.pop("store_dtype", "float32")
    if source is None:
        source = hydra.utils.instantiate(data_cfg)
    mask = hydra.utils.instantiate(cfg.mask)
    datamodule = MIRIDataModule(
        source,
        mask,
        miri.batch_size,
        miri.steps_per_round,
        miri.init,
        cfg.seed,
        output_dir=output_dir,
        store_dtype=store_dtype,
        init_noise=miri.init_noise,
        store_on_device=miri.store_on_device,
        init_noise_mode=miri.get("init_noise_mode", "constant"),
    )
    try:
        net_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    except InterpolationKeyError as error:  # e.g. a U-Net's ${data.channels} on a table
        raise ValueError(
            f"the model's settings do not fit data={cfg.data.name} ({error}): use model=mlp for tables and points, "
            "a model=unet* or paper_cnn for images"
        ) from error
    if "dim" in net_cfg and net_cfg["dim"] is None:  # a vector field sized by the data (data.dim null)
        datamodule.setup("fit")
        net_cfg["dim"] = datamodule.store.item_shape[0]
    module = MIRIModule(
        net_cfg,
        lr=cfg.optim.lr,
        weight_decay=cfg.optim.weight_decay,
        reinit=miri.reinit,
        seed=cfg.seed,
        ema=miri.ema,
        compile=miri.compile,
        channels_last=miri.channels_last,
        schedule=cfg.optim.schedule,
        flip=miri.flip,
        loss_on=miri.loss_on,
        coupling=miri.get("coupling", "independent"),
        fill={"init": miri.init, "noise": miri.init_noise, "noise_mode": miri.get("init_noise_mode", "constant")},
    )
    if miri.rounds < 1:
        raise ValueError(f"miri.rounds must be at least 1, got {miri.rounds}")
    if miri.sample_noise is not None and miri.sample_noise < 0:
        raise ValueError(f"miri.sample_noise must be at least 0 (null: miri.init_noise), got {miri.sample_noise}")
    keep = cfg.checkpoint.keep
    callback = MIRICallback(
        miri.ode_steps,
        miri.solver,
        miri.impute_batch_size,
        keep_rounds=keep,
        mmd_items=cfg.metrics.mmd_items,
        mine_steps=cfg.metrics.mine_steps,
        metric_items=cfg.metrics.max_images,
        fid_weights=cfg.metrics.fid_weights_path if cfg.metrics.fid else False,
    )
    trainer_args = OmegaConf.to_container(cfg.trainer, resolve=True)
    if SLURMEnvironment.detect() and "plugins" not in trainer_args:
        # Lightning's SLURM auto-requeue saves a checkpoint mid-round on the requeue signal and
        # resumes from it, where the round's pair stream and EMA cannot continue: off. A requeued
        # job (scripts/slurm/train.sbatch requeues itself) resumes with ckpt_path=auto from
        # last.ckpt and repeats the interrupted round exactly.
        trainer_args["plugins"] = [SLURMEnvironment(auto_requeue=False)]
    # not a Trainer argument: the GPU configs ask for TF32 matmuls ("high"), which fp32 runs
    # (and the fp32 parts of bf16 runs) otherwise leave at full fp32 ("highest")
    matmul_precision = trainer_args.pop("float32_matmul_precision", None)
    if matmul_precision is not None:
        if matmul_precision not in ("highest", "high", "medium"):
            raise ValueError(
                f"trainer.float32_matmul_precision must be highest, high or medium, got {matmul_precision!r}"
            )
        torch.set_float32_matmul_precision(matmul_precision)
    rounds = ModelCheckpoint(
        dirpath=str(output_dir),
        filename="round_{round:03.0f}",
        auto_insert_metric_name=False,
        monitor="round",
        mode="max",
        save_top_k=keep,
        save_last=True,
    )
    callbacks = [callback, rounds]
    if miri.init == "learned":  # trained (or loaded) at the start of fit, before the round-0 report
        c = cfg.centre
        callbacks.insert(0, LearnedCentre(c.steps, c.batch_size, c.lr, list(c.widths)))
    if trainer_args.get("enable_progress_bar", True):
        callbacks.append(ProgressBar(every=trainer_args.get("log_every_n_steps", 50)))
    if trainer_args.get("enable_model_summary", True) is not False and not trainer_args.get("barebones"):
        callbacks.append(ModelSummary())  # Lightning's, without its FLOPs (0 for a module like ours)
    trainer_args["enable_model_summary"] = False  # not Lightning's own summary besides
    trainer = L.Trainer(
        **trainer_args,
        max_epochs=miri.rounds,
        default_root_dir=str(output_dir),
        logger=TensorBoardLogger(
            str(output_dir),
            name="",
            version="tensorboard",
            default_hp_metric=False,
            # a resumed run discards the events the killed run logged after its checkpoint
            purge_step=resumed_step,
        ),
        callbacks=callbacks,
        reload_dataloaders_every_n_epochs=1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    per_rank = per_rank_batch(miri.batch_size, trainer.world_size)
    if delete_earlier_run:  # overwrite=true (or auto over a run killed in round 1), every setting now checked
        remove_run(output_dir)
    if trainer.global_rank != config_rank(cfg):
        log.warning(
            f"this process is rank {trainer.global_rank} but its launcher's environment says rank "
            f"{config_rank(cfg)}: its log file and .hydra/ may be another rank's"
        )
    if trainer.is_global_zero:
        log.info(
            f"miri.batch_size {miri.batch_size} pairs per step: {trainer.world_size} rank(s) "
            f"x {per_rank} pairs, each rank on its own stream (seed, round, rank)"
        )
        if ckpt_path is None:  # a resumed run keeps the config it was started with
            OmegaConf.save(cfg, output_dir / "config.yaml", resolve=True)
    return Run(trainer, module, datamodule, callback, output_dir), ckpt_path


def check_data(run: Run) -> None:
    """Load the data now, so that a mismatch with the model fails before any training. With
    several ranks only the images' shape: the store is built in ``fit``, once per machine."""
    if run.trainer.world_size > 1:
        shape = tuple(run.datamodule.source.load().values.shape[1:])
    else:
        run.datamodule.fill_device = run.trainer.strategy.root_device  # the initial fill on the accelerator
        run.datamodule.setup("fit")
        shape = run.datamodule.store.item_shape
    net = run.module.velocity
    if len(shape) != len(net.item_shape):
        kind = "vectors" if len(shape) == 1 else "images"
        raise ValueError(
            f"the data are {kind} of shape {shape} but model={type(net).__name__} takes items of shape "
            f"{net.item_shape}: use model=mlp for tables and points, a model=unet* or paper_cnn for images"
        )
    if len(shape) == 1:
        if run.module.hparams.flip:
            raise ValueError("miri.flip mirrors images: set it to false for tables and points")
        metrics = run.miri
        if metrics.mine_steps or metrics.fid_weights is not False:
            raise ValueError("metrics.mine_steps and metrics.fid are for images: set them to 0 and false for tables")
        if shape != net.item_shape:
            raise ValueError(
                f"the data have {shape[0]} columns but model.dim={net.item_shape[0]}: leave model.dim null"
            )
        return
    if shape[0] != net.channels:
        raise ValueError(
            f"the data have {shape[0]} channels but model.channels={net.channels}: set data.channels to match "
            "(model.channels follows it by default)"
        )
    if shape[1:] != (net.image_size, net.image_size):
        raise ValueError(
            f"the data's images are {shape[1]}x{shape[2]} but model.image_size={net.image_size}: set data.image_size"
        )


def recipe_notice(cfg: DictConfig) -> str | None:
    """One line when the config holds a recipe sized for a GPU (``recipe.device: gpu``, which
    data=celeba and data=cifar10 bring) and this machine has none; else None."""
    recipe = cfg.get("recipe")
    if not recipe or recipe.get("device") != "gpu" or torch.cuda.is_available():
        return None
    miri, model = cfg.miri, cfg.model
    sized = (
        f"{model.get('_target_', 'model').rsplit('.', 1)[-1]} {list(model.get('block_out_channels', []))}, "
        f"trainer.precision={cfg.trainer.get('precision')}, miri.steps_per_round={miri.steps_per_round}, "
        f"miri.batch_size={miri.batch_size}, miri.init={miri.init}"
    )
    return (
        f"data={cfg.data.name} brings a recipe sized for a GPU ({sized}) and this machine has none: shrink it with "
        f"{recipe.get('shrink')} (the CPU-sized defaults), or override any of these keys"
    )


def train(cfg: DictConfig, source=None, check=None) -> Run:
    """Build, check the data against the model (and with ``check(run)``, anything else that
    must hold before the first step), train."""
    run, ckpt_path = build(cfg, source)
    notice = recipe_notice(cfg)
    if notice is not None and config_rank(cfg) == 0:
        print(notice)
    check_data(run)
    if check is not None:
        check(run)
    run.trainer.fit(run.module, datamodule=run.datamodule, ckpt_path=ckpt_path, weights_only=True)
    return run
