"""The quality benchmark: a MIRI recipe against the cheap imputations, on the same masks.

One table, one row per method: the baselines, one MIRI sample (the faithful draw: compare
its distribution metrics) and the mean of K MIRI samples (the posterior-mean estimate:
compare its PSNR), each with the wall time it took.
"""

import csv
import time
from pathlib import Path

import torch
from omegaconf import DictConfig

from miri_lightning import metrics
from miri_lightning.baselines import BASELINES
from miri_lightning.data.store import decode
from miri_lightning.evaluation import cell
from miri_lightning.fid import Features, fid, inception_features
from miri_lightning.inference import RunFlows
from miri_lightning.run import train

COLUMNS = ("method", "psnr_missing", "ssim", "mmd", "fid", "seconds")


def score(x: torch.Tensor, truth: torch.Tensor, observed: torch.Tensor, mmd_items: int, features) -> dict:
    """The table's metrics of one imputation x (N, C, H, W) of the set."""
    return {
        "psnr_missing": metrics.psnr_missing(x, truth, observed).item(),
        "ssim": metrics.ssim(x, truth).item(),
        "mmd": metrics.mmd(x, truth, mmd_items).item(),
        "fid": fid(x, truth, features) if features is not None else None,
    }


def compare(
    truth: torch.Tensor,
    observed: torch.Tensor,
    samples: torch.Tensor,
    miri_seconds: tuple[float, float],
    baselines: tuple[str, ...],
    mmd_items: int = 1000,
    features: Features | None = None,
) -> list[dict]:
    """Rows of the table. truth, observed: (N, C, H, W); samples: (K, N, C, H, W) MIRI
    imputations; miri_seconds: (time to the first sample, time to all K) in seconds."""
    check_baselines(baselines)
    rows = []
    for name in baselines:
        started = time.perf_counter()
        filled = BASELINES[name](torch.where(observed, truth, 0), observed)
        seconds = time.perf_counter() - started
        rows.append({"method": name, **score(filled, truth, observed, mmd_items, features), "seconds": seconds})
    k = samples.shape[0]
    rows.append({"method": "miri_sample", **score(samples[0], truth, observed, mmd_items, features)})
    rows[-1]["seconds"] = miri_seconds[0]
    if k > 1:
        rows.append({"method": f"miri_mean_{k}", **score(samples.mean(0), truth, observed, mmd_items, features)})
        rows[-1]["seconds"] = miri_seconds[1]
    return rows


def check_baselines(baselines) -> None:
    unknown = [name for name in baselines if name not in BASELINES]
    if unknown:
        raise ValueError(f"quality.baselines: unknown {unknown}, choose from {sorted(BASELINES)}")


def check_comparable(run) -> None:
    """Before any training: the quality table needs images with ground truth."""
    store = run.datamodule.store
    if store.imputed.dim() != 4:
        raise ValueError(
            "scripts/quality.py compares image imputations; for tables the round lines report RMSE, MAE, MMD"
        )
    if store.truth is None:
        raise ValueError("quality needs data with ground truth (a simulated mask): these data come with their own mask")


def run_quality(cfg: DictConfig, say=print) -> tuple[list[dict], Path]:
    """Train the recipe ``cfg`` describes (as ``train.py`` would), draw ``quality.samples``
    imputations of its items through every round's flow, and compare with the baselines on
    the run's own masks; writes ``quality.csv`` and ``quality.md`` in the run directory."""
    q = cfg.quality
    if q.samples < 1:
        raise ValueError(f"quality.samples must be at least 1, got {q.samples}")
    check_baselines(q.baselines)
    started = time.perf_counter()
    run = train(cfg, check=check_comparable)
    train_seconds = time.perf_counter() - started
    if not run.trainer.is_global_zero:  # under DDP rank 0 alone samples and writes the table
        return [], run.output_dir
    store = run.datamodule.store
    truth, observed = decode(store.truth).cpu(), store.observed.cpu()
    # the module is back on the CPU after fit: sample on the device the run trained on
    flows = RunFlows(run.output_dir, run.trainer.strategy.root_device, cfg.miri.get("sample_noise"))
    generator = torch.Generator().manual_seed(int(q.seed))
    x = torch.where(observed, truth, 0)
    samples, elapsed = [], []
    sampling_started = time.perf_counter()
    base = None if flows.init == "noise" else flows.deterministic_fill(x, observed)
    for k in range(q.samples):
        samples.append(flows.impute(x, observed, generator, cfg.miri.impute_batch_size, base))
        elapsed.append(time.perf_counter() - sampling_started)
        say(f"sample {k + 1}/{q.samples} of {len(x)} items through {len(flows.nets)} flow(s): {elapsed[-1]:.1f} s")
    features = None
    if cfg.metrics.fid:
        try:
            features = inception_features(cfg.metrics.fid_weights_path)
        except FileNotFoundError as error:
            say(f"FID skipped: {error}")
    rows = compare(
        truth,
        observed,
        torch.stack(samples),
        (train_seconds + elapsed[0], train_seconds + elapsed[-1]),
        tuple(q.baselines),
        cfg.metrics.mmd_items,
        features,
    )
    write_quality(rows, run.output_dir)
    return rows, run.output_dir


def markdown(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in COLUMNS) + " |" for row in rows]
    return "\n".join(lines)


def write_quality(rows: list[dict], output_dir: str | Path) -> Path:
    """``quality.csv`` (empty cells where a metric is absent) and ``quality.md``."""
    output_dir = Path(output_dir)
    path = output_dir / "quality.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({c: "" if row.get(c) is None else row[c] for c in COLUMNS} for row in rows)
    (output_dir / "quality.md").write_text(markdown(rows) + "\n")
    return path
