"""``miri.init=learned``: train the learned centre before round 1 (or load it when a run
resumes), and make it the centre of the round-0 fill and of every fill a source starts from."""

import json

import lightning as L
import torch

from miri_lightning import centre, flow
from miri_lightning.data.store import decode, encode, fill_seed
from miri_lightning.nets import build_net
from miri_lightning.snapshots import FLOW_FORMAT, load_flow, save_atomically

#: Where a run keeps its centre: beside the rounds' flows, as a flow file.
CENTRE_FILE = "centre.safetensors"


def centre_spec(channels: int, image_size: int, widths: list[int]) -> dict:
    """The centre network's spec (``nets.NETS``' ``unet``): a U-Net without attention that also
    sees the biharmonic interpolation."""
    return {
        "name": "unet",
        "channels": int(channels),
        "image_size": int(image_size),
        "block_out_channels": [int(w) for w in widths],
        "attention": [False] * len(widths),
        "mid_attention": False,
        "norm_num_groups": 8,
        "interp_inputs": "biharmonic",
    }


def load_centre(path, device="cpu") -> torch.nn.Module:
    """The centre saved at ``path`` (a flow file: no pickle, only a project network is built)."""
    state, spec = load_flow(path)
    net = build_net(spec, str(path))
    net.load_state_dict(state)
    return net.to(device).eval().requires_grad_(False)


class LearnedCentre(L.Callback):
    """At the start of fit: the run's centre (``flows/centre.safetensors``) is loaded, or trained
    on the store's observed entries (:func:`centre.fit_centre`, ``steps`` steps of
    ``batch_size`` items, Adam ``lr``, a U-Net of ``widths``) and saved; it scores itself
    against biharmonic on the held-out items' hidden observed entries (one line). A run that
    starts at round 0 then refills its store: the centre plus the run's noise, drawn as the
    round-0 fill was. The module and the MIRI callback take it as ``pl_module.centre``."""

    def __init__(self, steps: int = 1000, batch_size: int = 64, lr: float = 2e-3, widths=(32, 64, 64)):
        if steps < 1 or batch_size < 1 or lr <= 0:
            raise ValueError(
                "centre.steps and centre.batch_size must be at least 1 and centre.lr positive, "
                f"got {steps}, {batch_size}, {lr}"
            )
        self.steps, self.batch_size, self.lr, self.widths = steps, batch_size, lr, list(widths)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule, device = trainer.datamodule, pl_module.device
        store = datamodule.store
        if store.imputed.dim() != 4:
            raise ValueError("miri.init=learned learns a centre of images: use noise or mean for tables and vectors")
        if trainer.world_size > 1:
            raise ValueError("miri.init=learned trains its centre in one process: run it on one device for now")
        path = datamodule.output_dir / "flows" / CENTRE_FILE if datamodule.output_dir is not None else None
        x, observed = decode(store.imputed).to(device), store.observed.to(device)
        if path is not None and path.is_file():
            net = load_centre(path, device)
            pl_module.print(f"centre: loaded {path}")
        else:
            spec = centre_spec(x.shape[1], x.shape[-1], self.widths)
            torch.manual_seed(fill_seed(pl_module.hparams.seed))
            net = build_net(spec, "centre").to(device)
            net = centre.fit_centre(
                net, x, observed, self.steps, self.batch_size, self.lr, seed=pl_module.hparams.seed, say=pl_module.print
            )
            if path is not None:
                save_atomically(path, net.state_dict(), {"format": str(FLOW_FORMAT), "net": json.dumps(spec)})
        learned, biharmonic = centre.held_out_psnr(net, x, observed)
        pl_module.print(
            f"centre: {learned:.2f} dB on held-out observed entries, biharmonic {biharmonic:.2f} dB "
            f"({learned - biharmonic:+.2f} dB; items never trained on, no missing entry's truth used)"
        )
        object.__setattr__(pl_module, "centre", lambda v, o: centre.predict(net, v, o))  # not a submodule
        if datamodule.round == 0:  # the round-0 fill: the centre plus the run's noise, as drawn before
            fill = pl_module.hparams.fill
            generator = torch.Generator().manual_seed(fill_seed(pl_module.hparams.seed))
            with torch.no_grad():
                for k in range(0, len(x), 256):
                    base = centre.predict(net, x[k : k + 256], observed[k : k + 256]).cpu()
                    noisy = flow.perturb(
                        base, observed[k : k + 256].cpu(), fill["noise"], generator, (0.0, 1.0), fill["noise_mode"]
                    )
                    store.imputed[k : k + 256] = encode(noisy, store.imputed.dtype).to(store.imputed.device)
