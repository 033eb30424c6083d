"""Lightning's rich progress bar, without a host synchronisation at every step."""

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar


class ProgressBar(RichProgressBar):
    """The rich progress bar, whose metrics (``train/loss``) are read only every ``every``
    training steps and at a round's end: Lightning turns them into numbers with ``.item()``,
    which on an accelerator waits for the step to finish. The bar itself advances every step."""

    def __init__(self, every: int = 10, **kwargs):
        super().__init__(**kwargs)
        self.every = max(int(every), 1)
        self._metrics: dict | None = None
        self._read_at = 0

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        step = trainer.global_step
        if self._metrics is None or not trainer.training or step - self._read_at >= self.every:
            self._metrics, self._read_at = super().get_metrics(trainer, pl_module), step
        return self._metrics

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._metrics = None  # the round's last loss
        super().on_train_epoch_end(trainer, pl_module)
