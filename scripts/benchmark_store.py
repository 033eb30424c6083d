"""Memory and build time of the store for a data set of a given size, synthetically.

    python scripts/benchmark_store.py                      # full CelebA at 64×64 (202,599 images)
    python scripts/benchmark_store.py --n 5000 --image-size 32 --dtype float32

Builds the store the DataModule would hold (random 8-bit images as the truth, a pixel-level
MCAR mask at 60 %, the uniform-noise fill) and prints its bytes and how long it took.
"""

import argparse
import resource
import time

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
    args = parser.parse_args()

    shape = (args.n, args.channels, args.image_size, args.image_size)
    started = time.perf_counter()
    truth = torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
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


if __name__ == "__main__":
    main()
