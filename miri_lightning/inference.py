"""Impute items a run has not seen: fresh initial fills carried through every round's flow
(DESIGN.md §1: the imputer is Φ_R ∘ … ∘ Φ_1 applied to a round-0 fill)."""

from pathlib import Path

import hydra
import torch
from omegaconf import OmegaConf
from torch import Tensor, nn

from miri_lightning import flow
from miri_lightning.snapshots import load_flow


class RunFlows:
    """The velocity fields of rounds 1..R of a run, and how the run solved its ODE;
    ``sample_noise``: the σ of the noise on the deterministic fill of new draws (default: the
    run's ``miri.sample_noise``, else its ``miri.init_noise``)."""

    def __init__(self, run_dir: str | Path, device: str | torch.device = "cpu", sample_noise: float | None = None):
        run_dir = Path(run_dir)
        files = sorted((run_dir / "flows").glob("round_[0-9]*.safetensors"))
        if not files:
            raise ValueError(f"{run_dir} holds no flows/round_XXX.safetensors: is it a run directory of train.py?")
        rounds = [int(f.stem.removeprefix("round_")) for f in files]
        if rounds != list(range(1, len(rounds) + 1)):
            raise ValueError(f"{run_dir}/flows lacks rounds: found {rounds}, need 1..{max(rounds)} in order")
        config = run_dir / "config.yaml"
        if not config.is_file():
            raise ValueError(f"{config} does not exist: is {run_dir} a run directory of train.py?")
        miri = OmegaConf.load(config).miri
        self.ode_steps, self.solver, self.init = int(miri.ode_steps), str(miri.solver), str(miri.init)
        if sample_noise is None:
            sample_noise = miri.get("sample_noise")
        self.sample_noise = float(miri.get("init_noise", 0.0) if sample_noise is None else sample_noise)
        self.nets: list[nn.Module] = []
        for path in files:
            state, net_config = load_flow(path)
            net = hydra.utils.instantiate(net_config)
            net.load_state_dict(state)
            self.nets.append(net.to(device).eval())
        if len(self.nets[0].item_shape) != 3:
            raise ValueError(f"{run_dir} imputed vectors (a table): its imputed.csv holds the result")
        self.channels, self.image_size = self.nets[0].channels, self.nets[0].image_size
        self.device = torch.device(device)

    @torch.no_grad()
    def impute(
        self,
        x: Tensor,
        observed: Tensor,
        generator: torch.Generator,
        batch_size: int = 256,
        base: Tensor | None = None,
    ) -> Tensor:
        """One imputation of x (N, C, H, W) in [0, 1] (missing entries ignored): a round-0 fill
        drawn from ``generator``, then every round's ODE in order; observed entries kept.
        ``base``: the run's deterministic fill of x, when already computed (see :meth:`sample`)."""
        if self.init == "noise":
            fill = flow.initial_fill(x, observed, "noise", generator)
        else:
            if base is None:
                base = flow.deterministic_fill(x, observed, self.init)
            fill = flow.perturb(base, observed, self.sample_noise, generator)
        out = torch.empty_like(x)
        for k in range(0, x.shape[0], batch_size):
            y, o = fill[k : k + batch_size].to(self.device), observed[k : k + batch_size].to(self.device)
            for net in self.nets:
                y = flow.impute(net, y, o, self.ode_steps, self.solver)
            out[k : k + batch_size] = y.cpu()
        return out

    def sample(self, x: Tensor, observed: Tensor, num_samples: int, seed: int = 0, batch_size: int = 256) -> Tensor:
        """``num_samples`` imputations (K, N, C, H, W), each from its own initial fill (a
        deterministic fill is computed once, its noise drawn for each sample)."""
        if num_samples < 1:
            raise ValueError(f"num_samples must be at least 1, got {num_samples}")
        generator = torch.Generator().manual_seed(seed)
        base = None if self.init == "noise" else flow.deterministic_fill(x, observed, self.init)
        return torch.stack([self.impute(x, observed, generator, batch_size, base) for _ in range(num_samples)])
