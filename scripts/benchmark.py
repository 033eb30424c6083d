"""Speed of a recipe: ``python scripts/benchmark.py [experiment=...] [overrides]``.

Fits the recipe as ``train.py`` runs it (the Lightning loop with every callback) for one
round of ``benchmark.warmup`` + ``benchmark.steps`` steps and prints training images/s, the
MIRI callback's re-imputation throughput (ODE image·steps/s), the split of a round's wall
time (training / re-imputation / round end: measured, and estimated for the recipe's own
``miri.steps_per_round``), FLOPs per training image and per ODE step, achieved TFLOP/s (and
the fraction of the device's bf16 peak when known) and peak memory; appends the row to
``benchmark.csv``. ``benchmark.compare=[overrides]`` measures a second variant back to back
(alternately, ``benchmark.pairs`` times) and prints the ratio of the two.
``benchmark.side_loop=true`` adds the bare steps outside Lightning (an upper bound).
"""

import csv
import statistics
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from miri_lightning import CONFIG_DIR
from miri_lightning.benchmark import benchmark, side_loop
from miri_lightning.cli import run_or_explain
from miri_lightning.scoring import cell

CONFIGS = str(CONFIG_DIR)

#: The figures of which a back-to-back comparison prints the ratio.
RATIOS = ("train_images_per_s", "ode_image_steps_per_s", "round_seconds_estimate")


def show(rows: list[dict]) -> None:
    width = max(len(k) for k in rows[0])
    for key in rows[0]:
        print(f"{key:<{width}}  " + "  ".join(f"{cell(row.get(key)):>16}" for row in rows))


def median_row(rows: list[dict]) -> dict:
    """Numbers: the median over repeats; anything else: the first's."""
    return {k: statistics.median(r[k] for r in rows) if isinstance(v, float) else v for k, v in rows[0].items()}


def append(path: Path, rows: list[dict]) -> None:
    fields = list(dict.fromkeys(k for row in rows for k in row))
    new = not path.exists()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        if new:
            writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in fields})


@hydra.main(version_base="1.3", config_path=CONFIGS, config_name="benchmark")
def main(cfg: DictConfig) -> None:
    def work() -> None:
        b = cfg.benchmark
        if b.pairs < 1:
            raise ValueError(f"benchmark.pairs must be at least 1, got {b.pairs}")
        variants = {"as given": cfg}
        if b.compare:
            given = list(HydraConfig.get().overrides.task)
            variants["compared"] = hydra.compose("benchmark", overrides=[*given, *b.compare])
        measured = {name: [] for name in variants}
        for _ in range(b.pairs if b.compare else 1):
            for name, variant in variants.items():
                measured[name].append(benchmark(variant, b.steps, b.warmup))
        rows = [
            {
                "recipe": cfg.run_name,
                "variant": "real loop, " + name,
                **median_row(runs),
                "train_images_per_s_each": " ".join(f"{r['train_images_per_s']:.2f}" for r in runs),
            }
            for name, runs in measured.items()
        ]
        if b.compare:
            rows[1]["variant"] += " " + " ".join(b.compare)
        if b.side_loop:
            for name, variant in variants.items():
                row = side_loop(variant, b.steps, b.warmup, repeats=5)
                rows.append({"recipe": cfg.run_name, "variant": "side loop (upper bound), " + name, **row})
        show(rows)
        if b.compare:
            first, second = rows[0], rows[1]
            for key in RATIOS:
                print(f"ratio {key} (as given / compared): {first[key] / second[key]:.3f}")
        path = Path(b.csv)
        append(path, rows)
        print(f"\nappended to {path}")

    run_or_explain(work)


if __name__ == "__main__":
    main()
