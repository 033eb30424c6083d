"""The table benchmark (``miri-tables``, ``python scripts/tables.py``): MIRI's table recipe
(``data=csv``) against the imputers a user of tables would pick, on complete tables masked
completely at random at several rates and seeds, scored on the missing entries.

    miri-tables                                     # wine, breast_cancer, diabetes × 20/40/60 % × seeds 0, 1, 2
    miri-tables --tables wine --rates 0.3 --seeds 0 --draws 8
    miri-tables --csv complete.csv --out checkpoints/tables/my_table.csv -- miri.rounds=3

Every method sees the same masked table, standardised as ``data=csv mask=entry`` standardises
it (each column by the complete table's mean and std, the same for every method), and is
scored in those units: ``mmd`` between
one imputation's rows that hold a hole and the same rows of the truth (RBF kernel at the
median distance), ``rmse`` and ``mae`` of that imputation on the missing entries, ``crps`` of
K draws on the missing entries (a method that gives one imputation scores its MAE), and
``seconds``. Methods: ``miri`` (``train.py data=csv mask=entry``, then K draws through its
flows; overrides after ``--`` apply to it), ``mean``, ``knn`` (scikit-learn's KNNImputer) and
``iterative`` (scikit-learn's IterativeImputer with ``sample_posterior=True``, a chained-
equations draw: each of the K draws is a fit with its own seed).
"""

import argparse
import csv
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from miri_lightning import metrics

#: Complete tables that scikit-learn ships (no download): name -> loader of an (N, d) array.
SKLEARN_TABLES = ("wine", "breast_cancer", "diabetes")
METHODS = ("miri", "mean", "knn", "iterative")
COLUMNS = ("table", "rate", "seed", "method", "mmd", "rmse", "mae", "crps", "seconds")


def sklearn_table(name: str) -> np.ndarray:
    """The features of one of scikit-learn's shipped tables, (N, d) float64."""
    from sklearn import datasets

    if name not in SKLEARN_TABLES:
        raise ValueError(f"--tables: scikit-learn tables are {SKLEARN_TABLES}, got {name!r} (other tables: --csv)")
    return getattr(datasets, f"load_{name}")().data.astype(np.float64)


def write_csv(values: np.ndarray, path: Path) -> Path:
    """A complete table as a CSV with a header (c0, c1, ...), as ``data=csv`` reads it."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([f"c{j}" for j in range(values.shape[1])])
        writer.writerows(values.tolist())
    return path


def scores(draws: Tensor, truth: Tensor, observed: Tensor, mmd_items: int = 1000) -> dict:
    """mmd, rmse, mae of the first draw and crps of all K draws (K, N, d), on the missing entries."""
    holed = (~observed).any(1)
    one = draws[0]
    return {
        "mmd": metrics.mmd(one[holed], truth[holed], mmd_items).item(),
        "rmse": metrics.rmse_missing(one, truth, observed).item(),
        "mae": metrics.mae_missing(one, truth, observed).item(),
        "crps": metrics.crps_missing(draws, truth, observed).item(),
    }


def baseline_draws(method: str, x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """(K, N, d) imputations of x (N, d) with NaN where missing, by a scikit-learn imputer."""
    from sklearn.experimental import enable_iterative_imputer  # noqa: F401
    from sklearn.impute import IterativeImputer, KNNImputer, SimpleImputer

    if method == "mean":
        return SimpleImputer().fit_transform(x)[None]
    if method == "knn":
        return KNNImputer().fit_transform(x)[None]
    if method == "iterative":
        fits = (IterativeImputer(sample_posterior=True, random_state=seed * 1000 + i) for i in range(k))
        return np.stack([imputer.fit_transform(x) for imputer in fits])
    raise ValueError(f"--methods must be among {METHODS}, got {method!r}")


def miri_draws(csv_path: Path, rate: float, seed: int, k: int, run_dir: Path, overrides: list[str]):
    """Train the ``data=csv`` recipe on the table at csv_path masked at ``rate`` (seed ``seed``);
    returns (its truth (N, d), mask (N, d), K draws (K, N, d)), in the run's standardised units."""
    from hydra import compose, initialize_config_dir

    from miri_lightning import CONFIG_DIR
    from miri_lightning.data.store import decode
    from miri_lightning.inference import RunFlows
    from miri_lightning.run import train

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            [
                "data=csv",
                f"data.path={csv_path}",
                "mask=entry",
                f"mask.rate={rate}",
                f"mask.seed={seed}",
                f"seed={seed}",
                f"output_dir={run_dir}",
                "overwrite=true",
                "trainer.enable_progress_bar=false",
                "trainer.enable_model_summary=false",
                *overrides,
            ],
        )
    run = train(cfg)
    truth, observed = decode(run.datamodule.store.truth).cpu(), run.datamodule.store.observed.cpu().bool()
    x = torch.where(observed, truth, 0)
    return truth, observed, RunFlows(run.output_dir).sample(x, observed, k, seed=seed + 1)


def benchmark(
    tables: dict[str, Path],
    rates: list[float],
    seeds: list[int],
    k: int,
    methods: list[str],
    overrides: list[str],
    work_dir: Path,
    say: Callable[[str], None] = print,
) -> list[dict]:
    """One row per table × rate × seed × method (see the module's docstring)."""
    rows = []
    for name, path in tables.items():
        for rate in rates:
            for seed in seeds:
                started = time.perf_counter()
                run_dir = work_dir / f"{name}_{rate}_{seed}"
                truth, observed, draws = miri_draws(path, rate, seed, k, run_dir, overrides)
                seconds = {"miri": time.perf_counter() - started}
                results = {"miri": draws}
                x = torch.where(observed, truth, float("nan")).double().numpy()
                for method in (m for m in methods if m != "miri"):
                    started = time.perf_counter()
                    results[method] = torch.from_numpy(baseline_draws(method, x, k, seed)).float()
                    seconds[method] = time.perf_counter() - started
                for method in methods:
                    row = {"table": name, "rate": rate, "seed": seed, "method": method}
                    row |= scores(results[method], truth, observed) | {"seconds": seconds[method]}
                    rows.append(row)
                    say(
                        " ".join(
                            f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
                            for key, value in row.items()
                        )
                    )
    return rows


def summary(rows: list[dict]) -> str:
    """A markdown table: per table and rate, each method's mean over seeds of mmd / rmse / crps."""
    from miri_lightning.scoring import markdown

    groups: dict[tuple, dict[str, list[dict]]] = {}
    for row in rows:
        groups.setdefault((row["table"], row["rate"]), {}).setdefault(row["method"], []).append(row)
    lines = []
    for (table, rate), by_method in groups.items():
        line = {"table": table, "rate": rate}
        for method, runs in by_method.items():
            mean = {key: float(np.mean([r[key] for r in runs])) for key in ("mmd", "rmse", "crps")}
            line[method] = f"{mean['mmd']:.4f} / {mean['rmse']:.3f} / {mean['crps']:.3f}"
        lines.append(line)
    methods = [m for m in METHODS if any(m in line for line in lines)]
    return "MMD / RMSE / CRPS, mean over seeds\n\n" + markdown(lines, ("table", "rate", *methods))


def write_rows(rows: list[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="miri-tables")
    parser.add_argument("--tables", nargs="*", default=None, help=f"scikit-learn tables among {SKLEARN_TABLES}")
    parser.add_argument(
        "--csv", nargs="*", type=Path, default=[], help="complete tables of your own (CSV with a header)"
    )
    parser.add_argument("--rates", nargs="+", type=float, default=[0.2, 0.4, 0.6])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--draws", type=int, default=8, help="K draws per method for CRPS (at least 1)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--out", type=Path, default=Path("checkpoints/tables/tables.csv"))
    parser.add_argument("overrides", nargs="*", help="train.py overrides for MIRI, after --, e.g. miri.rounds=3")
    args = parser.parse_args(argv)
    if args.draws < 1:
        parser.error(f"--draws must be at least 1, got {args.draws}")
    if any(not 0 < rate < 1 for rate in args.rates):
        parser.error(f"--rates are shares of missing entries, between 0 and 1, got {args.rates}")
    if "miri" not in args.methods:
        parser.error("--methods must include miri: its run defines the masks every method is scored on")
    if args.tables == [] and not args.csv:
        parser.error("--tables names no table: name some (wine, breast_cancer, diabetes) or give --csv files")
    for path in args.csv:
        if not path.is_file():
            parser.error(f"--csv {path}: no such file")
    with tempfile.TemporaryDirectory(prefix="miri-tables-") as work:
        work_dir = Path(work)
        names = args.tables if args.tables is not None else ([] if args.csv else list(SKLEARN_TABLES))
        tables = {name: write_csv(sklearn_table(name), work_dir / f"{name}.csv") for name in names}
        tables |= {path.stem: path for path in args.csv}
        rows = benchmark(tables, args.rates, args.seeds, args.draws, args.methods, args.overrides, work_dir)
    print(summary(rows))
    print(f"rows: {write_rows(rows, args.out)}")
