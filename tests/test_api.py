"""The Python API: MIRIImputer on a small NaN array."""

import numpy as np
import pytest

from miri_lightning import MIRIImputer
from miri_lightning.data.sample import sample_images


def nan_crops(n, seed):
    x = sample_images(n, 16, seed=seed).numpy().astype(np.float32) / 255
    holes = np.random.default_rng(seed).random((n, 1, 16, 16)) < 0.4
    return np.where(holes, np.nan, x).astype(np.float32), np.broadcast_to(~holes, x.shape)


def test_fit_transform_save_load(tmp_path):
    X, observed = nan_crops(24, seed=0)
    imputer = MIRIImputer(rounds=2, steps_per_round=10, batch_size=8, ode_steps=3, random_state=1,
                          output_dir=str(tmp_path / "run"))  # fmt: skip
    filled = imputer.fit_transform(X)
    assert isinstance(filled, np.ndarray) and filled.shape == X.shape and not np.isnan(filled).any()
    assert np.array_equal(filled[observed], X[observed])
    assert ((filled >= 0) & (filled <= 1)).all()

    X_new, observed_new = nan_crops(6, seed=5)
    once, again = imputer.transform(X_new), imputer.transform(X_new)
    assert np.array_equal(once, again) and np.array_equal(once[observed_new], X_new[observed_new])
    draws = imputer.transform(X_new, num_samples=3)
    assert draws.shape == (3, *X_new.shape)
    assert not np.array_equal(draws[0][~observed_new], draws[1][~observed_new])

    imputer.save(tmp_path / "saved")
    loaded = MIRIImputer.load(tmp_path / "saved", random_state=1)
    assert np.array_equal(loaded.transform(X_new), once)


def test_api_errors_say_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="not fitted"):
        MIRIImputer().transform(np.zeros((1, 3, 16, 16)))
    with pytest.raises(ValueError, match="N×C×H×W"):
        MIRIImputer().fit(np.zeros((3, 16, 16)))
    with pytest.raises(ValueError, match="holds no flows"):
        MIRIImputer.load(tmp_path)
