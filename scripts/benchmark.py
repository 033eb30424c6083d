"""Speed of a recipe: ``python scripts/benchmark.py [experiment=...] [overrides]``.

Prints training throughput, imputation throughput, an estimate of seconds per round, FLOPs
per training image and per ODE step, achieved TFLOP/s (and the fraction of the device's
bf16 peak when known) and peak memory; appends the row to ``benchmark.csv``.
"""

import csv
from pathlib import Path

import hydra
from omegaconf import DictConfig

from miri_lightning import CONFIG_DIR
from miri_lightning.benchmark import benchmark
from miri_lightning.cli import run_or_explain
from miri_lightning.evaluation import cell

CONFIGS = str(CONFIG_DIR)


@hydra.main(version_base="1.3", config_path=CONFIGS, config_name="benchmark")
def main(cfg: DictConfig) -> None:
    def work() -> None:
        b = cfg.benchmark
        row = {"recipe": cfg.run_name, **benchmark(cfg, b.steps, b.warmup, b.repeats)}
        width = max(len(k) for k in row)
        for key, value in row.items():
            print(f"{key:<{width}}  {cell(value)}")
        path = Path(b.csv)
        new = not path.exists()
        with open(path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow({k: "" if v is None else v for k, v in row.items()})
        print(f"\nappended to {path}")

    run_or_explain(work)


if __name__ == "__main__":
    main()
