"""``miri-impute`` / ``python scripts/impute.py``: fill the holes of new images with a trained run.

    miri-impute --run checkpoints/sample_pixel --input photos --masks masks --output filled --num-samples 8
    miri-impute --run checkpoints/sample_pixel --input photos --hole-color 255,0,255 --output filled
    miri-impute --run checkpoints/sample_pixel --array scans.npy --output filled

Writes, per image, ``<name>_sample<k>.png`` (k < K), ``<name>_mean.png`` (the per-pixel mean of
the K imputations: the best estimate), ``<name>_std.png`` (their standard deviation, ×2, so
white = maximal spread: where the filling is uncertain), and ``imputations.npz`` (samples,
mean, std, observed, names).
"""

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from miri_lightning.data.array import load_array
from miri_lightning.data.folder import find_mask, image_files, read_image
from miri_lightning.inference import RunFlows


def read_folder(args, channels: int, size: int) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    root = Path(args.input)
    files = image_files(root)
    images, masks, names = [], [], []
    for path in files:
        with Image.open(path) as image:
            if image.size != (size, size) and not args.resize:
                raise ValueError(
                    f"{path} is {image.width}×{image.height} but the model takes {size}×{size}: pass --resize "
                    "to centre-crop and resize it"
                )
            rgba = np.asarray(ImageOps.fit(image.convert("RGBA"), (size, size), Image.Resampling.NEAREST))
        pixels = read_image(path, size, channels)
        if args.masks:
            mask_file = find_mask(path, root, Path(args.masks))
            with Image.open(mask_file) as mask_image:
                if mask_image.size != image.size:
                    raise ValueError(
                        f"mask {mask_file} is {mask_image.width}×{mask_image.height}, "
                        f"its image {path} is {image.width}×{image.height}"
                    )
            observed = read_image(mask_file, size, 1, resample=Image.Resampling.NEAREST)[0] > 0
        elif args.hole_color:
            colour = np.array([int(v) for v in args.hole_color.split(",")], np.uint8)
            observed = ~(rgba[..., :3] == colour).all(-1)
        else:
            observed = rgba[..., 3] > 0
        images.append(pixels)
        masks.append(np.broadcast_to(observed, pixels.shape))
        names.append(str(path.relative_to(root).with_suffix("")).replace("/", "__"))
    x = torch.from_numpy(np.stack(images)).float() / 255
    return names, x, torch.from_numpy(np.stack(masks).copy())


def to_png(image: torch.Tensor, path: Path) -> None:
    array = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a run directory of train.py (with flows/ and config.yaml)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", help="a folder of images with holes")
    source.add_argument("--array", help="a .npy/.npz/.pt array, NaN = missing")
    parser.add_argument("--masks", help="mask images named like the inputs (black = missing)")
    parser.add_argument("--hole-color", help="R,G,B: pixels of exactly this colour are missing")
    parser.add_argument("--mask-array", help="with --array: a mask array (nonzero = observed)")
    parser.add_argument("--resize", action="store_true", help="centre-crop and resize images of another size")
    parser.add_argument("--output", required=True, help="the folder to write to")
    parser.add_argument("--num-samples", type=int, default=1, help="K imputations per image (default 1)")
    parser.add_argument(
        "--noise",
        type=float,
        help="σ of the noise on the initial fill of each draw, for runs with a mean, interp or biharmonic "
        "fill (default: the run's miri.sample_noise, else its miri.init_noise; with the run's "
        "miri.init_noise_mode=local or correlated, a multiple of each pixel's local spread); smaller: cleaner draws "
        "that differ less",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="e.g. cpu, cuda:1")
    args = parser.parse_args(argv)
    try:
        if args.noise is not None and args.noise < 0:
            raise ValueError(f"--noise must be at least 0, got {args.noise}")
        if args.num_samples < 1:
            raise ValueError(f"--num-samples must be at least 1, got {args.num_samples}")
        flows = RunFlows(args.run, args.device, args.noise)
        if flows.channels is None:
            raise ValueError(f"{args.run} imputed vectors (a table): its imputed.csv holds the result")
        if args.input:
            names, x, observed = read_folder(args, flows.channels, flows.image_size)
        else:
            x, observed = load_array(args.array, args.mask_array)
            names = [f"item_{i:05d}" for i in range(x.shape[0])]
            if tuple(x.shape[1:]) != (flows.channels, flows.image_size, flows.image_size):
                raise ValueError(
                    f"{args.array} holds images of shape {tuple(x.shape[1:])}, the model takes "
                    f"{(flows.channels, flows.image_size, flows.image_size)}"
                )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    complete = observed.flatten(1).all(1)
    if complete.any():
        print(f"{int(complete.sum())} images have no holes: passed through unchanged")
    empty = (~observed).flatten(1).all(1)
    if empty.any():
        warnings.warn(f"{int(empty.sum())} images have every pixel missing: filled from the model alone", stacklevel=1)
    samples = flows.sample(x, observed, args.num_samples, args.seed)  # (K, N, C, H, W)
    mean = torch.where(observed, x, samples.mean(0))
    std = torch.where(observed, 0.0, samples.std(0, unbiased=False))
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        for k in range(args.num_samples):
            to_png(samples[k, i], out / f"{name}_sample{k}.png")
        to_png(mean[i], out / f"{name}_mean.png")
        to_png(std[i] * 2, out / f"{name}_std.png")
    np.savez(
        out / "imputations.npz",
        samples=samples.numpy(),
        mean=mean.numpy(),
        std=std.numpy(),
        observed=observed.numpy(),
        names=np.array(names),
    )
    print(f"imputed {len(names)} images × {args.num_samples} samples with {len(flows.nets)} rounds' flows -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
