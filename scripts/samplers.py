"""Score a finished run's draws under other ODE solvers and step counts: what each costs in
field evaluations (NFE) per draw, and what it gives (CRPS, energy score, spread–skill, one
draw's PSNR and SWD, the mean of K's PSNR), on the run's own items and masks.

    python scripts/samplers.py checkpoints/quality_sample_pixel euler:5 heun:5 euler:20 heun:10 [--samples 8]

The run itself is not changed; its config's ``miri.solver`` and ``miri.ode_steps`` are replaced
for these draws only. Prints a markdown table (and writes it with ``--out``).
"""

import argparse
from pathlib import Path

import torch
from safetensors.torch import load_file

from miri_lightning import metrics
from miri_lightning.evaluation import load_truth
from miri_lightning.inference import RunFlows
from miri_lightning.quality import probabilistic
from miri_lightning.scoring import markdown
from miri_lightning.snapshots import snapshot_files


def parse_sampler(text: str) -> tuple[str, int]:
    solver, _, steps = text.partition(":")
    if solver not in ("euler", "heun") or not steps.isdigit() or int(steps) < 1:
        raise argparse.ArgumentTypeError(f"a sampler is euler:STEPS or heun:STEPS, got {text!r}")
    return solver, int(steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("samplers", nargs="+", type=parse_sampler, help="solver:steps, e.g. heun:5")
    parser.add_argument("--samples", type=int, default=8, help="K draws per item (at least 2)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.samples < 2:
        parser.error("--samples must be at least 2: CRPS and spread–skill need K ≥ 2 draws")
    truth = load_truth(args.run_dir)
    observed = load_file(snapshot_files(args.run_dir)[-1][1])["observed"]
    x = torch.where(observed, truth, 0)
    flows = RunFlows(args.run_dir)
    rows = []
    for solver, steps in args.samplers:
        flows.solver, flows.ode_steps = solver, steps
        draws = flows.sample(x, observed, args.samples, args.seed, batch_size=100)
        row = {"sampler": f"{solver} × {steps}", "nfe": steps * (2 if solver == "heun" else 1)}
        row.update(probabilistic(draws, truth, observed))
        row["psnr_one"] = metrics.psnr_missing(draws[0], truth, observed).item()
        row["psnr_mean"] = metrics.psnr_missing(draws.mean(0), truth, observed).item()
        row["swd_one"] = metrics.sliced_wasserstein(draws[0], truth)["swd"]
        rows.append(row)
        print(row, flush=True)
    columns = ("sampler", "nfe", "crps", "energy_score", "spread_skill", "psnr_one", "psnr_mean", "swd_one")
    table = markdown(rows, columns)
    print(table)
    if args.out is not None:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
