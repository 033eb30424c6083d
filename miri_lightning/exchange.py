"""What the ranks of a DDP run exchange at a round's end: every rank's outcome of a collective
step (:func:`stop_together`, so that a fault on one rank stops every rank instead of leaving
the others waiting in a collective), and the re-imputed shards of the store
(:func:`gather_shards`)."""

import lightning as L
import torch
import torch.distributed as dist
from torch import Tensor

#: Outcomes of a rank's part of a collective step: all-gathered by :func:`stop_together`.
NON_FINITE, FAILED = 1, 2


def stop_together(pl_module: L.LightningModule, world: int, code: Tensor, error: Exception | None, what: str) -> None:
    """All-gather every rank's outcome ``code`` (0: fine, NON_FINITE, FAILED; a scalar tensor)
    of ``what`` and raise on every rank if any rank's is not fine: a failing rank re-raises its
    own ``error``, the others a RuntimeError naming it. A collective: every rank must call it
    at the same point, whatever happened before."""
    codes = pl_module.all_gather(code).reshape(-1).tolist() if world > 1 else [int(code)]
    if error is not None:
        raise error
    failed = [rank for rank, c in enumerate(codes) if c == FAILED]
    if failed:
        raise RuntimeError(
            f"rank {', '.join(map(str, failed))} failed in {what} (its error is in its log): every rank stops; "
            "last.ckpt and the snapshots of the completed rounds are intact; resume with ckpt_path=last"
        )
    if any(c == NON_FINITE for c in codes):
        raise FloatingPointError(
            f"{what} holds NaN or infinite values: the run stops; last.ckpt and the snapshots of the completed "
            "rounds are intact. Lower optim.lr and resume with ckpt_path=last"
        )


def pad_rows(x: Tensor, size: int) -> Tensor:
    """x (B, ...) with B ≤ size, its first row repeated to ``size`` rows."""
    missing = size - x.shape[0]
    return x if missing <= 0 else torch.cat([x, x[:1].expand(missing, *x.shape[1:])])


def gather_shards(
    imputed: Tensor, parts: list[Tensor], start: int, shard: int, device: torch.device, node_shared: bool = False
) -> Tensor:
    """Write this rank's re-imputed rows ``parts`` (consecutive, from row ``start``) into the
    store ``imputed`` (N, ...) in place, then every other rank's shard (of ``shard`` rows, the
    last one shorter): returns ``imputed``. Collective when a process group of several ranks
    exists. Nothing the size of the store is allocated and no list of the world's shards is
    built: each shard is broadcast by its rank straight into the store's rows (through a
    shard-sized buffer on ``device`` when the store is on the host and the backend needs the
    accelerator, as NCCL does; gloo broadcasts host tensors, uneven shards included).
    ``node_shared``: the store is one copy in this machine's shared memory and every rank is on
    this machine: writing the shard and a barrier is the whole exchange."""
    n = imputed.shape[0]
    for part in parts:
        imputed[start : start + part.shape[0]] = part
        start += part.shape[0]
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return imputed
    if node_shared:
        dist.barrier()
        return imputed
    in_place = dist.get_backend() != "nccl" or imputed.device.type != "cpu"
    for rank in range(dist.get_world_size()):
        begin, end = min(rank * shard, n), min((rank + 1) * shard, n)
        if end <= begin:
            continue
        rows = imputed[begin:end]
        buffer = rows if in_place else rows.to(device)
        dist.broadcast(buffer, src=rank)
        if buffer is not rows:
            rows.copy_(buffer)
    return imputed
