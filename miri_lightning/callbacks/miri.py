"""The MIRI callback: at the end of each round (epoch), re-impute the whole store."""

import contextlib
import logging
import math
import time

import lightning as L
import torch
from lightning.pytorch.callbacks import RichProgressBar
from torch import Tensor
from torchvision.utils import make_grid

from miri_lightning import flow, metrics
from miri_lightning.data.datamodule import round_seed
from miri_lightning.data.store import cache_interpolation, decode, encode
from miri_lightning.exchange import FAILED, NON_FINITE, gather_shards, pad_rows, stop_together
from miri_lightning.fid import fid, inception_features
from miri_lightning.mine import mine_estimate
from miri_lightning.snapshots import prune_snapshots, save_flow, tensor_digest

log = logging.getLogger(__name__)

#: The metrics of the printed line per round, in order: for images, and for vectors.
PRINTED_IMAGES = ("psnr_missing", "psnr_full", "rmse_missing", "ssim", "mmd", "swd")
PRINTED_VECTORS = ("rmse_missing", "mae_missing", "mmd", "cluster_share")


class MIRICallback(L.Callback):
    """Re-imputes every item with the round's velocity field, then logs and snapshots.

    Under DDP each rank solves the ODE for its own contiguous shard; the shards are
    all-gathered so that every rank ends the round with the same full store (each rank logs
    its shard and the store's hash). Rank 0 logs ``round/*`` scalars (when the truth is
    known) and the ``round/reconstructions`` grid at the step that ends the round, and prints
    one line per round; the DataModule snapshots the store. With ``mine_steps`` > 0 a MINE
    estimate of I(imputed; mask) is logged as ``round/mutual_information``; with
    ``fid_weights`` not False, ``round/fid`` (skipped with one line when the Inception
    weights are absent). Snapshots older than the last
    ``keep_rounds`` rounds are deleted once a newer checkpoint exists (-1 keeps all).

    With ``miri.coupling=fill`` each item's ODE starts from a fresh noisy fill of its observed
    entries (:func:`~miri_lightning.flow.fill_source`), as the round's sources did, not from
    the store's current imputation: the round's flow is a whole sampler.

    When the velocity field sees interpolations of the views (``model.interp_inputs``), the
    callback solves each item's once as training starts (or resumes) and keeps it with the
    store (:func:`~miri_lightning.data.store.cache_interpolation`); training steps and the
    ODE then take it instead of solving it. With ``miri.compile`` every ODE batch is padded
    to the same size, so that the last one does not recompile the field.

    A fault on one rank stops every rank: the re-imputation's and the round end's outcome
    (fine, non-finite, an exception) is all-gathered before any rank goes on, and every rank
    raises (the failing rank its own error), so that none is left waiting in a collective.
    """

    def __init__(
        self,
        ode_steps: int = 100,
        solver: str = "euler",
        impute_batch_size: int = 500,
        grid_images: int = 8,
        keep_rounds: int = -1,
        mmd_items: int = 1000,
        mine_steps: int = 0,
        metric_items: int | None = 10000,
        fid_weights: str | None | bool = False,
    ):
        if solver not in flow.SOLVERS:
            raise ValueError(f"miri.solver must be one of {flow.SOLVERS}, got {solver!r}")
        if ode_steps < 1:
            raise ValueError(f"miri.ode_steps must be at least 1, got {ode_steps}")
        if impute_batch_size < 1:
            raise ValueError(f"miri.impute_batch_size must be at least 1, got {impute_batch_size}")
        self.ode_steps, self.solver, self.impute_batch_size = ode_steps, solver, impute_batch_size
        self.grid_images = grid_images
        if keep_rounds == 0 or keep_rounds < -1:
            raise ValueError(f"checkpoint.keep must be -1 (all) or at least 1, got {keep_rounds}")
        self.keep_rounds = keep_rounds
        if mmd_items < 2 or mine_steps < 0:
            raise ValueError("metrics.mmd_items must be at least 2 and metrics.mine_steps at least 0")
        self.mmd_items, self.mine_steps = mmd_items, mine_steps
        if metric_items is not None and metric_items < 2:
            raise ValueError(f"metrics.max_images must be at least 2 (or null for all), got {metric_items}")
        self.metric_items = metric_items
        #: False: no FID per round; None or a path: the Inception weights (loaded at the start).
        self.fid_weights = fid_weights
        self._features = None
        #: One dict per logged round (rank 0): round, seconds, and the metrics.
        self.history: list[dict] = []
        self._round_started = 0.0

    # -- hooks ---------------------------------------------------------------------------

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.fid_weights is not False and trainer.is_global_zero and trainer.datamodule.store.truth is not None:
            try:
                self._features = inception_features(self.fid_weights or None, pl_module.device)
            except FileNotFoundError as error:
                pl_module.print(f"round/fid skipped: {error}")
        store, error = trainer.datamodule.store, None
        try:
            if store.imputed.dim() == 4:  # images: the field may see each item's interpolation
                cache_interpolation(store, getattr(pl_module.velocity, "interpolate_items", None), pl_module.device)
            # the store as the run starts: the initial fill, or the round a resumed run restored
            # (logged again: the resumed logger dropped the killed run's events from this step on)
            self._report(trainer, pl_module, trainer.datamodule.round, None)
        except Exception as exception:
            error = exception
        code = torch.tensor(FAILED if error is not None else 0, device=pl_module.device)
        stop_together(pl_module, trainer.world_size, code, error, "the start of training")

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._round_started = time.perf_counter()
        self._prune(trainer)
        batch = trainer.datamodule.batch_size
        log.info(
            f"round {trainer.current_epoch + 1}: training {trainer.num_training_batches} steps of "
            f"{batch // trainer.world_size} pairs on rank {trainer.global_rank} (of {batch} in all)"
        )

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._prune(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = trainer.datamodule
        store = datamodule.store
        round_index = trainer.current_epoch + 1
        imputed = self.reimpute(trainer, pl_module, store.imputed, store.observed, store.interp)
        error = None
        try:
            datamodule.commit_round(round_index, imputed, write=trainer.is_global_zero)
            if trainer.is_global_zero and datamodule.output_dir is not None:
                fill_mean = flow.observed_channel_mean(store.imputed, store.observed, decode=decode).tolist()
                save_flow(datamodule.output_dir, round_index, pl_module.imputer(), pl_module.hparams.net, fill_mean)
            if log.isEnabledFor(logging.DEBUG):  # a check that costs a hash of the whole store per rank
                log.debug(
                    f"round {round_index}: rank {trainer.global_rank} holds the store sha256 {tensor_digest(imputed)}"
                )
            pl_module.log("round", float(round_index), logger=False)
            self._report(trainer, pl_module, datamodule.round, time.perf_counter() - self._round_started)
        except Exception as exception:
            error = exception
        code = torch.tensor(FAILED if error is not None else 0, device=pl_module.device)
        stop_together(pl_module, trainer.world_size, code, error, f"the end of round {round_index}")

    # -- the re-imputation ---------------------------------------------------------------

    @torch.no_grad()
    def reimpute(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        imputed: Tensor,
        observed: Tensor,
        interp: Tensor | None = None,
    ) -> Tensor:
        """Solve the imputation ODE for every item; returns the new (N, ...) imputation:
        ``imputed`` itself, overwritten in place once every rank's shard is solved (see
        :func:`~miri_lightning.exchange.gather_shards`). ``interp``: the store's cached interpolation of each item
        (N, ...), or None."""
        n, world, rank = imputed.shape[0], trainer.world_size, trainer.global_rank
        shard = math.ceil(n / world)
        start, stop = min(rank * shard, n), min((rank + 1) * shard, n)
        log.info(
            f"round {trainer.current_epoch + 1}: rank {rank} re-imputing items [{start}, {stop}) of {n}, "
            f"{self.ode_steps} {self.solver} steps"
        )
        velocity, clamp = pl_module.imputer(), trainer.datamodule.store.clamp
        field = pl_module.imputer_call()  # compiled with miri.compile
        # compiled: every batch the same size (the last one padded), so that none recompiles
        size = min(self.impute_batch_size, shard) if getattr(pl_module.hparams, "compile", False) else None
        fresh = None  # miri.coupling=fill: every draw starts from a fresh noisy fill of its item
        if getattr(pl_module.hparams, "coupling", "independent") == "fill":
            seed = round_seed(pl_module.hparams.seed, trainer.current_epoch, rank, stream=3)
            fresh = torch.Generator(device=pl_module.device).manual_seed(seed)
        was_training = velocity.training
        velocity.eval()
        parts, finite = [], torch.ones((), dtype=torch.bool, device=pl_module.device)
        error = None
        try:
            with _progress(
                trainer, f"imputing {stop - start} items", math.ceil((stop - start) / self.impute_batch_size)
            ) as advance:
                for begin in range(start, stop, self.impute_batch_size):
                    end = min(begin + self.impute_batch_size, stop)
                    batch = [decode(imputed[begin:end].to(pl_module.device)), observed[begin:end].to(pl_module.device)]
                    if fresh is not None:
                        fill = pl_module.hparams.fill
                        batch[0] = flow.fill_source(
                            batch[0],
                            batch[1],
                            fill["init"],
                            fill["noise"],
                            fill["noise_mode"],
                            fresh,
                            clamp,
                            getattr(pl_module, "centre", None),
                        )
                    if interp is not None:
                        batch.append(interp[begin:end].to(pl_module.device))
                    if size is not None:
                        batch = [pad_rows(x, size) for x in batch]
                    x, o, *cached = (pl_module.layout(v) for v in batch)
                    with trainer.precision_plugin.forward_context():  # bf16 autocast with trainer.precision=bf16-mixed
                        y = flow.impute(field, x, o, self.ode_steps, self.solver, clamp, *cached)[: end - begin]
                    finite &= torch.isfinite(y).all()
                    parts.append(encode(y, imputed.dtype).to(imputed.device))
                    advance()
        except Exception as exception:
            error = exception
        velocity.train(was_training)
        # every rank learns whether any rank failed, so that none is left waiting in a collective
        code = torch.tensor(FAILED, device=pl_module.device) if error is not None else (~finite).long() * NON_FINITE
        stop_together(pl_module, world, code, error, f"the re-imputation of round {trainer.current_epoch + 1}")
        shared = getattr(trainer.datamodule.store, "node_shared", False) and trainer.num_nodes == 1
        return gather_shards(imputed, parts, start, shard, pl_module.device, shared)

    def _prune(self, trainer: L.Trainer) -> None:
        datamodule = trainer.datamodule
        if trainer.is_global_zero and self.keep_rounds > 0 and datamodule.output_dir is not None:
            prune_snapshots(datamodule.output_dir, keep_after=datamodule.round - self.keep_rounds)

    # -- reporting -----------------------------------------------------------------------

    def _report(
        self, trainer: L.Trainer, pl_module: L.LightningModule, round_index: int, seconds: float | None
    ) -> None:
        """Log and print the metrics of the store after round ``round_index``; ``seconds``:
        the round's wall time, None for the store a run starts from."""
        if not trainer.is_global_zero:
            return
        store = trainer.datamodule.store
        record = {"round": round_index, "seconds": seconds, "clock": time.perf_counter()}
        sample = self._metric_items(len(store))
        imputed, observed = decode(store.imputed[sample]), store.observed[sample]
        if store.truth is not None:
            truth = decode(store.truth[sample])
            record.update(metrics.round_metrics(imputed, truth, observed, self.mmd_items))
            if self._features is not None:
                record["fid"] = fid(imputed, truth, self._features)
            extra = getattr(trainer.datamodule.source, "extra_metrics", None)
            if extra is not None:
                record.update(extra(imputed, truth))
        if self.mine_steps:
            record["mutual_information"] = mine_estimate(imputed, observed, self.mine_steps)
        self.history.append(record)
        logger = trainer.logger
        if logger is not None:
            scalars = {f"round/{k}": v for k, v in record.items() if k not in ("round", "seconds", "clock")}
            if scalars:
                logger.log_metrics(scalars, step=trainer.global_step)
            writer = getattr(logger, "experiment", None)
            if hasattr(writer, "add_image") and store.imputed.dim() == 4:
                writer.add_image("round/reconstructions", self.grid(store), global_step=trainer.global_step)
                if store.truth is not None:
                    writer.add_image("round/difference", self.difference(store), global_step=trainer.global_step)
        line = f"round {round_index:3d}"
        if seconds is not None:
            line += f" | {seconds:7.1f} s"
        elif round_index:
            line += " | resumed  "
        if store.truth is not None:
            line += " | " + " ".join(
                f"{k} {record[k]:.2f} dB" if k.startswith("psnr") else f"{k} {record[k]:.4f}"
                for k in (PRINTED_IMAGES if store.imputed.dim() == 4 else PRINTED_VECTORS)
                if k in record
            )
        else:
            line += " | no ground truth: metrics skipped"
        if self.mine_steps:
            line += f" | MI {record['mutual_information']:.4f} nats"
        pl_module.print(line)

    def _metric_items(self, n: int) -> Tensor:
        """Evenly spaced items (all when there are at most ``metric_items``)."""
        if self.metric_items is None or n <= self.metric_items:
            return torch.arange(n)
        return torch.linspace(0, n - 1, self.metric_items).round().long()

    def grid(self, store) -> Tensor:
        """Rows: observed with holes (grey) | imputed | truth (when known); (3, H', W')."""
        k = min(self.grid_images, len(store))
        imputed, observed = decode(store.imputed[:k]), store.observed[:k]
        rows = [torch.where(observed, imputed, 0.5), imputed]
        if store.truth is not None:
            rows.append(decode(store.truth[:k]))
        return self._tile(torch.cat(rows), k)

    def difference(self, store) -> Tensor:
        """|imputed - truth| of the grid's images, zero on observed entries; (3, H', W')."""
        k = min(self.grid_images, len(store))
        return self._tile((decode(store.imputed[:k]) - decode(store.truth[:k])).abs(), k)

    @staticmethod
    def _tile(images: Tensor, per_row: int) -> Tensor:
        if images.shape[1] not in (1, 3):
            images = images[:, :1]
        return make_grid(images, nrow=per_row, padding=1, pad_value=1.0)


@contextlib.contextmanager
def _progress(trainer: L.Trainer, description: str, total: int):
    """A task in Lightning's rich progress bar while imputing (a no-op without one)."""
    bar = trainer.progress_bar_callback
    progress = getattr(bar, "progress", None) if isinstance(bar, RichProgressBar) and bar.is_enabled else None
    if progress is None:
        yield lambda: None
        return
    task = progress.add_task(description, total=total)

    def advance() -> None:
        progress.update(task, advance=1)
        bar.refresh()

    try:
        yield advance
    finally:
        progress.remove_task(task)
