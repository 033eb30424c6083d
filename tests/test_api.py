"""The Python API: MIRIImputer as a scikit-learn estimator, on small NaN arrays."""

import json

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from miri_lightning import MIRIImputer, flow
from miri_lightning.data.sample import sample_images


def nan_crops(n, seed, size=16):
    x = sample_images(n, size, seed=seed).numpy().astype(np.float32) / 255
    holes = np.random.default_rng(seed).random((n, 1, size, size)) < 0.4
    return np.where(holes, np.nan, x).astype(np.float32), np.broadcast_to(~holes, x.shape), x


def psnr_missing(a, truth, observed):
    mse = float(((a - truth)[~observed] ** 2).mean())
    return 10 * np.log10(1 / mse)


def test_fit_transform_save_load_and_the_flows_do_the_work(tmp_path):
    X, observed, _ = nan_crops(32, seed=0)
    imputer = MIRIImputer(rounds=2, steps_per_round=40, batch_size=16, ode_steps=3, random_state=1,
                          output_dir=str(tmp_path / "run"))  # fmt: skip
    filled = imputer.fit_transform(X)
    assert isinstance(filled, np.ndarray) and filled.shape == X.shape and not np.isnan(filled).any()
    assert np.array_equal(filled[observed], X[observed])
    assert ((filled >= 0) & (filled <= 1)).all()
    assert imputer.n_rounds_ == 2 and imputer.item_shape_ == (3, 16, 16)

    X_new, observed_new, truth_new = nan_crops(8, seed=5)
    once, again = imputer.transform(X_new), imputer.transform(X_new)
    assert np.array_equal(once, again) and np.array_equal(once[observed_new], X_new[observed_new])
    # the same seeded U[0, 1] fill, with no flow applied: the flows must carry it towards the truth
    values, mask = torch.from_numpy(np.nan_to_num(X_new)), torch.from_numpy(observed_new.copy())
    fill = flow.initial_fill(values, mask, "noise", torch.Generator().manual_seed(1)).numpy()
    assert psnr_missing(once, truth_new, observed_new) > psnr_missing(fill, truth_new, observed_new) + 1.0
    draws = imputer.transform(X_new, num_samples=3)
    assert draws.shape == (3, *X_new.shape)
    assert not np.array_equal(draws[0][~observed_new], draws[1][~observed_new])

    imputer.save(tmp_path / "saved")
    loaded = MIRIImputer.load(tmp_path / "saved")
    assert loaded.get_params() == imputer.get_params()  # every parameter, not only the seed
    assert np.array_equal(loaded.transform(X_new), once)
    assert MIRIImputer.load(tmp_path / "saved", random_state=7).random_state == 7


def test_sklearn_conventions_clone_params_pipeline(tmp_path, monkeypatch):
    imputer = MIRIImputer(rounds=1, steps_per_round=5, batch_size=8, ode_steps=2, ema=0.9, init="biharmonic",
                          init_noise=0.6, init_noise_mode="local", sample_noise=0.9, interp_inputs="biharmonic",
                          interp_skip=True)  # fmt: skip
    params = imputer.get_params()
    assert params["ema"] == 0.9 and params["interp_skip"] is True and params["sample_noise"] == 0.9
    twin = clone(imputer)
    assert twin is not imputer and twin.get_params() == params
    assert imputer.set_params(rounds=3) is imputer and imputer.rounds == 3
    with pytest.raises(NotFittedError):
        MIRIImputer().transform(np.zeros((1, 3, 16, 16)))
    # no output_dir: nothing is left in the temporary directory
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    X, observed, _ = nan_crops(16, seed=2)
    pipeline = Pipeline([("impute", twin), ("flatten", FunctionTransformer(lambda a: a.reshape(len(a), -1)))])
    out = pipeline.fit_transform(X)
    assert out.shape == (16, 3 * 16 * 16) and not np.isnan(out).any()
    assert list(tmp_path.iterdir()) == []
    assert twin.run_dir_ is None and pipeline.named_steps["impute"].n_rounds_ == 1
    # the recipe's options reached the run: the fill is biharmonic + local noise, the flows are
    # U-Nets that see the interpolation
    assert twin.flows_.init == "biharmonic" and twin.flows_.sample_noise == 0.9
    assert twin.flows_.noise_mode == "local"
    assert twin.flows_.specs[0]["interp_inputs"] == "biharmonic" and twin.flows_.specs[0]["interp_skip"] is True


def test_grayscale_images_without_channel_axis_and_tables(tmp_path):
    X, observed, _ = nan_crops(16, seed=3)
    gray = X[:, 0]  # (N, H, W)
    imputer = MIRIImputer(rounds=1, steps_per_round=5, batch_size=8, ode_steps=2).fit(gray)
    assert imputer.item_shape_ == (1, 16, 16)
    out = imputer.transform(gray[:4])
    assert out.shape == (4, 16, 16) and np.array_equal(out[~np.isnan(gray[:4])], gray[:4][~np.isnan(gray[:4])])

    rng = np.random.default_rng(0)
    table = rng.normal([100.0, -5.0, 0.0], [10.0, 1.0, 0.1], size=(64, 3)).astype(np.float32)
    holes = rng.random(table.shape) < 0.3
    holes[:, 0] &= np.arange(64) % 2 == 0  # keep every column observed somewhere
    X_table = np.where(holes, np.nan, table)
    tables = MIRIImputer(rounds=1, steps_per_round=20, batch_size=16, ode_steps=2, output_dir=str(tmp_path / "t"))
    filled = tables.fit_transform(X_table)
    assert filled.shape == (64, 3) and np.array_equal(filled[~holes], table[~holes])
    # filled in original units, near each column's own scale (not standardised values)
    assert abs(filled[holes[:, 0], 0].mean() - 100) < 15
    new = tables.transform(X_table[:5])
    assert new.shape == (5, 3) and np.array_equal(new[~holes[:5]], table[:5][~holes[:5]])
    state = json.loads((tmp_path / "t" / "imputer.json").read_text())
    assert len(state["column_mean"]) == 3
    assert np.allclose(MIRIImputer.load(tmp_path / "t").transform(X_table[:5]), new)


def test_api_errors_say_what_to_do(tmp_path):
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        MIRIImputer().fit(np.zeros((3,)))
    with pytest.raises(ValueError, match="holds no flows"):
        MIRIImputer.load(tmp_path)
