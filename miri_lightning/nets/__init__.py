"""Velocity fields v(a, b, observed, t): zero on observed entries.

A network is named by a key of :data:`NETS`; configs (``configs/model``) may still name it by
``_target_``, but only one of these classes is ever built (:func:`build_net`): a run directory
someone hands you cannot make the project call anything else."""

import warnings
from collections.abc import Mapping

import torch
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


#: The largest value each size argument of a network may take (lists: each entry, and at most
#: :data:`MAX_LEVELS` of them), checked before anything is built: generous for any image or table
#: this project fits, far below what would exhaust a machine.
MAX_SIZES = {
    "channels": 64,
    "image_size": 4096,
    "dim": 100_000,
    "width": 4096,
    "blocks": 64,
    "widths": 4096,
    "block_out_channels": 4096,
    "layers_per_block": 16,
    "norm_num_groups": 4096,
    "attention_head_dim": 4096,
}
MAX_LEVELS = 16

#: The most parameters a network may have (4 GiB of float32 weights), counted on PyTorch's
#: ``meta`` device (shapes only, nothing allocated) before the network is built.
MAX_PARAMETERS = 1_000_000_000


def check_size(config: Mapping, where: str) -> dict:
    """``config``'s spec (see :func:`net_spec`) when each size argument is within
    :data:`MAX_SIZES` and the network has at most :data:`MAX_PARAMETERS` parameters; else a
    ValueError naming ``where`` (a flow file, a setting). Nothing is allocated."""
    spec = net_spec(config, where)
    for name, limit in MAX_SIZES.items():
        if name not in spec:
            continue
        value = spec[name]
        values = list(value) if isinstance(value, list | tuple) else [value]
        if isinstance(value, list | tuple) and len(values) > MAX_LEVELS:
            raise ValueError(
                f"{where}: the {spec['name']} network's {name} lists {len(values)} levels, over {MAX_LEVELS}"
            )
        for v in values:
            if v is None and name == "dim":
                continue  # a table's column count, read from the data
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= limit:
                shown = v if isinstance(v, int | float) else f"a {type(v).__name__}"
                each = " (each)" if isinstance(value, list | tuple) else ""
                raise ValueError(
                    f"{where}: the {spec['name']} network's {name}{each} must be an integer from 0 to {limit}, "
                    f"got {shown}: refused before building it"
                )
    with torch.device("meta"), warnings.catch_warnings():  # shapes only: no memory, no random numbers drawn
        warnings.simplefilter("ignore")  # the real build warns, once
        try:
            count = sum(p.numel() for p in NETS[spec["name"]](**_arguments(spec)).parameters())
        except TypeError as error:
            raise ValueError(
                f"{where}: the {spec['name']} network cannot be built from {sorted(spec)} ({error})"
            ) from error
    if count > MAX_PARAMETERS:
        raise ValueError(
            f"{where}: the {spec['name']} network would have {count:,} parameters, over the limit of "
            f"{MAX_PARAMETERS:,}: refused before building it"
        )
    return spec


def _arguments(spec: dict) -> dict:
    return {k: v for k, v in spec.items() if k != "name"}


def build_net(config: Mapping, where: str) -> nn.Module:
    """The network ``config`` describes (see :func:`net_key`), built from its plain arguments
    once its sizes are checked (:func:`check_size`); nested values are passed as they are,
    never instantiated."""
    spec = check_size(config, where)
    key = spec.pop("name")
    try:
        return NETS[key](**spec)
    except TypeError as error:  # an argument the class does not take
        raise ValueError(f"{where}: the {key} network cannot be built from {sorted(spec)} ({error})") from error


__all__ = ["NETS", "ConditionalUNet", "ResidualCNN", "VelocityMLP", "build_net", "check_size", "net_key", "net_spec"]
