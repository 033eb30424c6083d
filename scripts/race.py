"""Quality per unit time: ``python scripts/race.py [a=paper_sample] [b=fast_sample]``.

Trains both experiment recipes on the same data and masks, one after the other, and
prints PSNR on missing entries against elapsed wall time (from the start of each run,
data loading and initial fill included) and the time each needs to reach the other's
final PSNR; the curves go to ``race.csv``. With ``warmup`` (on a GPU by default) each recipe
first runs one untimed round of a few steps, so that neither pays the one-off costs (CUDA
context, cuDNN autotuning, compilation) inside its timed run.
"""

import csv
import time

import hydra
import torch
from omegaconf import DictConfig

from miri_lightning import CONFIG_DIR
from miri_lightning.benchmark import race, time_to_reach
from miri_lightning.cli import run_or_explain
from miri_lightning.run import train

CONFIGS = str(CONFIG_DIR)


@hydra.main(version_base="1.3", config_path=CONFIGS, config_name="race")
def main(cfg: DictConfig) -> None:
    def work() -> None:
        if cfg.warmup not in ("auto", True, False):
            raise ValueError(f"warmup must be auto, true or false, got {cfg.warmup!r}")
        if torch.cuda.is_available() if cfg.warmup == "auto" else cfg.warmup:
            for name in (cfg.a, cfg.b):
                scratch = [f"output_dir=checkpoints/race/warmup_{name}", "overwrite=true"]
                short = ["miri.rounds=1", "miri.steps_per_round=5"]
                train(hydra.compose("train", overrides=[f"experiment={name}", *scratch, *cfg.overrides, *short]))
        curves = {}
        for name in (cfg.a, cfg.b):
            # a fresh run directory of its own, so that a second race starts afresh too
            fresh = [f"output_dir=checkpoints/race/{name}", "overwrite=true"]
            run_cfg = hydra.compose("train", overrides=[f"experiment={name}", *fresh, *cfg.overrides])
            started = time.perf_counter()
            run = train(run_cfg)
            curves[name] = race(name, run.miri.history, started)
        with open(cfg.csv, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["recipe", "round", "elapsed_s", "psnr_missing"])
            for name, curve in curves.items():
                for k, (elapsed, psnr) in enumerate(curve):
                    print(f"{name:>16} round {k:3d} {elapsed:9.1f} s  {psnr:6.2f} dB")
                    writer.writerow([name, k, f"{elapsed:.2f}", f"{psnr:.4f}"])
        for name, other in ((cfg.a, cfg.b), (cfg.b, cfg.a)):
            target = curves[other][-1][1]
            reached = time_to_reach(curves[name], target)
            total = curves[other][-1][0]
            said = "never" if reached is None else f"{reached:.1f} s ({reached / total:.2f} of {other}'s {total:.1f} s)"
            print(f"{name} reaches {other}'s final {target:.2f} dB: {said}")
        print(f"\nwritten: {cfg.csv}")

    run_or_explain(work)


if __name__ == "__main__":
    main()
