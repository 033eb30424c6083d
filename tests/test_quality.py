"""scripts/quality.py: a tiny recipe against the baselines, one table."""

import csv
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, TINY
from safetensors.torch import load_file
from skimage.restoration import inpaint_biharmonic

from miri_lightning.data.sample import sample_images
from miri_lightning.data.store import decode
from miri_lightning.quality import COLUMNS


def psnr_missing(x: np.ndarray, truth: np.ndarray, missing: np.ndarray) -> float:
    return float(-10 * np.log10(((x - truth)[missing] ** 2).mean()))


def test_quality_writes_one_row_per_method_and_baselines_match_an_independent_computation(tmp_path):
    out = tmp_path / "run"
    result = subprocess.run(
        [
            sys.executable,
            "scripts/quality.py",
            *TINY,
            "miri.init=interp",
            "miri.init_noise=0.05",
            "quality.samples=3",
            "metrics.mmd_items=40",
            f"output_dir={out}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert "| method | psnr_missing | ssim | mmd | fid | seconds |" in result.stdout
    with open(out / "quality.csv") as f:
        rows = {row["method"]: row for row in csv.DictReader(f)}
        f.seek(0)
        assert tuple(next(csv.reader(f))) == COLUMNS
    assert list(rows) == ["mean", "harmonic", "biharmonic", "miri_sample", "miri_mean_3"]
    assert all(row["fid"] == "" for row in rows.values())  # metrics.fid=false: left empty, not invented
    assert all(float(row["seconds"]) > 0 for row in rows.values())
    # MIRI's seconds: training plus the draws it needs; the mean of 3 adds exactly the time of
    # draws 2 and 3 that the run printed (rounded to 0.1 s)
    printed = [float(s) for s in re.findall(r"sample \d/3 of \d+ items .*: ([\d.]+) s", result.stdout)]
    assert len(printed) == 3, result.stdout
    extra = float(rows["miri_mean_3"]["seconds"]) - float(rows["miri_sample"]["seconds"])
    assert extra == pytest.approx(printed[2] - printed[0], abs=0.11)
    assert float(rows["miri_sample"]["seconds"]) - printed[0] > 1.0  # training is included

    # the baselines, recomputed here from the run's own masks with numpy and scikit-image
    truth = decode(sample_images(64, 16, 0)).numpy().astype(np.float64)
    observed = load_file(out / "imputed" / "round_002.safetensors")["observed"].numpy()
    missing = ~observed
    mean = truth.copy()
    for c in range(3):
        mean[:, c][missing[:, c]] = truth[:, c][observed[:, c]].mean()
    assert float(rows["mean"]["psnr_missing"]) == pytest.approx(psnr_missing(mean, truth, missing), abs=1e-3)
    biharmonic = np.stack(
        [
            np.moveaxis(inpaint_biharmonic(np.moveaxis(img * obs, 0, -1), ~obs[0], channel_axis=-1), -1, 0)
            for img, obs in zip(truth, observed, strict=True)
        ]
    )
    expected = psnr_missing(np.clip(biharmonic, 0, 1), truth, missing)
    assert float(rows["biharmonic"]["psnr_missing"]) == pytest.approx(expected, abs=1e-3)
    assert float(rows["biharmonic"]["psnr_missing"]) > float(rows["mean"]["psnr_missing"])
    # averaging K samples cuts the sampling variance: the mean's PSNR beats one sample's
    assert float(rows["miri_mean_3"]["psnr_missing"]) > float(rows["miri_sample"]["psnr_missing"])
