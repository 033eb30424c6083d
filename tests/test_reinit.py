"""miri.reinit=true end to end: each round after the first starts from fresh weights, an empty
optimiser state and (with interp_skip) a zero-initialised last layer, as the paper's fresh net."""

import torch
from lightning import Callback

from miri_lightning.run import build


class Record(Callback):
    """Weights at the end of each round, and weights, optimiser state and the U-Net's last layer
    at the first step of each round (after the module's own epoch-start hook)."""

    def __init__(self):
        self.ends, self.starts = {}, {}

    def on_train_epoch_end(self, trainer, module):
        self.ends[trainer.current_epoch] = {k: v.clone() for k, v in module.velocity.state_dict().items()}

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if batch_idx == 0:
            self.starts[trainer.current_epoch] = (
                {k: v.clone() for k, v in module.velocity.state_dict().items()},
                len(trainer.optimizers[0].state),
                module.velocity.unet.conv_out.weight.detach().clone(),
            )


def fit(tiny_config, reinit):
    run, _ = build(
        tiny_config(
            f"miri.reinit={reinit}",
            "overwrite=true",
            "miri.init=biharmonic",
            "model.interp_inputs=biharmonic",
            "model.interp_skip=true",
            "miri.rounds=2",
            "miri.steps_per_round=4",
        )
    )
    record = Record()
    run.trainer.callbacks.append(record)
    run.trainer.fit(run.module, datamodule=run.datamodule)
    return record


def test_reinit_starts_every_round_from_fresh_weights_state_and_zero_skip_layer(tiny_config):
    fresh = fit(tiny_config, "true")
    weights, optimiser_entries, last_layer = fresh.starts[1]
    assert optimiser_entries == 0  # Adam's moments cleared
    assert torch.count_nonzero(last_layer) == 0  # the skip's last layer is zero again
    trained = fresh.ends[0]
    changed = [k for k in weights if weights[k].is_floating_point() and not torch.equal(weights[k], trained[k])]
    assert len(changed) > 0.9 * sum(v.is_floating_point() for v in weights.values())
    # fresh, not round 0's own start again: each round draws its own init (seeded by the round)
    assert not all(torch.equal(weights[k], fresh.starts[0][0][k]) for k in weights)

    warm = fit(tiny_config, "false")  # the control: a warm start keeps all three
    weights, optimiser_entries, last_layer = warm.starts[1]
    assert optimiser_entries > 0 and torch.count_nonzero(last_layer) > 0
    assert all(torch.equal(weights[k], warm.ends[0][k]) for k in weights)
