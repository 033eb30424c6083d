"""The quality benchmark: a MIRI recipe against the cheap imputations, on the same masks.

One table, one row per method: the baselines, the run's initial fill (its deterministic fill
plus the draws' noise, ``miri.sample_noise``, drawn K times: the very fills the MIRI draws
start from; what the flows add is the difference), one MIRI sample (the faithful draw: compare
its distribution metrics, MMD² and SWD, and, for the K draws it stands for, their CRPS, energy
score and spread–skill ratio) and the mean of K MIRI samples (the posterior-mean estimate: compare its
PSNR), each with the wall time it took. A point method's CRPS is its MAE.
"""

import time
from pathlib import Path

import torch
from omegaconf import DictConfig

from miri_lightning import metrics, scoring
from miri_lightning.data.store import decode
from miri_lightning.fid import Features, inception_features
from miri_lightning.inference import RunFlows
from miri_lightning.run import train

COLUMNS = ("method", "psnr_missing", "ssim", "mmd", "swd", "crps", "energy_score", "spread_skill", "fid", "seconds")
#: Said under the table when the draws' probabilistic scores could not be computed.
NEEDS_K = "crps, energy_score and spread_skill of the MIRI draws need quality.samples = K ≥ 2 draws"


def probabilistic(samples: torch.Tensor, truth: torch.Tensor, observed: torch.Tensor) -> dict:
    """CRPS, energy score and spread–skill ratio of K draws (K, N, C, H, W); None for K = 1."""
    if samples.shape[0] < 2:
        return {"crps": None, "energy_score": None, "spread_skill": None}
    return {
        "crps": metrics.crps_missing(samples, truth, observed).item(),
        "energy_score": metrics.energy_score(samples, truth, observed).item(),
        "spread_skill": metrics.spread_skill(samples, truth, observed).item(),
    }


def compare(
    truth: torch.Tensor,
    observed: torch.Tensor,
    samples: torch.Tensor,
    miri_seconds: tuple[float, float],
    baselines: tuple[str, ...],
    mmd_items: int = 1000,
    features: Features | None = None,
    fills: torch.Tensor | None = None,
) -> list[dict]:
    """Rows of the table. truth, observed: (N, C, H, W); samples: (K, N, C, H, W) MIRI
    imputations; miri_seconds: (time to the first sample, time to all K) in seconds. The
    ``miri_sample`` row scores one draw, but its ``crps`` and ``spread_skill`` are those of
    the K draws (empty for K = 1). ``fills`` (K, N, C, H, W): the draws' starting points, scored
    the same way in an ``initial_fill`` row (one fill; CRPS and spread–skill of the K) and an
    ``initial_fill_mean_<K>`` row (their mean)."""
    scoring.check_baselines(baselines, "quality.baselines")
    # the columns of every row (a point's CRPS is its MAE), and the SWD of each pyramid level
    args = {"names": COLUMNS, "mmd_items": mmd_items, "features": features, "swd_levels": True}
    rows = scoring.baseline_rows(truth, observed, baselines, **args)
    k = samples.shape[0]
    if fills is not None:
        rows.append({"method": "initial_fill", **scoring.scores(fills[0], truth, observed, **args)})
        rows[-1].update(probabilistic(fills, truth, observed))
        rows[-1]["seconds"] = None
        if k > 1:  # the fills' own mean of K: what averaging gives without the flows
            rows.append({"method": f"initial_fill_mean_{k}", **scoring.scores(fills.mean(0), truth, observed, **args)})
            rows[-1]["seconds"] = None
    rows.append({"method": "miri_sample", **scoring.scores(samples[0], truth, observed, **args)})
    rows[-1].update(probabilistic(samples, truth, observed))  # the K draws the sample stands for
    rows[-1]["seconds"] = miri_seconds[0]
    if k > 1:
        rows.append({"method": f"miri_mean_{k}", **scoring.scores(samples.mean(0), truth, observed, **args)})
        rows[-1]["seconds"] = miri_seconds[1]
    return rows


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
    scoring.check_baselines(q.baselines, "quality.baselines")
    started = time.perf_counter()
    run = train(cfg, check=check_comparable)
    train_seconds = time.perf_counter() - started
    if not run.trainer.is_global_zero:  # under DDP rank 0 alone samples and writes the table
        return [], run.output_dir
    store = run.datamodule.store
    truth, observed = decode(store.truth).cpu(), store.observed.cpu()
    # the module is back on the CPU after fit: sample on the device the run trained on
    samples, elapsed, fills = draw(
        run.output_dir,
        truth,
        observed,
        q.samples,
        int(q.seed),
        cfg.miri.impute_batch_size,
        run.trainer.strategy.root_device,
        cfg.miri.get("sample_noise"),
        say,
    )
    features = None
    if cfg.metrics.fid:
        try:
            features = inception_features(cfg.metrics.fid_weights_path)
        except FileNotFoundError as error:
            say(f"FID skipped: {error}")
    rows = compare(
        truth,
        observed,
        samples,
        (train_seconds + elapsed[0], train_seconds + elapsed[-1]),
        tuple(q.baselines),
        cfg.metrics.mmd_items,
        features,
        fills,
    )
    if q.get("per_round", False):  # the same K draws through the flows of rounds 1..R-1
        rows += earlier_rounds(run.output_dir, truth, observed, q, cfg, run.trainer.strategy.root_device, say)
    write_quality(rows, run.output_dir)
    return rows, run.output_dir


def earlier_rounds(run_dir, truth, observed, q, cfg, device, say=print) -> list[dict]:
    """Rows ``miri_round_<r>`` (one draw; CRPS, energy score and spread–skill of the K) and
    ``miri_round_<r>_mean_<K>`` for every round r before the last: the draws the run would
    have made had it stopped after round r (the last round's rows are ``miri_sample`` and
    ``miri_mean_<K>``)."""
    rows = []
    rounds = len(RunFlows(run_dir).nets)
    for r in range(1, rounds):
        samples, _, _ = draw(
            run_dir,
            truth,
            observed,
            q.samples,
            int(q.seed),
            cfg.miri.impute_batch_size,
            device,
            cfg.miri.get("sample_noise"),
            say,
            rounds=r,
        )
        args = {"names": COLUMNS, "mmd_items": cfg.metrics.mmd_items, "swd_levels": True}
        rows.append({"method": f"miri_round_{r}", **scoring.scores(samples[0], truth, observed, **args)})
        rows[-1].update(probabilistic(samples, truth, observed))
        if q.samples > 1:
            mean = scoring.scores(samples.mean(0), truth, observed, **args)
            rows.append({"method": f"miri_round_{r}_mean_{q.samples}", **mean})
    return rows


def draw(
    run_dir: str | Path,
    truth: torch.Tensor,
    observed: torch.Tensor,
    num_samples: int,
    seed: int = 1,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    sample_noise: float | None = None,
    say=print,
    rounds: int | None = None,
) -> tuple[torch.Tensor, list[float], torch.Tensor]:
    """``num_samples`` imputations (K, N, C, H, W) of truth (N, C, H, W) under ``observed``
    through the flows of the run in ``run_dir`` (those of its first ``rounds`` rounds; None:
    all), each from its own initial fill, the seconds from the start to each, and those
    initial fills (K, N, C, H, W)."""
    flows = RunFlows(run_dir, device, sample_noise)
    flows.nets = flows.nets[:rounds]
    x = torch.where(observed, truth, 0)
    samples, elapsed, fills = [], [], []
    started = time.perf_counter()
    for k, (fill, sample) in enumerate(flows.draws(x, observed, num_samples, seed, batch_size)):
        fills.append(fill)
        samples.append(sample)
        elapsed.append(time.perf_counter() - started)
        say(f"sample {k + 1}/{num_samples} of {len(x)} items through {len(flows.nets)} flow(s): {elapsed[-1]:.1f} s")
    return torch.stack(samples), elapsed, torch.stack(fills)


def columns(rows: list[dict]) -> list[str]:
    """COLUMNS, with the SWD of each pyramid level (``swd_<side>``, finest first) after ``swd``."""
    levels = [k for k in rows[0] if k.startswith("swd_")] if rows else []
    at = COLUMNS.index("swd") + 1
    return [*COLUMNS[:at], *levels, *COLUMNS[at:]]


def markdown(rows: list[dict]) -> str:
    """The quality table (:func:`columns`), with :data:`NEEDS_K` under it when it applies."""
    table = scoring.markdown(rows, columns(rows))
    if any(row["method"] == "miri_sample" and row.get("spread_skill") is None for row in rows):
        table += "\n\n" + NEEDS_K
    return table


def write_quality(rows: list[dict], output_dir: str | Path) -> Path:
    """``quality.csv`` (empty cells where a metric is absent) and ``quality.md``."""
    path = Path(output_dir) / "quality.csv"
    scoring.write_table(rows, columns(rows), path, markdown(rows))
    return path
