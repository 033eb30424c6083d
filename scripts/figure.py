"""The README's picture: draws of trained runs next to biharmonic inpainting, and their scores.

    python scripts/figure.py checkpoints/sample_pixel checkpoints/sample_channel --out docs/draws.png

For each run directory (a finished ``train.py`` run with ground truth): K draws of every item
through every round's flow (as ``scripts/quality.py`` draws them), one panel of a few images
with the rows truth / with holes (grey) / biharmonic / three MIRI draws / the mean of the K /
the per-pixel spread (standard deviation of the K draws, mean over the channels, × 4, white where
the draws disagree), the panels side by side in one PNG; and one markdown table per run of
PSNR on missing entries (one draw, and the mean of K), CRPS, energy score, spread–skill ratio
and SWD for the mean fill, biharmonic, the run's initial fill (the K fills the draws start
from, without the flows) and MIRI (the scores
of ``scripts/quality.py``, on the run's set and masks, or its first ``--items``), also written
beside the PNG as ``<out>.md``.
"""

import argparse
from pathlib import Path

import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file
from torch import Tensor

from miri_lightning.baselines import BASELINES
from miri_lightning.evaluation import load_truth
from miri_lightning.quality import compare, draw, markdown
from miri_lightning.scoring import cell
from miri_lightning.snapshots import snapshot_files

ROWS = ("truth", "with holes", "biharmonic", "MIRI draw 1", "MIRI draw 2", "MIRI draw 3", "mean of {k}", "spread x4")


def panel(truth: Tensor, observed: Tensor, samples: Tensor) -> Tensor:
    """The rows of one panel: (len(ROWS), n, 3, H, W) from truth, observed (n, C, H, W) and
    the K ≥ 3 draws (K, n, C, H, W)."""
    holes = torch.where(observed, truth, 0.5)
    biharmonic = BASELINES["biharmonic"](torch.where(observed, truth, 0), observed)
    spread = (4 * samples.std(0).mean(1, keepdim=True)).clamp(0, 1).expand_as(truth)
    rows = [truth, holes, biharmonic, samples[0], samples[1], samples[2], samples.mean(0), spread]
    return torch.stack([r.expand(-1, 3, -1, -1) if r.shape[1] == 1 else r for r in rows])


def to_image(rows: Tensor, scale: int, gap: int = 2) -> Image.Image:
    """rows (R, n, 3, H, W) in [0, 1] -> one white-gapped picture, each pixel scale×scale."""
    r, n, _, h, w = rows.shape
    size_h, size_w = h * scale + gap, w * scale + gap
    canvas = Image.new("RGB", (n * size_w - gap, r * size_h - gap), "white")
    for i in range(r):
        for j in range(n):
            tile = (rows[i, j].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
            image = Image.fromarray(tile).resize((w * scale, h * scale), Image.NEAREST)
            canvas.paste(image, (j * size_w, i * size_h))
    return canvas


def compose(panels: list[tuple[str, Tensor]], scale: int, k: int) -> Image.Image:
    """Panels side by side under their titles, the row names on the left (K draws)."""
    label_w, title_h, gap = 96, 18, 12
    images = [to_image(rows, scale) for _, rows in panels]
    height = title_h + max(im.height for im in images)
    width = label_w + sum(im.width for im in images) + gap * (len(images) - 1)
    canvas = Image.new("RGB", (width, height), "white")
    pen = ImageDraw.Draw(canvas)
    row_h = images[0].height / len(ROWS)
    for i, name in enumerate(ROWS):
        pen.text((4, title_h + i * row_h + row_h / 2 - 6), name.format(k=k), fill="black")
    x = label_w
    for (title, _), image in zip(panels, images, strict=True):
        pen.text((x + 2, 3), title, fill="black")
        canvas.paste(image, (x, title_h))
        x += image.width + gap
    return canvas


def table(title: str, rows: list[dict]) -> str:
    """PSNR of one draw and of the mean of K, CRPS, energy score, spread–skill and SWD of one
    run, markdown: the mean fill, biharmonic, the fill alone (no flow) and MIRI."""
    named = {row["method"]: row for row in rows}
    mean_k = next(r for r in rows if r["method"].startswith("miri_mean_"))
    k = mean_k["method"].removeprefix("miri_mean_")
    lines = [
        f"| {title} | PSNR, one draw (dB) | PSNR, mean of {k} (dB) | CRPS | energy score | spread–skill "
        "| SWD, one draw |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, row in (("mean fill", named["mean"]), ("biharmonic", named["biharmonic"])):
        lines.append(
            f"| {label} | {row['psnr_missing']:.2f} | (deterministic) | {row['crps']:.4f} | {row['energy_score']:.4f} "
            f"| | {row['swd']:.1f} |"
        )
    for label, one, mean in (
        ("the fill alone, no flow", named["initial_fill"], named[f"initial_fill_mean_{k}"]),
        ("MIRI", named["miri_sample"], mean_k),
    ):
        lines.append(
            f"| {label} | {one['psnr_missing']:.2f} | {mean['psnr_missing']:.2f} | {cell(one['crps'])} "
            f"| {cell(one['energy_score'])} | {cell(one['spread_skill'])} | {one['swd']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories of train.py (with ground truth)")
    parser.add_argument("--out", type=Path, default=Path("docs/draws.png"))
    parser.add_argument("--images", type=int, default=5, help="images per panel")
    parser.add_argument("--samples", type=int, default=8, help="K draws per item (at least 3)")
    parser.add_argument("--scale", type=int, default=3, help="screen pixels per image pixel")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--first", type=int, default=0, help="index of the first image shown")
    parser.add_argument("--items", type=int, default=None, help="draw and score only the first N items (default: all)")
    args = parser.parse_args()
    if args.samples < 3:
        raise SystemExit("error: --samples must be at least 3 (the picture shows three draws)")
    panels, tables = [], []
    for run in args.runs:
        truth = load_truth(run)
        observed = load_file(snapshot_files(run)[-1][1])["observed"]
        truth, observed = truth[: args.items], observed[: args.items]
        samples, seconds, fills = draw(run, truth, observed, args.samples, args.seed, say=lambda line: None)
        rows = compare(truth, observed, samples, (seconds[0], seconds[-1]), ("mean", "biharmonic"), fills=fills)
        missing = 1 - observed.float().mean().item()
        level = "channel" if (observed.any(1) & ~observed.all(1)).any() else "pixel"
        title = f"{level}, {missing:.0%} missing"
        shown = slice(args.first, args.first + args.images)
        panels.append((title, panel(truth[shown], observed[shown], samples[:, shown])))
        tables.append(table(title, rows))
        print(f"{title}\n\n{markdown(rows)}\n\n{tables[-1]}\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    compose(panels, args.scale, args.samples).save(args.out, optimize=True)
    args.out.with_suffix(".md").write_text("\n\n".join(tables) + "\n")
    print(f"written: {args.out} ({args.out.stat().st_size / 1024:.0f} KiB), {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
