"""A scikit-learn estimator for people who do not want Hydra, on the same machinery:

    from miri_lightning import MIRIImputer
    imputer = MIRIImputer(rounds=5, random_state=0)
    X_filled = imputer.fit_transform(X)          # X: (N, C, H, W), (N, H, W) or (N, d); NaN = missing
    X_new_filled = imputer.transform(X_new)      # new items, every round's flow in order
    imputer.save("my_imputer"); MIRIImputer.load("my_imputer").transform(X_new)

It composes the packaged ``configs/train.yaml`` with the keyword arguments as overrides and
trains with the same Lightning module, DataModule and MIRI callback as ``miri-train``.
"""

import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted
from torch import Tensor

from miri_lightning import CONFIG_DIR
from miri_lightning.data.sources import LoadedImages
from miri_lightning.data.store import decode
from miri_lightning.inference import RunFlows
from miri_lightning.run_dir import holds_run

#: The file ``save`` writes beside the flows: the estimator's parameters and a table's scaling.
PARAMS_FILE = "imputer.json"


class _InMemory:
    def __init__(self, loaded: LoadedImages):
        self.loaded = loaded

    def load(self) -> LoadedImages:
        return self.loaded


def _as_items(X, observed) -> tuple[Tensor, Tensor, tuple[int, ...], bool]:
    """(values (N, C, H, W) or (N, d) with 0 where missing, observed bool of that shape, X's own
    shape, whether X was numpy). (N, H, W) images get a channel axis."""
    is_numpy = not isinstance(X, Tensor)
    x = torch.as_tensor(np.asarray(X, dtype=np.float32) if is_numpy else X).float()
    shape = tuple(x.shape)
    if x.dim() not in (2, 3, 4):
        raise ValueError(f"X must be (N, C, H, W) or (N, H, W) images or an (N, d) table, got shape {shape}")
    given = None if observed is None else torch.as_tensor(np.asarray(observed)).bool()
    if given is not None and tuple(given.shape) != shape:
        raise ValueError(f"observed has shape {tuple(given.shape)} but X has {shape}")
    if x.dim() == 3:
        x, given = x.unsqueeze(1), None if given is None else given.unsqueeze(1)
    o = ~torch.isnan(x) if given is None else given & ~torch.isnan(x)
    if x.dim() == 4:
        seen = x[o]
        if seen.numel() and (seen.min() < 0 or seen.max() > 1):
            raise ValueError("images must hold values in [0, 1] (scale 8-bit images by 1/255)")
    return torch.where(o, x, 0), o, shape, is_numpy


class MIRIImputer(TransformerMixin, BaseEstimator):
    """MIRI rounds on images ((N, C, H, W) or (N, H, W) in [0, 1]) or a table ((N, d)), NaN =
    missing unless an ``observed`` mask is given. Parameters are named like the config keys
    (``miri.*``, ``optim.*``, ``model.*``); left at None they are chosen from the data's size.

    ``model``: ``unet_small``, ``unet_tiny``, ``unet``, ``paper_cnn``, ``paper_cnn_half`` for
    images (tables always use ``mlp``); ``block_out_channels``, ``layers_per_block``,
    ``interp_inputs``, ``interp_skip`` shape the U-Net. ``coupling``: ``fill`` (every training
    source a fresh fill of the partner view, as every draw of a new item starts; draws go
    through the last round's flow alone; docs/algorithm.md) or ``independent`` (the paper's
    sources, the store's own items; draws go through every round's flow in order); None: ``fill``
    for tables (with the paper's sources an MLP on a small table learns the store's one fill of
    each row, and fresh draws go astray) and ``independent`` for images. ``output_dir``: where the run is kept
    (None: a temporary directory, deleted when ``fit`` returns; the flows stay in memory). ``fit``
    never deletes a run it did not write: it refuses, with a ValueError, an ``output_dir`` that
    already holds a run (of ``miri-train``, a saved imputer, or the folder this estimator was
    :meth:`load`-ed from, whose parameters name it), as ``miri-train`` does; a second ``fit`` of
    the same estimator replaces the run its own first ``fit`` wrote there.

    Fitted attributes: ``flows_`` (the rounds' velocity fields, :class:`RunFlows`),
    ``item_shape_``, ``n_rounds_``, ``run_dir_`` (``output_dir``, or None), and for tables
    ``column_mean_``, ``column_std_`` (the observed entries' scaling)."""

    def __init__(
        self,
        rounds: int = 5,
        steps_per_round: int | None = None,
        batch_size: int = 64,
        ode_steps: int = 10,
        solver: str = "euler",
        init: str = "noise",
        init_noise: float = 0.0,
        init_noise_mode: str = "constant",
        sample_noise: float | None = None,
        reinit: bool = False,
        ema: float = 0.0,
        lr: float = 1e-3,
        schedule: str = "constant",
        loss_on: str = "missing",
        coupling: str | None = None,
        flip: bool = False,
        model: str = "unet_small",
        block_out_channels: tuple[int, ...] | None = None,
        layers_per_block: int = 1,
        interp_inputs: str = "none",
        interp_skip: bool = False,
        random_state: int = 0,
        output_dir: str | None = None,
        accelerator: str = "auto",
        progress_bar: bool = False,
    ):
        self.rounds = rounds
        self.steps_per_round = steps_per_round
        self.batch_size = batch_size
        self.ode_steps = ode_steps
        self.solver = solver
        self.init = init
        self.init_noise = init_noise
        self.init_noise_mode = init_noise_mode
        self.sample_noise = sample_noise
        self.reinit = reinit
        self.ema = ema
        self.lr = lr
        self.schedule = schedule
        self.loss_on = loss_on
        self.coupling = coupling
        self.flip = flip
        self.model = model
        self.block_out_channels = block_out_channels
        self.layers_per_block = layers_per_block
        self.interp_inputs = interp_inputs
        self.interp_skip = interp_skip
        self.random_state = random_state
        self.output_dir = output_dir
        self.accelerator = accelerator
        self.progress_bar = progress_bar

    # -- the config ----------------------------------------------------------------------

    def _overrides(self, shape: tuple[int, ...], output_dir: str) -> list[str]:
        n = shape[0]
        steps = self.steps_per_round or int(np.clip(10 * n // self.batch_size, 100, 1000))
        flag = lambda value: str(bool(value)).lower()  # noqa: E731
        common = [
            f"miri.rounds={self.rounds}",
            f"miri.steps_per_round={steps}",
            f"miri.batch_size={self.batch_size}",
            f"miri.ode_steps={self.ode_steps}",
            f"miri.solver={self.solver}",
            f"miri.init={self.init}",
            f"miri.init_noise={float(self.init_noise)}",
            f"miri.init_noise_mode={self.init_noise_mode}",
            f"miri.sample_noise={'null' if self.sample_noise is None else float(self.sample_noise)}",
            f"miri.reinit={flag(self.reinit)}",
            f"miri.ema={float(self.ema)}",
            f"miri.loss_on={self.loss_on}",
            f"miri.coupling={self.coupling or ('fill' if len(shape) == 2 else 'independent')}",
            f"optim.lr={float(self.lr)}",
            f"optim.schedule={self.schedule}",
            f"seed={self.random_state}",
            f"output_dir={output_dir}",
            "overwrite=true",
            f"trainer.accelerator={self.accelerator}",
            f"trainer.enable_progress_bar={flag(self.progress_bar)}",
            "trainer.enable_model_summary=false",
        ]
        if len(shape) == 2:
            return ["data=csv", "data.path=in-memory", f"data.dim={shape[1]}", "model=mlp", "mask=given", *common]
        channels, size = shape[1], shape[-1]
        if shape[-2] != size:
            raise ValueError(f"images must be square, got {shape[-2]}×{size}")
        images = [
            "data=array",
            "data.path=in-memory",
            f"data.image_size={size}",
            f"data.channels={channels}",
            "mask=given",
            f"model={self.model}",
            f"miri.flip={flag(self.flip)}",
        ]
        if self.model.startswith("unet"):
            widths = self.block_out_channels
            if widths is None:
                levels = 3 if size % 4 == 0 else (2 if size % 2 == 0 else 1)
                widths = (16, 32, 64)[:levels]
            images += [
                f"model.block_out_channels=[{','.join(str(int(w)) for w in widths)}]",
                f"model.attention=[{','.join('false' for _ in widths)}]",
                f"model.layers_per_block={self.layers_per_block}",
                f"model.interp_inputs={self.interp_inputs}",
                f"model.interp_skip={flag(self.interp_skip)}",
            ]
        return images + common

    # -- the estimator -------------------------------------------------------------------

    def fit(self, X, y=None, observed=None) -> "MIRIImputer":
        """Train MIRI rounds on X; NaN marks missing entries when no ``observed`` mask (True =
        observed) is given. ``y`` is ignored (scikit-learn's signature)."""
        from miri_lightning.run import train

        values, obs, _, _ = _as_items(X, observed)
        loaded, scaling = self._loaded(values, obs)
        if self.output_dir is not None:
            self._claim(Path(self.output_dir))
        with tempfile.TemporaryDirectory(prefix="miri-imputer-") as scratch:
            output_dir = self.output_dir if self.output_dir is not None else scratch
            with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
                cfg = compose("train", overrides=self._overrides(tuple(values.shape), str(output_dir)))
            run = train(cfg, source=_InMemory(loaded))
            self.flows_ = RunFlows(output_dir, "cuda" if torch.cuda.is_available() else "cpu")
        self.run_dir_ = Path(self.output_dir) if self.output_dir is not None else None
        self.item_shape_ = tuple(values.shape[1:])
        self.n_rounds_ = len(self.flows_.nets)
        if scaling is not None:
            self.column_mean_, self.column_std_ = scaling
        self._train_imputation = decode(run.datamodule.store.imputed).cpu()
        if self.run_dir_ is not None:
            self._write_params(self.run_dir_)
        return self

    def _claim(self, output_dir: Path) -> None:
        """Refuse ``output_dir`` if it holds a run that this estimator's own ``fit`` did not
        write (one of ``miri-train``, a saved imputer, the folder of :meth:`load`); else
        remember it as this estimator's, which a later ``fit`` may replace."""
        own = getattr(self, "_own_run_dir", None)
        found = holds_run(output_dir)
        if found is not None and own != output_dir.resolve():
            raise ValueError(
                f"output_dir {output_dir} already holds a run ({found}) that this estimator did not create, and "
                "fit would replace it: pass another output_dir (or None for a temporary one), or delete it first"
            )
        self._own_run_dir = output_dir.resolve()

    def _loaded(self, values: Tensor, observed: Tensor) -> tuple[LoadedImages, tuple[Tensor, Tensor] | None]:
        if values.dim() == 4:
            return LoadedImages(values, observed), None
        counts = observed.sum(0)
        if bool((counts == 0).any()):
            raise ValueError(f"columns {torch.nonzero(counts == 0).flatten().tolist()} have no observed value")
        mean = torch.where(observed, values, 0).sum(0) / counts
        std = (torch.where(observed, values - mean, 0).pow(2).sum(0) / counts).sqrt().clamp_min(1e-8)
        return LoadedImages(torch.where(observed, (values - mean) / std, 0), observed, clamp=None), (mean, std)

    def _output(self, x: Tensor, values: Tensor, observed: Tensor, shape: tuple[int, ...], is_numpy: bool):
        """Back to the caller's units and shape (``x``: (..., N, *item)); observed entries are
        the caller's own values, bit for bit."""
        if hasattr(self, "column_mean_"):
            x = torch.where(observed, values, x * self.column_std_ + self.column_mean_)
        x = x.reshape(*x.shape[: x.dim() - len(self.item_shape_) - 1], *shape)
        return x.numpy() if is_numpy else x

    def fit_transform(self, X, y=None, observed=None):
        """Fit, and return the imputed training set (its store after the last round), in X's
        shape (numpy for numpy input)."""
        self.fit(X, observed=observed)
        values, obs, shape, is_numpy = _as_items(X, observed)
        return self._output(self._train_imputation, values, obs, shape, is_numpy)

    def transform(self, X, observed=None, num_samples: int = 1):
        """Impute new items with every round's flow; ``num_samples`` > 1 gives K draws
        (K, *X.shape). Seeded by ``random_state``: the same call gives the same result."""
        check_is_fitted(self, "flows_")
        values, obs, shape, is_numpy = _as_items(X, observed)
        if tuple(values.shape[1:]) != self.item_shape_:
            raise ValueError(f"this imputer was fitted on items of shape {self.item_shape_}, got {shape[1:]}")
        scaled = values
        if hasattr(self, "column_mean_"):
            scaled = torch.where(obs, (values - self.column_mean_) / self.column_std_, 0)
        samples = self.flows_.sample(scaled, obs, num_samples, seed=self.random_state)
        return self._output(samples[0] if num_samples == 1 else samples, values, obs, shape, is_numpy)

    # -- persistence ---------------------------------------------------------------------

    def _write_params(self, path: Path) -> None:
        state = {"params": self.get_params(), "item_shape": list(self.item_shape_)}
        if hasattr(self, "column_mean_"):
            state["column_mean"], state["column_std"] = self.column_mean_.tolist(), self.column_std_.tolist()
        (path / PARAMS_FILE).write_text(json.dumps(state, indent=1))

    def save(self, path: str | Path) -> Path:
        """Write what ``transform`` needs (config, every round's flow, the parameters) to
        folder ``path``."""
        check_is_fitted(self, "flows_")
        path = self.flows_.save(path)
        self._write_params(path)
        return path

    @classmethod
    def load(cls, path: str | Path, **params) -> "MIRIImputer":
        """The imputer saved in ``path`` (its parameters restored; ``params`` override them,
        e.g. ``random_state``), or one that transforms with a run directory of ``miri-train``."""
        path = Path(path)
        state_file = path / PARAMS_FILE
        state = json.loads(state_file.read_text()) if state_file.is_file() else {}
        saved = state.get("params", {})
        if isinstance(saved.get("block_out_channels"), list):
            saved["block_out_channels"] = tuple(saved["block_out_channels"])
        imputer = cls(**{**saved, **params})
        imputer.flows_ = RunFlows(path, "cuda" if torch.cuda.is_available() else "cpu", imputer.sample_noise)
        imputer.run_dir_ = path
        imputer.item_shape_ = tuple(state.get("item_shape", imputer.flows_.item_shape))
        imputer.n_rounds_ = len(imputer.flows_.nets)
        if "column_mean" in state:
            imputer.column_mean_ = torch.tensor(state["column_mean"])
            imputer.column_std_ = torch.tensor(state["column_std"])
        return imputer
