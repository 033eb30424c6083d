"""Memory and build time of the store for a data set of a given size, synthetically; with
``--ranks``, host memory per rank and per machine and the round-end overhead under DDP.

    python scripts/benchmark_store.py                      # full CelebA at 64×64 (202,599 images)
    python scripts/benchmark_store.py --n 5000 --image-size 32 --dtype float32
    python scripts/benchmark_store.py --ranks 2 --n 50000  # 2 gloo ranks on this machine
    python scripts/benchmark_store.py --ranks 1            # the round end, full CelebA, one rank

Single-process mode builds the store the DataModule would hold (random 8-bit images as the
truth, a pixel-level MCAR mask at 60 %, the uniform-noise fill) and prints its bytes and how
long it took.

``--ranks W`` starts W processes (a gloo process group, as ``trainer=ddp_cpu``), each with its
DataModule: the source is the synthetic set, decoded through ``data.cache_dir`` when this code
has one (memory-mapped, once per machine) and made in memory by every rank otherwise; then
``setup`` builds the store as a DDP run does. Then one round end as the MIRI callback and
Lightning run it, without the ODE (each rank's re-imputed shard is its current rows): the gather
of the shards into every rank's store, the commit (snapshot written, on rank 0), and the
checkpoint state built twice (round_XXX.ckpt and last.ckpt, on every rank as Lightning does).
The launcher polls every rank's /proc/<pid>/smaps_rollup and prints, per rank and for the
machine (the sum over ranks), the peak RSS, PSS (shared pages divided among the processes that
map them: what the machine really holds) and USS (private pages). Runs on the code on
PYTHONPATH: point it at another checkout to measure that code with the same script.
"""

import argparse
import json
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from miri_lightning.data.sources import LoadedImages
from miri_lightning.data.store import STORE_DTYPES, build_store
from miri_lightning.masks import MCARMask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=202_599, help="images (default: CelebA's 202,599)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--dtype", choices=sorted(STORE_DTYPES), default="float16", help="data.store_dtype")
    parser.add_argument("--ranks", type=int, default=0, help="W > 0: W gloo processes, memory and round end")
    parser.add_argument("--impute-batch-size", type=int, default=1000, help="miri.impute_batch_size (--ranks)")
    parser.add_argument("--rounds", type=int, default=2, help="round ends timed (--ranks; the first hashes the mask)")
    parser.add_argument("--workdir", default=None, help="--ranks: cache and run directory (default: a temp dir)")
    parser.add_argument("--rank", type=int, default=None, help=argparse.SUPPRESS)  # a rank started by --ranks
    args = parser.parse_args()
    if args.rank is not None:
        rank_main(args)
    elif args.ranks:
        launch(args)
    else:
        single(args)


def single(args) -> None:
    shape = (args.n, args.channels, args.image_size, args.image_size)
    started = time.perf_counter()
    truth = synthetic(shape)
    made = time.perf_counter()
    store = build_store(LoadedImages(truth), MCARMask(0.6, "pixel"), "noise", seed=0, dtype=args.dtype)
    built = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    parts = {"imputed": store.imputed, "observed": store.observed, "truth": store.truth}
    print(f"store for {args.n:,} images of {args.channels}×{args.image_size}×{args.image_size}, {args.dtype}:")
    for name, tensor in parts.items():
        print(f"  {name:9s} {str(tensor.dtype):14s} {tensor.numel() * tensor.element_size() / 2**30:8.2f} GiB")
    print(f"  total     {store.nbytes / 2**30:23.2f} GiB = {store.nbytes / args.n / 1024:.1f} KiB per image")
    print(f"  synthetic images {made - started:.1f} s, store built in {built - made:.1f} s")
    print(f"  peak RSS {peak / 2**30:.2f} GiB")


def synthetic(shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


class SyntheticSource:
    """Random 8-bit images, through ``cache_dir`` when this code has a cache."""

    def __init__(self, shape: tuple[int, ...], cache_dir: str):
        self.shape, self.cache_dir = shape, cache_dir

    def load(self) -> LoadedImages:
        try:
            from miri_lightning.data.cache import cached_arrays
        except ImportError:  # code without a cache: every rank makes (decodes) the images
            return LoadedImages(synthetic(self.shape))
        key = {"source": "synthetic", "shape": list(self.shape), "image_size": self.shape[-1], "n": self.shape[0]}
        return LoadedImages(cached_arrays(self.cache_dir, key, [], lambda: {"values": synthetic(self.shape)})["values"])


# -- the ranks ----------------------------------------------------------------------------


def memory() -> dict[str, int]:
    """This process's RSS, PSS and USS in bytes (smaps_rollup)."""
    return rollup(os.getpid())


def rollup(pid: int) -> dict[str, int]:
    fields = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[-1] == "kB":
                fields[parts[0].rstrip(":")] = int(parts[1]) * 1024
    uss = fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
    return {"rss": fields.get("Rss", 0), "pss": fields.get("Pss", 0), "uss": uss}


def rank_main(args) -> None:
    import torch.distributed as dist

    try:
        from miri_lightning import exchange as callback
    except ImportError:  # before exchange.py the callback module held gather_shards (or the padded all_gather)
        from miri_lightning.callbacks import miri as callback
    from miri_lightning.data.datamodule import MIRIDataModule

    work = Path(args.workdir)
    rank, world = args.rank, args.ranks
    os.environ["LOCAL_RANK"] = str(rank)
    dist.init_process_group("gloo", init_method=f"file://{work}/init", rank=rank, world_size=world)
    shape = (args.n, args.channels, args.image_size, args.image_size)
    timings = {}
    started = time.perf_counter()
    dm = MIRIDataModule(
        SyntheticSource(shape, str(work / "cache")),
        MCARMask(0.6, "pixel"),
        batch_size=64,
        steps_per_round=1,
        output_dir=work / "run",
        store_dtype=args.dtype,
    )
    dm.trainer = SimpleNamespace(
        is_global_zero=rank == 0, local_rank=rank, global_rank=rank, strategy=SimpleNamespace(root_device="cpu")
    )
    dm.setup("fit")
    dist.barrier()
    timings["setup"] = {"setup": time.perf_counter() - started}
    after_setup = memory()

    store = dm.store
    n = len(store)
    shard = -(-n // world)
    start, stop = min(rank * shard, n), min((rank + 1) * shard, n)
    for round_index in range(1, args.rounds + 1):
        # the ODE's output, batch by batch: this rank's current rows, copied
        step = args.impute_batch_size
        parts = [store.imputed[k : min(k + step, stop)].clone() for k in range(start, stop, step)]
        dist.barrier()
        clock = time.perf_counter()
        if hasattr(callback, "gather_shards"):
            shared = getattr(store, "node_shared", False)
            imputed = callback.gather_shards(store.imputed, parts, start, shard, torch.device("cpu"), shared)
        else:  # the code before gather_shards: the callback's padded all_gather (a list, then a stack)
            mine = torch.cat(parts) if parts else store.imputed[:0]
            if world == 1:
                imputed = mine
            else:
                padded = store.imputed.new_zeros((shard, *store.imputed.shape[1:]))
                padded[: mine.shape[0]] = mine
                gathered = [torch.zeros_like(padded) for _ in range(world)]
                dist.all_gather(gathered, padded)
                imputed = torch.stack(gathered).reshape(world * shard, *store.imputed.shape[1:])[:n]
            del mine
        del parts
        times = {"gather": time.perf_counter() - clock}
        dist.barrier()
        clock = time.perf_counter()
        dm.commit_round(round_index, imputed, write=rank == 0)
        del imputed
        times["commit (snapshot + its hash)"] = time.perf_counter() - clock
        dist.barrier()
        clock = time.perf_counter()
        for _ in range(2):  # round_XXX.ckpt and last.ckpt: Lightning builds the state on every rank
            dm.state_dict()
        times["checkpoint state x2 (hashes)"] = time.perf_counter() - clock
        dist.barrier()
        times["round end"] = sum(times.values())
        timings[f"round {round_index}"] = times
    result = {"rank": rank, "timings": timings, "after_setup": after_setup, "after_round": memory()}
    (work / f"rank{rank}.json").write_text(json.dumps(result))
    dist.barrier()
    dist.destroy_process_group()


def launch(args) -> None:
    import subprocess

    own = args.workdir is None
    work = Path(args.workdir or tempfile.mkdtemp(prefix="benchmark_store-"))
    work.mkdir(parents=True, exist_ok=True)
    for stale in [work / "init", *work.glob("rank*.json")]:
        stale.unlink(missing_ok=True)
    base = [sys.executable, __file__, *sys.argv[1:], "--workdir", str(work)]
    processes = [subprocess.Popen([*base, "--rank", str(r)]) for r in range(args.ranks)]
    peaks = {p.pid: {"rss": 0, "pss": 0, "uss": 0} for p in processes}
    node = {"rss": 0, "pss": 0, "uss": 0}
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            now = {}
            for p in processes:
                try:
                    now[p.pid] = rollup(p.pid)
                except (OSError, ValueError):
                    continue
            for pid, figures in now.items():
                for k, v in figures.items():
                    peaks[pid][k] = max(peaks[pid][k], v)
            for k in node:
                node[k] = max(node[k], sum(f[k] for f in now.values()))
            time.sleep(0.05)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    codes = [p.wait() for p in processes]
    done.set()
    thread.join()
    if any(codes):
        sys.exit(f"a rank failed: exit codes {codes}")
    results = [json.loads((work / f"rank{r}.json").read_text()) for r in range(args.ranks)]
    import miri_lightning

    gib = 2**30
    store_gib = args.n * args.channels * args.image_size**2 * (STORE_DTYPES[args.dtype].itemsize + 2) / gib
    print(
        f"{args.ranks} rank(s), {args.n:,} images of {args.channels}×{args.image_size}×{args.image_size}, "
        f"store {args.dtype} ({store_gib:.2f} GiB with mask and uint8 truth); "
        f"code: {Path(miri_lightning.__file__).parent}"
    )
    print("  host memory, GiB       peak RSS   peak PSS   peak USS | after setup: RSS  PSS  USS")
    for r, p in enumerate(processes):
        s = results[r]["after_setup"]
        line = f"  rank {r}               {peaks[p.pid]['rss'] / gib:9.2f}  {peaks[p.pid]['pss'] / gib:9.2f}  "
        line += f"{peaks[p.pid]['uss'] / gib:9.2f} |       "
        line += f"{s['rss'] / gib:6.2f} {s['pss'] / gib:5.2f} {s['uss'] / gib:5.2f}"
        print(line)
    print(
        f"  machine (sum, peak)   {node['rss'] / gib:9.2f}  {node['pss'] / gib:9.2f}  {node['uss'] / gib:9.2f}"
        "   (RSS counts shared pages once per rank; PSS divides them: the machine's real share)"
    )
    for phase, times in results[0]["timings"].items():
        slowest = ", ".join(f"{k} {max(r['timings'][phase][k] for r in results):.2f}" for k in times)
        print(f"  seconds, {phase} (slowest rank): {slowest}")
    if own:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
