"""Which process of a distributed run this is, read from the launcher's environment.

Hydra names the log file and writes ``.hydra/`` before any Lightning Trainer exists, and under
torchrun or srun every process runs Hydra's main: the global rank must come from the
environment. The resolvers registered here let the configs name ``train_rank<R>.log`` and keep
``.hydra/`` to global rank 0 (``configs/train.yaml``, ``hydra:`` section).
"""

import os
import re
from collections.abc import Mapping

from omegaconf import OmegaConf


def devices_per_node(devices) -> int:
    """The processes per node that ``trainer.devices`` asks of Lightning's own launcher: an
    int, a list of device indices, ``"0,1"``, or -1 / ``"auto"`` (every GPU, else 1)."""
    if isinstance(devices, str):
        devices = devices.strip()
        if devices in ("-1", "auto"):
            devices = -1
        elif "," in devices:
            return len([d for d in devices.split(",") if d.strip()])
        else:
            devices = int(devices)
    if isinstance(devices, int):
        if devices >= 1:
            return devices
        import torch

        return max(torch.cuda.device_count(), 1)
    return len(list(devices))


def global_rank(num_nodes: int = 1, devices=1, environ: Mapping[str, str] = os.environ) -> int:
    """The global rank of this process, as Lightning will number it.

    torchrun sets ``RANK``; the processes Lightning's own launcher starts have ``LOCAL_RANK``,
    ``NODE_RANK`` and ``WORLD_SIZE``; srun sets ``SLURM_PROCID`` (``LOCAL_RANK`` is checked
    first: an interactive SLURM shell sets ``SLURM_PROCID`` 0 in every process Lightning
    starts); MPI launchers set ``OMPI_COMM_WORLD_RANK`` or ``PMI_RANK``; the process a user
    starts on node ``NODE_RANK`` of Lightning's own multi-node launch is that node's first.
    None of these: 0.
    """
    if "RANK" in environ:
        return int(environ["RANK"])
    node = int(environ.get("NODE_RANK", environ.get("GROUP_RANK", 0)))
    if "LOCAL_RANK" in environ and "WORLD_SIZE" in environ:
        return node * (int(environ["WORLD_SIZE"]) // max(int(num_nodes), 1)) + int(environ["LOCAL_RANK"])
    for key in ("SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK"):
        if key in environ:
            return int(environ[key])
    return node * devices_per_node(devices) if node else 0


def log_name(job_name: str, num_nodes: int = 1, devices=1) -> str:
    """``<job>_rank<R>.log``: the job's name (``train``; Lightning renames the processes it
    starts ``train_ddp_process_<local rank>``) and the global rank."""
    if re.fullmatch(r"train_ddp_process_\d+", job_name):
        job_name = "train"
    return f"{job_name}_rank{global_rank(num_nodes, devices)}.log"


def rank_zero_only(value, num_nodes: int = 1, devices=1):
    """``value`` on global rank 0, None elsewhere (``hydra.output_subdir``: no ``.hydra/``)."""
    return value if global_rank(num_nodes, devices) == 0 else None


def register_resolvers() -> None:
    """``${miri.log_name:job,num_nodes,devices}`` and ``${miri.rank_zero_only:value,num_nodes,devices}``."""
    OmegaConf.register_new_resolver("miri.log_name", log_name, replace=True)
    OmegaConf.register_new_resolver("miri.rank_zero_only", rank_zero_only, replace=True)


register_resolvers()
