"""Where the store lives and what the round end costs: the re-imputed shards gathered in place,
the hashes of the store computed once per round on the rank that commits it."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from miri_lightning.data import datamodule
from miri_lightning.exchange import gather_shards
from miri_lightning.run import train


def _gather(rank: int, world: int, init_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        for dtype in (torch.float16, torch.uint8):  # the compact stores, in one pair of processes
            n, shard = 7, 4  # uneven shards: rows [0, 4) and [4, 7)
            expected = torch.arange(n * 3, dtype=torch.float32).reshape(n, 3).to(dtype)
            imputed = torch.full((n, 3), -1.0).to(dtype)  # every rank's stale store
            start, stop = rank * shard, min((rank + 1) * shard, n)
            parts = [expected[start : start + 1].clone(), expected[start + 1 : stop].clone()]  # two ODE batches
            before = imputed.data_ptr()
            out = gather_shards(imputed, parts, start, shard, torch.device("cpu"))
            assert out.data_ptr() == before  # written into the store itself, no new store
            assert torch.equal(out, expected), (rank, dtype, out)
    finally:
        dist.destroy_process_group()


def test_shards_are_broadcast_into_every_ranks_store_in_place(tmp_path):
    mp.spawn(_gather, args=(2, str(tmp_path / "init")), nprocs=2, join=True)


def test_the_store_is_hashed_once_per_round_by_the_committing_rank(tiny_config, monkeypatch):
    """Lightning builds checkpoint state twice a round (round_XXX.ckpt and last.ckpt): the
    hashes of the store come from the commit, and the mask's and data's from the first."""
    calls = []
    digest = datamodule.tensor_digest

    def counted(tensor, *args, **kwargs):
        if tensor.dim() and tensor.shape[0] == 64:  # the whole store (data.n=64), not a part
            calls.append(tuple(tensor.shape))
        return digest(tensor, *args, **kwargs)

    monkeypatch.setattr(datamodule, "tensor_digest", counted)
    run = train(tiny_config("miri.rounds=3"))
    assert (run.output_dir / "round_003.ckpt").is_file() and (run.output_dir / "last.ckpt").is_file()
    assert len(calls) == 1 + 3  # the mask once, the imputation once per round
    state = torch.load(run.output_dir / "last.ckpt", weights_only=True)[type(run.datamodule).__qualname__]
    assert state["imputed_sha256"] == digest(run.datamodule.store.imputed)


def test_a_machine_shared_store_is_restored_in_place_and_a_foreign_snapshot_refused(tmp_path):
    """Resuming a DDP run: the snapshot is copied into the one shared copy (every rank of the
    machine maps it), not swapped for a per-rank tensor; a snapshot whose hash differs from
    the checkpoint's is still refused."""
    from miri_lightning.data.datamodule import MIRIDataModule
    from miri_lightning.data.sources import LoadedImages
    from miri_lightning.masks import MCARMask

    class Images:
        def load(self):
            generator = torch.Generator().manual_seed(0)
            return LoadedImages(torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8, generator=generator))

    def module():
        dm = MIRIDataModule(Images(), MCARMask(0.5, seed=1), 4, 1, output_dir=tmp_path)
        dm.setup("fit")
        return dm

    first = module()
    store = first.store
    first.commit_round(1, torch.where(store.observed, store.imputed, torch.rand(10, 3, 8, 8)), write=True)
    state = first.state_dict()
    resumed = module()
    resumed.store.node_shared = True
    shared = resumed.store.imputed
    resumed.load_state_dict(state)
    assert resumed.store.imputed is shared and torch.equal(shared, first.store.imputed)
    assert resumed.state_dict() == state  # the restored hash is reused, not recomputed wrongly
    other = module()
    with pytest.raises(ValueError, match="does not hold the data its checkpoint recorded"):
        other.load_state_dict({**state, "imputed_sha256": "0" * 64})


def _shared(rank: int, world: int, init_file: str, room: bool, out: str) -> None:
    from miri_lightning.data import shared
    from miri_lightning.data.sources import LoadedImages
    from miri_lightning.data.store import build_store
    from miri_lightning.masks import MCARMask

    if not room:
        shared._free_bytes = lambda folder: 0  # a /dev/shm too small for the store
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        truth = torch.randint(0, 256, (9, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
        # a noisy fill whose σ follows the picture: every fill argument reaches the builder
        args = (LoadedImages(truth), MCARMask(0.5, seed=2), "biharmonic", 0, "float16", 0.3, "local")
        store = shared.build_node_shared_store(*args, local_rank=rank)
        expected = build_store(*args)
        assert store.node_shared == room
        assert torch.equal(store.imputed, expected.imputed) and torch.equal(store.observed, expected.observed)
        dist.barrier()
        if rank == 1:
            store.imputed[7] = 0.25  # a write by one rank ...
        dist.barrier()
        seen = bool((store.imputed[7] == 0.25).all())
        assert seen == (room or rank == 1), (rank, seen)  # ... is seen by the machine's other ranks when shared
        if rank == 0:
            torch.save({"files": sorted(p.name for p in shared.shared_folder().glob("miri_lightning-*"))}, out)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize(
    # the shared copy is also checked in the default tier by the torchrun run (test_distributed)
    "room",
    [pytest.param(True, marks=pytest.mark.slow), False],
)
def test_the_store_is_one_copy_per_machine_or_one_per_rank_when_shared_memory_is_short(tmp_path, room):
    out = tmp_path / f"out-{room}.pt"
    mp.spawn(_shared, args=(2, str(tmp_path / f"init-{room}"), room, str(out)), nprocs=2, join=True)
    assert torch.load(out)["files"] == []  # nothing left in /dev/shm once every rank has mapped it
