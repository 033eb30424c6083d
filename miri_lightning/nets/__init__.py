"""Velocity fields v(a, b, observed, t): zero on observed entries.

A network is named by a key of :data:`NETS`; configs (``configs/model``) may still name it by
``_target_``, but only one of these classes is ever built (:func:`build_net`): a run directory
someone hands you cannot make the project call anything else."""

from collections.abc import Mapping

from torch import nn

from miri_lightning.nets.cnn import ResidualCNN
from miri_lightning.nets.mlp import VelocityMLP
from miri_lightning.nets.unet import ConditionalUNet

#: The project's own velocity fields, by key: the only networks a config or a flow file can name.
NETS: dict[str, type[nn.Module]] = {"unet": ConditionalUNet, "paper_cnn": ResidualCNN, "mlp": VelocityMLP}

#: ``_target_`` strings of configs and of flow files written before the keys (format 1).
TARGETS = {
    target: key
    for key, cls in NETS.items()
    for target in (f"miri_lightning.nets.{cls.__name__}", f"{cls.__module__}.{cls.__name__}")
}


def net_key(config: Mapping, where: str) -> str:
    """The key of ``config``'s network: its ``name`` (a key of :data:`NETS`) or a ``_target_``
    that is one of ours; anything else is a ValueError naming ``where`` (a file, a setting)."""
    if "name" in config:
        key = config["name"]
        if key not in NETS:
            raise ValueError(f"{where} names the network {key!r}, which is not one of miri_lightning's: {sorted(NETS)}")
        return key
    target = config.get("_target_")
    if target not in TARGETS:
        raise ValueError(
            f"{where} names the network {target!r}, which is not one of miri_lightning's ({sorted(NETS)}): "
            "refused, nothing was run"
        )
    return TARGETS[target]


def net_spec(config: Mapping, where: str) -> dict:
    """``config`` in the form flow files keep: ``{"name": key, **arguments}``."""
    key = net_key(config, where)
    return {"name": key, **{k: v for k, v in config.items() if k not in ("name", "_target_")}}


def build_net(config: Mapping, where: str) -> nn.Module:
    """The network ``config`` describes (see :func:`net_key`), built from its plain arguments;
    nested values are passed as they are, never instantiated."""
    spec = net_spec(config, where)
    key = spec.pop("name")
    try:
        return NETS[key](**spec)
    except TypeError as error:  # an argument the class does not take
        raise ValueError(f"{where}: the {key} network cannot be built from {sorted(spec)} ({error})") from error


__all__ = ["NETS", "ConditionalUNet", "ResidualCNN", "VelocityMLP", "build_net", "net_key", "net_spec"]
