"""A scikit-learn-like imputer for people who do not want Hydra, on the same machinery:

    from miri_lightning import MIRIImputer
    imputer = MIRIImputer(rounds=5, random_state=0).fit(X)        # X: N×C×H×W, NaN = missing
    X_filled = imputer.fit_transform(X)                              # the imputed training set
    X_new_filled = imputer.transform(X_new)                          # new images, every round's flow
    imputer.save("my_imputer"); MIRIImputer.load("my_imputer").transform(X_new)

It composes ``configs/train.yaml`` with the keyword arguments as overrides and trains with the
same Lightning module, DataModule and MIRI callback as ``python train.py``.
"""

import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from torch import Tensor

from miri_lightning.data.sources import LoadedImages
from miri_lightning.data.store import decode
from miri_lightning.inference import RunFlows

CONFIGS = Path(__file__).resolve().parent / "configs"


class _InMemory:
    def __init__(self, values: Tensor, observed: Tensor):
        self.loaded = LoadedImages(values, observed)

    def load(self) -> LoadedImages:
        return self.loaded


def _as_images(X, observed) -> tuple[Tensor, Tensor, bool]:
    """(values with 0 where missing, observed bool, whether X was numpy)."""
    is_numpy = isinstance(X, np.ndarray)
    x = torch.as_tensor(np.asarray(X) if is_numpy else X).float()
    if x.dim() != 4:
        raise ValueError(f"X must be N×C×H×W images, got shape {tuple(x.shape)}")
    o = ~torch.isnan(x) if observed is None else torch.as_tensor(np.asarray(observed)).bool() & ~torch.isnan(x)
    if o.shape != x.shape:
        raise ValueError(f"observed has shape {tuple(o.shape)} but X has {tuple(x.shape)}")
    seen = x[o]
    if seen.numel() and (seen.min() < 0 or seen.max() > 1):
        raise ValueError("X must hold values in [0, 1] (scale 8-bit images by 1/255)")
    return torch.where(o, x, 0), o, is_numpy


class MIRIImputer:
    """MIRI rounds on an array or tensor of images. Keyword arguments are named like the
    config keys; left at None they are chosen from the data's size."""

    def __init__(
        self,
        rounds: int = 5,
        steps_per_round: int | None = None,
        batch_size: int = 64,
        ode_steps: int = 10,
        solver: str = "euler",
        init: str = "noise",
        reinit: bool = False,
        lr: float = 1e-3,
        block_out_channels: tuple[int, ...] | None = None,
        layers_per_block: int = 1,
        random_state: int = 0,
        output_dir: str | None = None,
        accelerator: str = "auto",
        progress_bar: bool = False,
    ):
        self.params = dict(locals())
        self.params.pop("self")
        self.run_dir: Path | None = None
        self._flows: RunFlows | None = None

    def _overrides(self, n: int, channels: int, size: int, output_dir: str) -> list[str]:
        p = self.params
        steps = p["steps_per_round"] or int(np.clip(10 * n // p["batch_size"], 100, 1000))
        widths = p["block_out_channels"]
        if widths is None:
            levels = 3 if size % 4 == 0 else (2 if size % 2 == 0 else 1)
            widths = (16, 32, 64)[:levels]
        return [
            "data=array",
            "data.path=in-memory",
            f"data.image_size={size}",
            f"data.channels={channels}",
            "mask=given",
            "model=unet_small",
            f"model.block_out_channels=[{','.join(str(w) for w in widths)}]",
            f"model.attention=[{','.join('false' for _ in widths)}]",
            f"model.layers_per_block={p['layers_per_block']}",
            f"miri.rounds={p['rounds']}",
            f"miri.steps_per_round={steps}",
            f"miri.batch_size={p['batch_size']}",
            f"miri.ode_steps={p['ode_steps']}",
            f"miri.solver={p['solver']}",
            f"miri.init={p['init']}",
            f"miri.reinit={str(p['reinit']).lower()}",
            f"optim.lr={p['lr']}",
            f"seed={p['random_state']}",
            f"output_dir={output_dir}",
            "overwrite=true",
            f"trainer.accelerator={p['accelerator']}",
            f"trainer.enable_progress_bar={str(p['progress_bar']).lower()}",
            "trainer.enable_model_summary=false",
        ]

    def fit(self, X, observed=None) -> "MIRIImputer":
        """Train MIRI rounds on X (N, C, H, W) in [0, 1]; NaN marks missing entries when no
        ``observed`` mask (True = observed) is given."""
        from miri_lightning.run import train

        values, obs, _ = _as_images(X, observed)
        output_dir = self.params["output_dir"] or tempfile.mkdtemp(prefix="miri-imputer-")
        with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
            cfg = compose("train", overrides=self._overrides(*values.shape[:2], values.shape[-1], output_dir))
        run = train(cfg, source=_InMemory(values, obs))
        self.run_dir = Path(output_dir)
        self._flows = None
        self._fitted = decode(run.datamodule.store.imputed)
        return self

    def fit_transform(self, X, observed=None):
        """Fit, and return the imputed training set (numpy for numpy input)."""
        self.fit(X, observed)
        return self._fitted.numpy() if isinstance(X, np.ndarray) else self._fitted

    def transform(self, X, observed=None, num_samples: int = 1):
        """Impute new images with every round's flow; ``num_samples`` > 1 gives K draws
        (K, N, C, H, W). Seeded by ``random_state``: the same call gives the same result."""
        if self.run_dir is None:
            raise ValueError("this MIRIImputer is not fitted: call fit or load first")
        if self._flows is None:
            self._flows = RunFlows(self.run_dir, "cuda" if torch.cuda.is_available() else "cpu")
        values, obs, is_numpy = _as_images(X, observed)
        samples = self._flows.sample(values, obs, num_samples, seed=self.params["random_state"])
        out = samples[0] if num_samples == 1 else samples
        return out.numpy() if is_numpy else out

    def save(self, path: str | Path) -> Path:
        """Copy what ``transform`` needs (config and every round's flow) to folder ``path``."""
        if self.run_dir is None:
            raise ValueError("this MIRIImputer is not fitted: nothing to save")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        shutil.copy2(self.run_dir / "config.yaml", path / "config.yaml")
        shutil.copytree(self.run_dir / "flows", path / "flows", dirs_exist_ok=True)
        return path

    @classmethod
    def load(cls, path: str | Path, random_state: int = 0) -> "MIRIImputer":
        """An imputer that transforms with the flows saved in ``path`` (or a run directory)."""
        imputer = cls(random_state=random_state)
        imputer.run_dir = Path(path)
        RunFlows(imputer.run_dir)  # fail now, with the folder named, if it holds no flows
        return imputer
