"""Score a finished run's draws under other ODE solvers, step counts and draw noises: what
each costs in field evaluations (NFE) per draw, and what it gives (CRPS, energy score,
spread–skill, one draw's PSNR and SWD, the mean of K's PSNR), on the run's own items and masks.

    python scripts/samplers.py checkpoints/quality_sample_pixel euler:5 heun:5 euler:20 heun:10 [--samples 8]
    python scripts/samplers.py checkpoints/quality_sample_pixel heun:5 --noise 0.6 0.8 1.0 --held-out 0.15

The run itself is not changed; its config's ``miri.solver``, ``miri.ode_steps`` and
``miri.sample_noise`` are replaced for these draws only. ``--held-out SHARE`` hides that share
of the observed pixels (a fixed seed), draws with the rest and scores the draws on the hidden
ones: a draw-time setting chosen there is chosen without any missing entry's truth (the
columns then describe the hidden observed entries, not the missing ones). Prints a markdown
table (and writes it with ``--out``).
"""

import argparse
from pathlib import Path

import torch
from safetensors.torch import load_file

from miri_lightning import metrics
from miri_lightning.centre import hide
from miri_lightning.evaluation import load_truth
from miri_lightning.inference import RunFlows
from miri_lightning.quality import probabilistic
from miri_lightning.scoring import markdown
from miri_lightning.snapshots import snapshot_files

#: The seed of --held-out's hidden pixels. Not 0, the masks' default: a mask drawn from the same
#: stream would put every hidden pixel on a missing one.
HIDE_SEED = 12345


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
    parser.add_argument("--noise", type=float, nargs="+", default=[None], help="draw noises (default: the run's)")
    parser.add_argument(
        "--held-out", type=float, default=None, metavar="SHARE", help="score on this share of hidden observed pixels"
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.samples < 2:
        parser.error("--samples must be at least 2: CRPS and spread–skill need K ≥ 2 draws")
    if args.held_out is not None and not 0 < args.held_out < 1:
        parser.error(f"--held-out is a share of the observed pixels, between 0 and 1, got {args.held_out}")
    if any(noise is not None and noise < 0 for noise in args.noise):
        parser.error("--noise values must be at least 0")
    known = load_file(snapshot_files(args.run_dir)[-1][1])["observed"].bool()
    data = load_truth(args.run_dir)
    x, observed = torch.where(known, data, 0), known
    truth, scored = data, known  # scored: False on the entries scored (the missing ones)...
    if args.held_out is not None:  # ...or hidden observed ones, and no missing entry is read
        observed = hide(known, args.held_out, torch.Generator().manual_seed(HIDE_SEED))
        truth, scored, x = x, observed | ~known, torch.where(observed, x, 0)  # the hidden values: truth only
        if scored.all():
            parser.error(f"--held-out {args.held_out} hid no observed pixel of {args.run_dir}: raise the share")
    rows = []
    for noise in args.noise:
        flows = RunFlows(args.run_dir, sample_noise=noise)
        for solver, steps in args.samplers:
            flows.solver, flows.ode_steps = solver, steps
            draws = flows.sample(x, observed, args.samples, args.seed, batch_size=100)
            row = {"sampler": f"{solver} × {steps}", "nfe": steps * (2 if solver == "heun" else 1)}
            row["noise"] = flows.sample_noise
            row.update(probabilistic(draws, truth, scored))
            row["psnr_one"] = metrics.psnr_missing(draws[0], truth, scored).item()
            row["psnr_mean"] = metrics.psnr_missing(draws.mean(0), truth, scored).item()
            if args.held_out is None:  # the whole images' realism needs the truth of every entry
                row["swd_one"] = metrics.sliced_wasserstein(draws[0], truth)["swd"]
            rows.append(row)
            print(row, flush=True)
    columns = ("sampler", "nfe", "noise", "crps", "energy_score", "spread_skill", "psnr_one", "psnr_mean")
    columns += () if args.held_out is not None else ("swd_one",)
    table = markdown(rows, columns)
    print(table)
    if args.out is not None:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
