"""The LightningModule: the velocity field, its optimiser and the MIRI training step."""

import copy
import math

import lightning as L
import torch
from torch import Tensor

from miri_lightning import flow
from miri_lightning.data.datamodule import round_seed
from miri_lightning.nets import build_net

SCHEDULES = ("constant", "cosine")


def cosine_lr(lr: float, step: int, steps: int) -> float:
    """The cosine schedule's lr at ``step`` of ``steps``: from ``lr`` at step 0 towards 0."""
    return lr * 0.5 * (1 + math.cos(math.pi * step / max(steps, 1)))


def mirror(items: tuple[Tensor, ...], generator: torch.Generator | None) -> tuple[Tensor, ...]:
    """The same random left-right mirroring (probability 1/2 per item) applied to each of
    ``items`` (B, ..., W) (e.g. images and their masks); one draw per item."""
    first = items[0]
    flipped = torch.rand(first.shape[0], device=first.device, generator=generator) < 0.5
    flipped = flipped.view(-1, *([1] * (first.dim() - 1)))
    return tuple(torch.where(flipped, x.flip(-1), x) for x in items)


class MIRIModule(L.LightningModule):
    """Trains the velocity field of the current MIRI round.

    net: the velocity field's config (``_target_`` or ``name``: one of ``nets.NETS``, see ``configs/model``);
    lr, weight_decay: Adam's (``lr`` also applies when a run resumes with another one);
    reinit: start every round from freshly initialised weights and an empty optimiser state
    (the paper), instead of the previous round's (warm start); seed: with the round and the
    rank, seeds every random draw of a round, so a resumed round repeats the killed one;
    ema: the decay of an exponential moving average of the weights over each round's steps
    (0: none), which then imputes (:meth:`imputer`). The average restarts from the current
    weights every round, with the warm-up decay min(ema, (1 + k) / (10 + k)) at step k.
    compile: run the velocity field through ``torch.compile`` (the module and its state dict
    stay uncompiled: checkpoints load without it); channels_last: image nets and batches in
    channels-last memory layout (faster convolutions on GPUs); schedule: ``constant`` lr, or
    ``cosine``: the lr decays from ``lr`` towards 0 over each round's steps and restarts with
    the next round; flip: mirror images left-right at random in training (the source with
    its mask, the partner on its own draw), for data whose distribution is mirror-symmetric;
    loss_on: ``missing`` (the paper: every entry missing in the source counts) or
    ``partner_observed`` (only those the partner observed: the targets are data, never the
    partner's own imputation; see :func:`flow.miri_loss`).

    A non-finite training loss stops the run without a host synchronisation per step: each
    step records, on the device, the first step of the round whose loss was not finite; the
    record is read every ``trainer.log_every_n_steps`` steps (when Lightning logs anyway) and
    at the round's last step, before the re-imputation and the round's checkpoint, and
    all-gathered under DDP, so that every rank raises the same error at the same step
    (:meth:`check_finite`).
    """

    def __init__(
        self,
        net: dict,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        reinit: bool = False,
        seed: int = 0,
        ema: float = 0.0,
        compile: bool = False,
        channels_last: bool = False,
        schedule: str = "constant",
        flip: bool = False,
        loss_on: str = "missing",
        coupling: str = "independent",
        fill: dict | None = None,
    ):
        super().__init__()
        if lr <= 0:
            raise ValueError(f"optim.lr must be positive, got {lr}")
        if not 0 <= ema < 1:
            raise ValueError(f"miri.ema must be in [0, 1) (0: no EMA), got {ema}")
        if schedule not in SCHEDULES:
            raise ValueError(f"optim.schedule must be one of {SCHEDULES}, got {schedule!r}")
        if loss_on not in flow.LOSS_ON:
            raise ValueError(f"miri.loss_on must be one of {flow.LOSS_ON}, got {loss_on!r}")
        if coupling not in flow.COUPLINGS:
            raise ValueError(f"miri.coupling must be one of {flow.COUPLINGS}, got {coupling!r}")
        fills = ("noise", "interp", "biharmonic", "learned")  # mean: a batch's mean is not the store's
        if coupling == "fill" and (fill or {}).get("init") not in fills:
            raise ValueError(
                f"miri.coupling=fill draws every source from the fill miri.init, one of {fills}, "
                f"got miri.init={(fill or {}).get('init')!r}"
            )
        self.save_hyperparameters()
        self.velocity = build_net(net, "model")
        self._times: torch.Generator | None = None  # the draws of t, seeded per round and rank
        self._first_bad: Tensor | None = None  # the first step whose loss was not finite (-1: none)
        self._checked_step = 0  # the steps before this one were checked finite
        self._ema_steps = 0
        # plain attributes, kept out of the state dict: the EMA copy restarts every round, and
        # the compiled callables wrap modules that are already registered
        #: the learned centre of miri.init=learned (callbacks/centre.py sets it), else None
        for name in ("_ema", "_compiled", "_ema_compiled", "centre"):
            object.__setattr__(self, name, None)

    def forward(self, a: Tensor, b: Tensor, observed: Tensor, t: Tensor) -> Tensor:
        return self.velocity(a, b, observed, t)

    def setup(self, stage: str) -> None:
        if self.hparams.channels_last:
            self.velocity.to(memory_format=torch.channels_last)
        if self.hparams.compile:
            object.__setattr__(self, "_compiled", torch.compile(self.velocity))

    def layout(self, x: Tensor) -> Tensor:
        """A batch in the memory layout the net runs in."""
        if self.hparams.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        """batch: (source, its mask, partner, its mask), each (B, *item), and optionally the
        sources' cached interpolation (B, *item) (see :class:`~miri_lightning.data.datamodule.PairBatches`)."""
        source, observed, partner, partner_observed, *cached = (self.layout(x) for x in batch)
        source_interp = cached[0] if cached else None
        t = torch.rand(source.shape[0], device=source.device, generator=self._times)
        if self.hparams.flip:  # the cached interpolation is mirrored with its item
            source, observed, *cached = mirror((source, observed, *cached), self._times)
            source_interp = cached[0] if cached else None
            partner, partner_observed = mirror((partner, partner_observed), self._times)
        field = self._compiled if self._compiled is not None else self.velocity
        counted = partner_observed if self.hparams.loss_on == "partner_observed" else None
        if self.hparams.coupling == "fill":  # the source: a fresh noisy fill of the partner view
            fill = self.hparams.fill
            clamp = (0.0, 1.0) if partner.dim() == 4 else None  # images in [0, 1]; tables standardised
            source = flow.fill_source(
                partner, observed, fill["init"], fill["noise"], fill["noise_mode"], self._times, clamp, self.centre
            )
            source_interp = None  # the cached one is the source item's, not the partner view's
        one_view = self.hparams.coupling == "fill"  # the source's observed entries are the partner's
        loss = flow.miri_loss(field, source, partner, observed, t, counted, source_interp, one_view)
        self.note_finite(loss)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def note_finite(self, loss: Tensor) -> None:
        """Record on the loss's device, without a host sync, whether this step's loss is the
        round's first non-finite one."""
        first = self._first_bad
        if first is None or first.device != loss.device:
            first = torch.full((), -1, dtype=torch.long, device=loss.device)
        bad = ~torch.isfinite(loss.detach())
        self._first_bad = torch.where(bad & (first < 0), self.global_step, first)

    def check_finite(self) -> None:
        """Read the record of non-finite losses (a host sync; under DDP an all-gather, so every
        rank raises together) and stop the run if any rank had one."""
        if self._first_bad is None:
            return
        first = self._first_bad
        firsts = self.all_gather(first).reshape(-1) if self.trainer.world_size > 1 else first.reshape(1)
        bad = {rank: step for rank, step in enumerate(firsts.tolist()) if step >= 0}
        checked, self._checked_step = self._checked_step, self.global_step
        if bad:
            where = ", ".join(f"rank {rank} at step {step}" for rank, step in sorted(bad.items(), key=lambda kv: kv[1]))
            raise FloatingPointError(
                f"train/loss is not finite in round {self.current_epoch + 1}, steps {checked}..{self.global_step - 1} "
                f"(first: {where}): the run stops here; last.ckpt and the snapshots of the completed rounds are "
                "intact. Lower optim.lr and resume with ckpt_path=last"
            )

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        if self.hparams.schedule == "cosine":
            lr = cosine_lr(self.hparams.lr, batch_idx, self.trainer.num_training_batches)
            for optimizer in self.trainer.optimizers:
                for group in optimizer.param_groups:
                    group["lr"] = lr

    def on_train_start(self) -> None:
        for optimizer in self.trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = self.hparams.lr

    def on_train_epoch_start(self) -> None:
        round_index = self.current_epoch
        if self.hparams.reinit and round_index > 0:
            self.reset_velocity(round_index)
        seed = round_seed(self.hparams.seed, round_index, self.global_rank, stream=1)
        self._times = torch.Generator(device=self.device).manual_seed(seed)
        self._first_bad = torch.full((), -1, dtype=torch.long, device=self.device)
        self._checked_step = self.global_step
        if self.hparams.ema:
            if self._ema is None:
                object.__setattr__(self, "_ema", copy.deepcopy(self.velocity).requires_grad_(False).eval())
                if self.hparams.compile:
                    object.__setattr__(self, "_ema_compiled", torch.compile(self._ema))
            else:
                self._ema.load_state_dict(self.velocity.state_dict())
            self._ema_steps = 0
            floats = [
                (a, c)
                for a, c in zip(self._ema.state_dict().values(), self.velocity.state_dict().values(), strict=True)
                if a.is_floating_point()
            ]
            self._ema_pairs = ([a for a, _ in floats], [c for _, c in floats])

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        trainer = self.trainer
        if (batch_idx + 1) % max(trainer.log_every_n_steps, 1) == 0 or batch_idx + 1 == trainer.num_training_batches:
            self.check_finite()
        if self._ema is None:
            return
        decay = min(self.hparams.ema, (1 + self._ema_steps) / (10 + self._ema_steps))
        self._ema_steps += 1
        with torch.no_grad():
            torch._foreach_lerp_(*self._ema_pairs, 1 - decay)

    def imputer(self) -> torch.nn.Module:
        """The velocity field that re-imputes and is saved as the round's flow: the EMA of
        this round's weights with ``ema`` > 0, else the trained weights."""
        return self._ema if self._ema is not None else self.velocity

    def imputer_call(self):
        """:meth:`imputer`, compiled when ``compile`` is on: what the ODE calls."""
        compiled, plain = (self._ema_compiled, self._ema) if self._ema is not None else (self._compiled, self.velocity)
        return compiled if compiled is not None else plain

    def reset_velocity(self, round_index: int) -> None:
        """Fresh weights (seeded by ``seed`` and the round, the same on every rank) and a
        fresh optimiser state."""
        torch.manual_seed(round_seed(self.hparams.seed, round_index, rank=0, stream=2))
        for module in self.velocity.modules():
            if module is not self.velocity and hasattr(module, "reset_parameters"):
                module.reset_parameters()
        if hasattr(self.velocity, "after_reset"):
            self.velocity.after_reset()
        for optimizer in self.trainer.optimizers:
            optimizer.state.clear()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.velocity.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
