"""The LightningModule: the velocity field, its optimiser and the MIRI training step."""

import hydra
import lightning as L
import torch
from torch import Tensor

from miri_lightning import flow


class MIRIModule(L.LightningModule):
    """Trains the velocity field of the current MIRI round.

    net: the velocity field's config (a dict with ``_target_``, see ``configs/model``);
    lr, weight_decay: Adam's; reinit: start every round from freshly initialised weights and
    an empty optimiser state (the paper), instead of the previous round's (warm start);
    seed: seeds the re-initialisation of each round, identically on every rank.
    """

    def __init__(self, net: dict, lr: float = 1e-3, weight_decay: float = 0.0, reinit: bool = False, seed: int = 0):
        super().__init__()
        if lr <= 0:
            raise ValueError(f"optim.lr must be positive, got {lr}")
        self.save_hyperparameters()
        self.velocity = hydra.utils.instantiate(net)

    def forward(self, a: Tensor, b: Tensor, observed: Tensor, t: Tensor) -> Tensor:
        return self.velocity(a, b, observed, t)

    def training_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> Tensor:
        source, observed, partner = batch
        t = torch.rand(source.shape[0], device=source.device)
        loss = flow.miri_loss(self.velocity, source, partner, observed, t)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def on_train_epoch_start(self) -> None:
        if self.hparams.reinit and self.current_epoch > 0:
            self.reset_velocity(self.current_epoch)

    def reset_velocity(self, round_index: int) -> None:
        """Fresh weights (seeded by ``seed`` and the round) and a fresh optimiser state."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.hparams.seed * 7919 + round_index)
            for module in self.velocity.modules():
                if module is not self.velocity and hasattr(module, "reset_parameters"):
                    module.reset_parameters()
        for optimizer in self.trainer.optimizers:
            optimizer.state.clear()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.velocity.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
