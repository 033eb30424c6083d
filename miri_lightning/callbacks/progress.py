"""What a run shows on the screen: Lightning's rich progress bar, without a host
synchronisation at every step, and its model summary, without the columns that mean nothing here."""

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import RichModelSummary, RichProgressBar
from lightning.pytorch.utilities.model_summary.model_summary import get_formatted_model_size, get_human_readable_count


class ProgressBar(RichProgressBar):
    """The rich progress bar, whose metrics (``train/loss``) are read only every ``every``
    training steps and at a round's end: Lightning turns them into numbers with ``.item()``,
    which on an accelerator waits for the step to finish. The bar itself advances every step.
    Lightning's ``v_num`` (the last four letters of the logger's version, ``oard`` of
    ``tensorboard`` here) is left out."""

    def __init__(self, every: int = 10, **kwargs):
        super().__init__(**kwargs)
        self.every = max(int(every), 1)
        self._metrics: dict | None = None
        self._read_at = 0

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        step = trainer.global_step
        if self._metrics is None or not trainer.training or step - self._read_at >= self.every:
            metrics = super().get_metrics(trainer, pl_module)
            metrics.pop("v_num", None)
            self._metrics, self._read_at = metrics, step
        return self._metrics

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._metrics = None  # the round's last loss
        super().on_train_epoch_end(trainer, pl_module)


class ModelSummary(RichModelSummary):
    """Lightning's rich model summary without its FLOPs column and ``Total FLOPs`` line: Lightning
    counts FLOPs only by running a module's ``example_input_array``, which a MIRI module has
    none of (its velocity field takes four inputs), so they would always read 0."""

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int = 0,
        **summarize_kwargs: Any,
    ) -> None:
        from rich import get_console
        from rich.table import Table

        columns = [(name, values) for name, values in summary_data if name != "FLOPs"]
        table = Table(header_style=summarize_kwargs.get("header_style", "bold magenta"))
        for name, _ in columns:
            numeric = name in ("Params", "Params per Device", "In sizes", "Out sizes")
            table.add_column(name, justify="right" if numeric else "left", style="dim" if name == " " else None)
        for row in zip(*(values for _, values in columns), strict=True):
            table.add_row(*row)
        grid = Table.grid(expand=True)
        grid.add_column()
        for label, value in (
            ("Trainable params", get_human_readable_count(int(trainable_parameters))),
            ("Non-trainable params", get_human_readable_count(int(total_parameters - trainable_parameters))),
            ("Total params", get_human_readable_count(int(total_parameters))),
            ("Total estimated model params size (MB)", get_formatted_model_size(model_size)),
            ("Modules in train mode", total_training_modes["train"]),
            ("Modules in eval mode", total_training_modes["eval"]),
        ):
            grid.add_row(f"[bold]{label}[/]: {value}")
        console = get_console()
        console.print(table)
        console.print(grid)
