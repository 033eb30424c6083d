"""Impute items a run has not seen: fresh initial fills carried through every round's flow
(docs/algorithm.md: the imputer is Φ_R ∘ … ∘ Φ_1 applied to a round-0 fill).

Nothing in a run directory is executed: each flow file names its network by a key of
``nets.NETS`` (or, written before format 2, by one of their ``_target_`` paths), and only those
classes are built, from the file's plain arguments."""

import shutil
from collections.abc import Iterator
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from miri_lightning import flow
from miri_lightning.nets import build_net, check_size
from miri_lightning.run_dir import load_run_config
from miri_lightning.settings import check_device, check_ode_steps
from miri_lightning.snapshots import load_flow, read_flow_metadata, round_number, save_flow


class RunFlows:
    """The velocity fields of rounds 1..R of a run, and how the run solved its ODE;
    ``sample_noise``: the σ of the noise on the deterministic fill of new draws (default: the
    run's ``miri.sample_noise``, else its ``miri.init_noise``; scaled as the run's
    ``miri.init_noise_mode`` says). Images (C, H, W) in [0, 1], or
    vectors (d,) of a standardised table (an N(0, 1) fill, no clamping)."""

    def __init__(self, run_dir: str | Path, device: str | torch.device = "cpu", sample_noise: float | None = None):
        run_dir = self.run_dir = Path(run_dir)
        files = sorted((run_dir / "flows").glob("round_[0-9]*.safetensors"))
        if not files:
            raise ValueError(f"{run_dir} holds no flows/round_XXX.safetensors: is it a run directory of train.py?")
        rounds = [round_number(f) for f in files]
        if rounds != list(range(1, len(rounds) + 1)):
            raise ValueError(f"{run_dir}/flows lacks rounds: found {rounds}, need 1..{max(rounds)} in order")
        device = check_device(device)
        config = run_dir / "config.yaml"
        cfg, self.config_text = load_run_config(config)  # as data: no interpolation, no YAML alias
        miri = cfg.get("miri")
        if not isinstance(miri, DictConfig) or "ode_steps" not in miri:
            raise ValueError(f"{config} holds no miri.ode_steps: is {run_dir} a run directory of train.py?")
        self.ode_steps = check_ode_steps(miri.ode_steps, f"miri.ode_steps of {config}")
        self.solver, self.init = str(miri.solver), str(miri.init)
        #: independent (the paper: the imputer is Φ_R ∘ … ∘ Φ_1) or fill (each round's flow
        #: carries a noisy fill to the data on its own: the imputer is Φ_R alone)
        self.coupling = str(miri.get("coupling", "independent"))
        if sample_noise is None:
            sample_noise = miri.get("sample_noise")
        self.sample_noise = float(miri.get("init_noise", 0.0) if sample_noise is None else sample_noise)
        #: constant, local or correlated (flow.NOISE_MODES): how σ varies over an image, as in the run
        self.noise_mode = str(miri.get("init_noise_mode", "constant"))
        # every file is checked (format, network key) before any network is built
        metadata = [read_flow_metadata(path) for path in files]
        for path, meta in zip(files, metadata, strict=True):
            check_size(meta["net"], str(path))  # sizes bounded before any weights are read
        #: the training set's per-channel mean of observed entries: the fill of miri.init=mean
        #: (None for flows written before format 2: then the new items' own mean is used)
        self.fill_mean = metadata[-1]["fill_mean"]
        self.specs: list[dict] = []
        self.nets: list[nn.Module] = []
        for path in files:
            state, spec = load_flow(path)
            net = build_net(spec, str(path))
            try:
                net.load_state_dict(state)
            except RuntimeError as error:
                raise ValueError(f"{path} holds weights that do not fit its network ({error})") from error
            self.specs.append(spec)
            self.nets.append(net.to(device).eval())
        #: miri.init=learned: the run's learned centre (flows/centre.safetensors), else None
        self.centre_net: nn.Module | None = None
        if self.init == "learned":
            from miri_lightning.callbacks.centre import CENTRE_FILE, load_centre

            path = run_dir / "flows" / CENTRE_FILE
            if not path.is_file():
                raise ValueError(f"{run_dir} was trained with miri.init=learned but holds no flows/{CENTRE_FILE}")
            check_size(read_flow_metadata(path)["net"], str(path))
            self.centre_net = load_centre(path, device)
        self.item_shape = tuple(self.nets[0].item_shape)
        images = len(self.item_shape) == 3
        self.channels, self.image_size = (self.item_shape[0], self.item_shape[1]) if images else (None, None)
        self.clamp = (0.0, 1.0) if images else None
        self.device = torch.device(device)

    def save(self, path: str | Path) -> Path:
        """Write ``config.yaml`` and ``flows/round_XXX.safetensors`` to folder ``path``: a run
        directory that :class:`RunFlows` (and ``miri-impute``) read back."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.yaml").write_text(self.config_text)
        for round_index, (net, spec) in enumerate(zip(self.nets, self.specs, strict=True), start=1):
            save_flow(path, round_index, net, spec, self.fill_mean)
        if self.centre_net is not None:
            from miri_lightning.callbacks.centre import CENTRE_FILE

            shutil.copyfile(self.run_dir / "flows" / CENTRE_FILE, path / "flows" / CENTRE_FILE)
        return path

    @property
    def imputers(self) -> list[nn.Module]:
        """The flows a draw goes through, in order: every round's, or the last one's alone
        with ``miri.coupling=fill``."""
        return self.nets[-1:] if self.coupling == "fill" else self.nets

    def deterministic_fill(self, x: Tensor, observed: Tensor) -> Tensor:
        """The run's ``mean``/``interp``/``biharmonic`` fill of x (N, *item) without noise;
        ``mean`` is the training set's channel mean (kept with the flows), as in round 0."""
        mean = None
        if self.init == "mean" and self.fill_mean is not None:
            mean = torch.tensor(self.fill_mean, dtype=x.dtype)
        centre = None
        if self.centre_net is not None:
            from miri_lightning.centre import predict

            def centre(v: Tensor, o: Tensor) -> Tensor:  # on the flows' device, in batches
                parts = [
                    predict(self.centre_net, v[k : k + 256].to(self.device), o[k : k + 256].to(self.device)).cpu()
                    for k in range(0, len(v), 256)
                ]
                return torch.cat(parts).to(v.device)

        return flow.deterministic_fill(x, observed, self.init, mean, centre)

    def initial_fill(
        self, x: Tensor, observed: Tensor, generator: torch.Generator, base: Tensor | None = None
    ) -> Tensor:
        """The round-0 fill of x (N, *item) that :meth:`impute` starts from, drawn from
        ``generator``: the run's noise fill, or its deterministic fill (``base`` when already
        computed) plus the sampling noise."""
        if self.init == "noise":
            return flow.initial_fill(x, observed, "noise", generator, clamp=self.clamp)
        if base is None:
            base = self.deterministic_fill(x, observed)
        return flow.perturb(base, observed, self.sample_noise, generator, self.clamp, self.noise_mode)

    @torch.no_grad()
    def impute(
        self,
        x: Tensor,
        observed: Tensor,
        generator: torch.Generator,
        batch_size: int = 256,
        base: Tensor | None = None,
    ) -> Tensor:
        """One imputation of x (N, *item) (missing entries ignored): a round-0 fill drawn from
        ``generator`` (as the run's store drew it), then every round's ODE in order; observed
        entries kept. ``base``: the run's deterministic fill of x, when already computed (see
        :meth:`sample`)."""
        return self.carry(self.initial_fill(x, observed, generator, base), observed, batch_size)

    @torch.no_grad()
    def carry(self, fill: Tensor, observed: Tensor, batch_size: int = 256) -> Tensor:
        """A round-0 fill (N, *item) carried through every round's ODE in order, in batches on
        the flows' device; observed entries kept."""
        if tuple(fill.shape[1:]) != self.item_shape:
            raise ValueError(f"the flows take items of shape {self.item_shape}, got {tuple(fill.shape[1:])}")
        out = torch.empty_like(fill)
        for k in range(0, fill.shape[0], batch_size):
            y, o = fill[k : k + batch_size].to(self.device), observed[k : k + batch_size].to(self.device)
            for net in self.imputers:
                y = flow.impute(net, y, o, self.ode_steps, self.solver, self.clamp)
            out[k : k + batch_size] = y.cpu()
        return out

    def sample(self, x: Tensor, observed: Tensor, num_samples: int, seed: int = 0, batch_size: int = 256) -> Tensor:
        """``num_samples`` imputations (K, N, *item), each from its own initial fill (see :meth:`draws`)."""
        return torch.stack([draw for _, draw in self.draws(x, observed, num_samples, seed, batch_size)])

    def draws(
        self, x: Tensor, observed: Tensor, num_samples: int, seed: int = 0, batch_size: int = 256
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """``num_samples`` pairs (initial fill, imputation), each (N, *item), one pair at a time:
        the fills drawn from one generator seeded with ``seed`` (a deterministic fill is computed
        once, here, its noise drawn for each fill), each carried through every round's flow."""
        if num_samples < 1:
            raise ValueError(f"num_samples must be at least 1, got {num_samples}")
        generator = torch.Generator().manual_seed(seed)
        base = None if self.init == "noise" else self.deterministic_fill(x, observed)

        def pairs() -> Iterator[tuple[Tensor, Tensor]]:
            for _ in range(num_samples):
                fill = self.initial_fill(x, observed, generator, base)
                yield fill, self.carry(fill, observed, batch_size)

        return pairs()
