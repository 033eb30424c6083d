"""The one scoring stack of the tables (``miri-evaluate``'s metrics.csv/md, ``miri-quality``'s
quality.csv/md): the metrics of one imputation of a set (:func:`scores`), the baselines scored
on the same masks (:func:`baseline_rows`), and a table written as CSV and markdown
(:func:`write_table`)."""

import csv
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from miri_lightning import metrics
from miri_lightning.baselines import BASELINES
from miri_lightning.fid import Features, fid

#: Each point metric of one imputation x of the set: ``f(x, truth, observed, mmd_items)``.
METRICS: dict[str, Callable[[Tensor, Tensor, Tensor, int], Tensor]] = {
    "psnr_missing": lambda x, truth, observed, _: metrics.psnr_missing(x, truth, observed),
    "psnr_full": lambda x, truth, observed, _: metrics.psnr_full(x, truth),
    "ssim": lambda x, truth, observed, _: metrics.ssim(x, truth),
    "ssim_missing": lambda x, truth, observed, _: metrics.ssim_missing(x, truth, observed),
    "rmse_missing": lambda x, truth, observed, _: metrics.rmse_missing(x, truth, observed),
    "mae_missing": lambda x, truth, observed, _: metrics.mae_missing(x, truth, observed),
    "mmd": lambda x, truth, observed, items: metrics.mmd(x, truth, items),
    # a point imputation's CRPS is its MAE: the CRPS of one draw
    "crps": lambda x, truth, observed, _: metrics.crps_missing(x[None], truth, observed),
    # and its energy score the mean Euclidean error of a window of the missing region
    "energy_score": lambda x, truth, observed, _: metrics.energy_score(x[None], truth, observed),
}


def scores(
    x: Tensor,
    truth: Tensor,
    observed: Tensor,
    names: Sequence[str],
    mmd_items: int = 1000,
    features: Features | None = None,
    swd_levels: bool = False,
) -> dict:
    """The metrics ``names`` (keys of :data:`METRICS`, ``swd`` and ``fid``; others are skipped)
    of one imputation x (N, C, H, W) of the set ``truth`` under ``observed``. ``swd``: the
    sliced Wasserstein distance's mean over the pyramid levels, with each level's
    (``swd_<side>``, finest first) when ``swd_levels``; ``fid``: None without ``features``."""
    row = {}
    for name in names:
        if name in METRICS:
            row[name] = METRICS[name](x, truth, observed, mmd_items).item()
        elif name == "swd":
            swd = metrics.sliced_wasserstein(x, truth)
            row.update(swd if swd_levels else {"swd": swd["swd"]})
        elif name == "fid":
            row["fid"] = fid(x, truth, features) if features is not None else None
    return row


def check_baselines(baselines: Sequence[str], setting: str = "baselines") -> None:
    """A ValueError naming ``setting`` unless every name is one of :data:`BASELINES`."""
    unknown = [name for name in baselines if name not in BASELINES]
    if unknown:
        raise ValueError(f"{setting}: unknown {unknown}, choose from {sorted(BASELINES)}")


def baseline_rows(truth: Tensor, observed: Tensor, baselines: Sequence[str], **score_args) -> list[dict]:
    """One row per baseline: ``method``, its :func:`scores` of the set truth (N, C, H, W) under
    ``observed`` (``score_args``: those of :func:`scores` after ``observed``), and the
    ``seconds`` it took to fill the set."""
    rows = []
    for name in baselines:
        started = time.perf_counter()
        filled = BASELINES[name](torch.where(observed, truth, 0), observed)
        seconds = time.perf_counter() - started
        rows.append({"method": name, **scores(filled, truth, observed, **score_args), "seconds": seconds})
    return rows


def cell(value) -> str:
    """A table cell: empty for None and NaN, 4 decimals below 10, else 2."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"
    return str(value)


def markdown(rows: list[dict], columns: Sequence[str], headers: dict[str, str] | None = None) -> str:
    """The rows as a markdown table of ``columns`` (headed by ``headers`` where given)."""
    headers = headers or {}
    lines = ["| " + " | ".join(headers.get(c, c) for c in columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def write_table(rows: list[dict], columns: Sequence[str], csv_path: Path, table: str) -> None:
    """``csv_path`` (the ``columns`` of the rows, empty cells where a metric is absent) and,
    beside it with the suffix ``.md``, the markdown ``table``."""
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows({c: "" if row.get(c) is None else row[c] for c in columns} for row in rows)
    csv_path.with_suffix(".md").write_text(table + "\n")
