"""One store per machine, not per rank: the mask and the imputation in shared memory.

Under DDP with W ranks on a machine, the first rank of the machine (local rank 0) builds the
store (the mask and the initial fill, once, on its accelerator when it has one) into files in
``/dev/shm`` (RAM), which every rank of the machine then maps (``MAP_SHARED``): one copy per
machine, whatever W. The files are unlinked as soon as every rank has mapped them, so the
memory goes back to the system when the last rank exits, however it exits. The truth is the
source's own tensor: memory-mapped from ``data.cache_dir`` for celeba / folder / cifar10, so
shared by the page cache too. Re-imputation writes each rank's shard into the shared
imputation (see :func:`miri_lightning.exchange.gather_shards`). When the shared folder
has no room for the store (a container's small ``/dev/shm``), every rank builds its own, as
before, said in one warning.
"""

import logging
import math
import os
import secrets
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from miri_lightning.data.store import STORE_DTYPES, Store, build_store

log = logging.getLogger(__name__)

#: torch dtype -> numpy dtype of the shared files.
NUMPY = {torch.bool: np.bool_, torch.uint8: np.uint8, torch.float16: np.float16, torch.float32: np.float32}


def shared_folder() -> Path:
    """``/dev/shm`` (RAM) when there is one, else the temporary folder."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())


def run_token() -> str:
    """A name shared by every rank of this launch: drawn on global rank 0, broadcast (as an
    integer tensor on the process group's device)."""
    draw = secrets.randbits(62) if dist.get_rank() == 0 else 0
    token = torch.tensor([draw], dtype=torch.int64, device=_collective_device())
    dist.broadcast(token, src=0)
    return f"{int(token.item()):x}"


def _map(path: Path, shape: tuple[int, ...], dtype: torch.dtype, create: bool) -> Tensor:
    array = np.memmap(path, dtype=NUMPY[dtype], mode="w+" if create else "r+", shape=shape)
    return torch.from_numpy(array)


def build_node_shared_store(
    loaded,
    mask,
    init: str,
    seed: int,
    dtype: str,
    init_noise: float,
    noise_mode: str,
    local_rank: int,
    device: torch.device | str | None = None,
) -> Store:
    """The store of :func:`build_store`, built once per machine (local rank 0, on ``device``)
    into shared memory and mapped by every rank. Collective: every rank calls it, after the
    process group exists. An error on the building rank (a bad setting) stops every rank."""
    if dtype not in STORE_DTYPES:
        raise ValueError(f"data.store_dtype must be one of {sorted(STORE_DTYPES)}, got {dtype!r}")
    shape = tuple(loaded.values.shape)
    needed = math.prod(shape) * (1 + STORE_DTYPES[dtype].itemsize)
    folder = shared_folder()
    room = _free_bytes(folder)
    # every rank decides together, before anything is written: a /dev/shm too small (a container's
    # 64 MiB default) would kill the builder with SIGBUS half-way, not raise
    fits = torch.tensor([int(room >= needed * 1.05)], dtype=torch.int32, device=_collective_device())
    dist.all_reduce(fits, op=dist.ReduceOp.MIN)
    if not int(fits.item()):
        if local_rank == 0:
            log.warning(
                f"{folder} has {room / 2**30:.2f} GiB free but the store needs {needed / 2**30:.2f} GiB: each rank "
                "holds its own store (give the machine more shared memory, e.g. docker --shm-size, to hold one)"
            )
        return build_store(loaded, mask, init, seed, dtype, init_noise, noise_mode, device=device)
    prefix = folder / f"miri_lightning-{os.getuid()}-{run_token()}"
    paths = {name: Path(f"{prefix}-{name}.bin") for name in ("observed", "imputed")}
    error, store = None, None
    if local_rank == 0:

        def allocate(name: str, shape: tuple[int, ...], torch_dtype: torch.dtype) -> Tensor:
            return _map(paths[name], shape, torch_dtype, create=True)

        try:
            store = build_store(
                loaded, mask, init, seed, dtype, init_noise, noise_mode, device=device, allocate=allocate
            )
        except Exception as caught:  # raised below, after every rank has learnt that the build failed
            error = caught
    failed = torch.tensor([error is not None], dtype=torch.int32, device=_collective_device())
    dist.all_reduce(failed)
    if int(failed.item()):
        for path in paths.values():
            path.unlink(missing_ok=True)
        if error is not None:
            raise error
        raise RuntimeError("the store could not be built on another rank: see that rank's error")
    if store is None:
        observed = _map(paths["observed"], shape, torch.bool, create=False)
        imputed = _map(paths["imputed"], shape, STORE_DTYPES[dtype], create=False)
        store = Store(imputed, observed, loaded.values if loaded.has_truth else None, loaded.clamp)
        log.info(f"rank {dist.get_rank()} maps the store of this machine in shared memory ({prefix}-*)")
    else:
        gib = (store.imputed.nbytes + store.observed.nbytes) / 2**30
        log.info(f"rank {dist.get_rank()} built the store once for this machine in shared memory ({gib:.2f} GiB)")
    dist.barrier()  # every rank has mapped the files: they can go (the mappings stay)
    if local_rank == 0:
        for path in paths.values():
            path.unlink(missing_ok=True)
    store.node_shared = True
    return store


def _free_bytes(folder: Path) -> int:
    stat = os.statvfs(folder)
    return stat.f_bavail * stat.f_frsize


def _collective_device() -> torch.device | str:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
