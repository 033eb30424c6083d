"""The DataModule: holds the store (current imputation, masks, truth) and yields MIRI pairs."""

import hashlib
import os
from pathlib import Path

import lightning as L
import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from miri_lightning import flow
from miri_lightning.data.shared import build_node_shared_store
from miri_lightning.data.store import CHUNK, Store, build_store, decode
from miri_lightning.snapshots import load_snapshot, save_atomically, save_snapshot, snapshot_path, tensor_digest

#: Tests only: a folder where every rank writes the pair indices it draws each round
#: (``pairs_round<k>_rank<r>.safetensors``, tensor ``pairs`` (steps, 2, batch): i then j).
RECORD_PAIRS_ENV = "MIRI_RECORD_PAIRS"


def per_rank_batch(batch_size: int, world_size: int) -> int:
    """The pairs each of ``world_size`` ranks trains per step: ``miri.batch_size`` is the
    global batch, split evenly (a world size that does not divide it is refused)."""
    if batch_size % world_size:
        multiple = -(-batch_size // world_size) * world_size
        raise ValueError(
            f"miri.batch_size={batch_size} is the global batch, split evenly over the world size of "
            f"{world_size} ranks (trainer.devices x trainer.num_nodes), which does not divide it: set "
            f"miri.batch_size to a multiple of {world_size} (e.g. {multiple})"
        )
    return batch_size // world_size


class PairBatches(IterableDataset):
    """``steps`` batches of (source x̃_i, its mask o_i, partner x̃_j, its mask o_j) with i and j drawn
    uniformly and independently, from a generator seeded with ``seed``; with the source's
    cached interpolation ``store.interp[i]`` as a fifth tensor when the store keeps one. The
    indices are drawn on the store's device (no host round trip per step when the store is on
    an accelerator); on the CPU the stream is the CPU generator's, as before. ``record``: a file
    where the drawn indices are written once the last batch is drawn (tests)."""

    def __init__(self, store: Store, batch_size: int, steps: int, seed: int, record: Path | None = None):
        self.store, self.batch_size, self.steps, self.seed = store, batch_size, steps, seed
        self.record = record

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        store = self.store
        device = store.imputed.device
        generator = torch.Generator(device=device).manual_seed(self.seed)
        n = len(store)
        drawn = []
        for step in range(self.steps):
            i = torch.randint(n, (self.batch_size,), generator=generator, device=device)
            j = torch.randint(n, (self.batch_size,), generator=generator, device=device)
            if self.record is not None:
                drawn.append(torch.stack([i, j]).cpu())
                if step == self.steps - 1:
                    save_atomically(self.record, {"pairs": torch.stack(drawn)})
            imputed = store.imputed
            observed = store.observed
            pairs = (decode(imputed[i]), observed[i], decode(imputed[j]), observed[j])
            yield pairs if store.interp is None else (*pairs, store.interp[i])


def round_seed(seed: int, round_index: int, rank: int, stream: int = 0) -> int:
    """A seed for one stream of random draws (0: pairs, 1: times, 2: weights) of one rank in
    one round, distinct across (stream, round, rank)."""
    return (((seed * 1_000_003 + round_index) * 10_007 + rank) * 8 + stream) % (2**63)


class MIRIDataModule(L.LightningDataModule):
    """One Lightning epoch = one MIRI round of ``steps_per_round`` batches of pairs.

    ``source`` loads the images (and a mask if they come with one); ``mask`` makes the mask
    otherwise. The store is built once in :meth:`setup`: under DDP once per machine, in shared
    memory (:mod:`miri_lightning.data.shared`); its initial fill on ``fill_device`` (the
    accelerator when there is one). The MIRI callback hands each round's imputation to
    :meth:`commit_round`, which snapshots it under ``output_dir`` and hashes it there, once, on
    the rank that writes. The Lightning checkpoint holds only which snapshot the store is
    (round, path, hashes); the hashes of the mask and the observed values, which no round
    changes, are computed once per run.
    """

    def __init__(
        self,
        source,
        mask,
        batch_size: int,
        steps_per_round: int,
        init: str = "noise",
        seed: int = 0,
        output_dir: str | Path | None = None,
        store_dtype: str = "float32",
        init_noise: float = 0.0,
        store_on_device: bool = False,
        init_noise_mode: str = "constant",
    ):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"miri.batch_size must be at least 1, got {batch_size}")
        if steps_per_round < 1:
            raise ValueError(f"miri.steps_per_round must be at least 1, got {steps_per_round}")
        if init not in flow.INITS:
            raise ValueError(f"miri.init must be one of {flow.INITS}, got {init!r}")
        if init_noise < 0:
            raise ValueError(f"miri.init_noise must be at least 0, got {init_noise}")
        flow.check_noise_mode(init_noise_mode)
        self.init_noise, self.init_noise_mode, self.store_on_device = init_noise, init_noise_mode, store_on_device
        self.source, self.mask = source, mask
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.store_dtype = store_dtype
        self.batch_size, self.steps_per_round, self.init, self.seed = batch_size, steps_per_round, init, seed
        self.store: Store | None = None
        #: The number of completed MIRI rounds that ``store.imputed`` reflects.
        self.round = 0
        #: Where the initial fill is computed (None: the trainer's device, else the CPU).
        self.fill_device: torch.device | str | None = None
        #: sha256 of the mask, of the observed values (once per run) and of the round's imputation.
        self._digests: dict[str, str] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.store is not None:
            return
        trainer = self.trainer
        device = self.fill_device
        if device is None and trainer is not None:
            device = trainer.strategy.root_device
        loaded = self.source.load()
        # miri.init=learned: the biharmonic fill until the centre is trained (callbacks/centre.py refills)
        init = "biharmonic" if self.init == "learned" else self.init
        if self.init == "learned" and loaded.values.dim() != 4:
            raise ValueError("miri.init=learned learns a centre of images: use miri.init=noise or mean for tables")
        args = (loaded, self.mask, init, self.seed, self.store_dtype, self.init_noise, self.init_noise_mode)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            local_rank = trainer.local_rank if trainer is not None else int(os.environ.get("LOCAL_RANK", 0))
            self.store = build_node_shared_store(*args, local_rank=local_rank, device=device)
        else:
            self.store = build_store(*args, device=device)

    def train_dataloader(self) -> DataLoader:
        """This rank's batches of the round: ``batch_size / world size`` pairs per step, drawn
        from its own stream, seeded by (seed, round, rank)."""
        trainer = self.trainer
        round_index = trainer.current_epoch if trainer is not None else self.round
        rank = trainer.global_rank if trainer is not None else 0
        batch = per_rank_batch(self.batch_size, trainer.world_size if trainer is not None else 1)
        if self.store_on_device and trainer is not None:
            self.store.to(trainer.strategy.root_device)
        record = os.environ.get(RECORD_PAIRS_ENV)
        if record:
            record = Path(record) / f"pairs_round{round_index + 1:03d}_rank{rank}.safetensors"
        seed = round_seed(self.seed, round_index, rank)
        return DataLoader(PairBatches(self.store, batch, self.steps_per_round, seed, record or None), batch_size=None)

    def commit_round(self, round_index: int, imputed: Tensor, write: bool) -> None:
        """Make ``imputed`` the store of completed round ``round_index``; ``write`` (rank 0
        only) saves its snapshot."""
        self.store.imputed, self.round = imputed, round_index
        self._digests.pop("imputed", None)
        if write and self.output_dir is not None:
            save_snapshot(self.output_dir, round_index, imputed, self.store.observed)
            self._digests["imputed"] = tensor_digest(imputed)  # once, here; the checkpoints reuse it
            export = getattr(self.source, "export", None)  # tables: the imputed CSV, original units
            if export is not None:
                export(imputed, self.store.observed, self.output_dir)

    def state_dict(self) -> dict:
        """What the checkpoint holds of the data: round, shape and hashes. Lightning builds it
        on every rank and saves global rank 0's: the other ranks hash nothing."""
        store = self.store
        state = {"round": self.round, "shape": list(store.imputed.shape)}
        if self.trainer is not None and not self.trainer.is_global_zero:
            return state
        state["observed_sha256"], state["data_sha256"] = self._data_digests()
        if self.round > 0 and self.output_dir is not None:
            state["snapshot"] = snapshot_path(".", self.round).as_posix()
            if "imputed" not in self._digests:  # a store that was not committed here
                self._digests["imputed"] = tensor_digest(store.imputed)
            state["imputed_sha256"] = self._digests["imputed"]
        return state

    def _data_digests(self) -> tuple[str, str]:
        """sha256 of the mask and of the observed values: computed once per run."""
        if "observed" not in self._digests:
            self._digests["observed"] = tensor_digest(self.store.observed)
            self._digests["data"] = observed_data_digest(self.store)
        return self._digests["observed"], self._digests["data"]

    def load_state_dict(self, state: dict) -> None:
        """Restore the store of a checkpoint: check that the data and mask are the ones the
        run was started with, then load the round's snapshot."""
        store = self.store
        if list(store.imputed.shape) != list(state["shape"]):
            raise ValueError(
                f"the checkpoint was made on data of shape {tuple(state['shape'])} but the data now have "
                f"{tuple(store.imputed.shape)}: resume with the run's own data.* settings (see its config.yaml)"
            )
        observed_sha256, data_sha256 = self._data_digests()
        if observed_sha256 != state["observed_sha256"]:
            raise ValueError(
                "the checkpoint was made with another mask than the one these settings give: resume with the "
                "run's own mask.* and data.* settings (see its config.yaml)"
            )
        if data_sha256 != state["data_sha256"]:
            raise ValueError(
                "the checkpoint was made on other images than the ones these settings give: resume with the "
                "run's own data.* settings (see its config.yaml)"
            )
        round_index = int(state["round"])
        if round_index > 0:
            if self.output_dir is None or "snapshot" not in state:
                raise ValueError("this checkpoint's store lives in a snapshot, but no output_dir was given to find it")
            path = self.output_dir / state["snapshot"]
            tensors = load_snapshot(path)
            if not torch.equal(tensors["observed"].to(store.observed.device), store.observed):
                raise ValueError(f"snapshot {path} was made with another mask than this run's")
            if tensor_digest(tensors["imputed"]) != state["imputed_sha256"]:
                raise ValueError(f"snapshot {path} does not hold the data its checkpoint recorded (hash differs)")
            if store.node_shared:  # every rank of the machine writes the same values into the one copy
                store.imputed.copy_(tensors["imputed"])
            else:
                store.imputed = tensors["imputed"].to(store.imputed.device)
            self._digests["imputed"] = state["imputed_sha256"]
        self.round = round_index


def observed_data_digest(store: Store) -> str:
    """sha256 of the observed entries' values (missing entries zeroed): what the data are.
    Streamed over chunks of items: the digest of the whole, without a copy of the whole."""
    digest, zero = hashlib.sha256(), torch.zeros((), dtype=store.imputed.dtype, device=store.imputed.device)
    for k in range(0, len(store), CHUNK):
        part = torch.where(store.observed[k : k + CHUNK], store.imputed[k : k + CHUNK], zero)
        digest.update(part.contiguous().cpu().numpy())
    return digest.hexdigest()
