"""scripts/quality.py: a tiny recipe against the baselines, one table."""

import csv
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT, TINY
from safetensors.torch import load_file
from skimage.restoration import inpaint_biharmonic

from miri_lightning.data.sample import sample_images
from miri_lightning.data.store import decode
from miri_lightning.inference import RunFlows
from miri_lightning.quality import NEEDS_K, columns, compare, markdown


def psnr_missing(x: np.ndarray, truth: np.ndarray, missing: np.ndarray) -> float:
    return float(-10 * np.log10(((x - truth)[missing] ** 2).mean()))


def test_quality_writes_one_row_per_method_and_baselines_match_an_independent_computation(tmp_path):
    out = tmp_path / "run"
    result = subprocess.run(
        [
            sys.executable,
            "scripts/quality.py",
            *TINY,
            "miri.rounds=2",
            "quality.per_round=true",  # and the draws had the run stopped after round 1
            "data.n=32",  # scikit-image's biharmonic inpainting, here and below, is per item
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
    header = "| method | psnr_missing | ssim | mmd | swd | swd_16 | swd_8 | crps | energy_score | spread_skill | fid |"
    assert header in result.stdout  # 16×16 crops: two pyramid levels
    assert NEEDS_K not in result.stdout
    with open(out / "quality.csv") as f:
        rows = {row["method"]: row for row in csv.DictReader(f)}
        f.seek(0)
        assert next(csv.reader(f)) == columns([{"method": "", "swd_16": 0, "swd_8": 0}])
    methods = ["mean", "harmonic", "biharmonic", "initial_fill", "initial_fill_mean_3", "miri_sample", "miri_mean_3"]
    assert list(rows) == [*methods, "miri_round_1", "miri_round_1_mean_3"]
    # round 1's draws (through round 1's flow) are not round 2's, scored the same way
    assert rows["miri_round_1"]["psnr_missing"] != rows["miri_sample"]["psnr_missing"]
    assert float(rows["miri_round_1"]["crps"]) > 0 and rows["miri_round_1_mean_3"]["crps"] != ""
    assert all(row["fid"] == "" for row in rows.values())  # metrics.fid=false: left empty, not invented
    assert rows["initial_fill"]["seconds"] == rows["initial_fill_mean_3"]["seconds"] == ""  # drawn outside the timing
    assert all(float(row["seconds"]) > 0 for name, row in rows.items() if name in methods and "fill" not in name)
    # MIRI's seconds: training plus the draws it needs; the mean of 3 adds exactly the time of
    # draws 2 and 3 that the run printed (rounded to 0.1 s)
    printed = [float(s) for s in re.findall(r"sample \d/3 of \d+ items .*: ([\d.]+) s", result.stdout)][:3]
    assert len(printed) == 3, result.stdout
    extra = float(rows["miri_mean_3"]["seconds"]) - float(rows["miri_sample"]["seconds"])
    assert extra == pytest.approx(printed[2] - printed[0], abs=0.11)
    assert float(rows["miri_sample"]["seconds"]) - printed[0] > 1.0  # training is included

    # the baselines, recomputed here from the run's own masks with numpy and scikit-image
    truth = decode(sample_images(32, 16, 0)).numpy().astype(np.float64)
    observed = load_file(out / "imputed" / "round_001.safetensors")["observed"].numpy()
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
    # a point method's CRPS is its MAE; the K = 3 draws have a spread, their mean does not
    assert float(rows["biharmonic"]["crps"]) == pytest.approx(
        float(np.abs(biharmonic.clip(0, 1) - truth)[missing].mean()), rel=1e-3
    )
    # and its energy score the mean Euclidean error of the 5×5 windows (all channels) that hold a
    # missing pixel, on a grid of non-overlapping windows (16×16 crops: 3×3 of them)
    errors = [
        np.linalg.norm((biharmonic.clip(0, 1) - truth)[n, :, 5 * i : 5 * i + 5, 5 * j : 5 * j + 5])
        for n in range(len(truth))
        for i in range(3)
        for j in range(3)
        if missing[n, :, 5 * i : 5 * i + 5, 5 * j : 5 * j + 5].any()
    ]
    assert float(rows["biharmonic"]["energy_score"]) == pytest.approx(np.mean(errors), rel=1e-3)
    assert float(rows["miri_sample"]["energy_score"]) > 0 and rows["miri_mean_3"]["spread_skill"] == ""
    assert float(rows["miri_sample"]["spread_skill"]) > 0
    assert rows["miri_mean_3"]["spread_skill"] == "" and rows["biharmonic"]["spread_skill"] == ""
    assert all(float(row["swd"]) > 0 for row in rows.values())
    # the initial fill's row scores the fills the draws start from: quality.seed's first draw of
    # the run's fill with its sample noise (interpolation + local noise at the training noise,
    # the default's draws), not a flow's output
    flows = RunFlows(out)
    x, o = torch.from_numpy(truth).float(), torch.from_numpy(observed)
    fill = flows.initial_fill(torch.where(o, x, 0), o, torch.Generator().manual_seed(1))
    expected = psnr_missing(fill.double().numpy(), truth, missing)
    assert float(rows["initial_fill"]["psnr_missing"]) == pytest.approx(expected, abs=1e-3)
    assert abs(float(rows["initial_fill"]["psnr_missing"]) - float(rows["miri_sample"]["psnr_missing"])) > 0.01
    assert float(rows["initial_fill"]["spread_skill"]) > 0

    # the README's picture from the same run: 8 rows of 2 images, and the scores under it
    picture = tmp_path / "docs" / "draws.png"
    made = subprocess.run(
        [
            sys.executable,
            "scripts/figure.py",
            str(out),
            "--images",
            "2",
            "--samples",
            "3",
            "--scale",
            "2",
            "--out",
            str(picture),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert made.returncode == 0, made.stderr
    from PIL import Image

    width, height = Image.open(picture).size
    assert height == 18 + 8 * (16 * 2 + 2) - 2 and width == 96 + 2 * (16 * 2 + 2) - 2
    table = picture.with_suffix(".md").read_text()
    assert "| biharmonic | " in table and "| MIRI | " in table and "| PSNR, mean of 3 (dB) |" in table
    assert "| the fill alone, no flow | " in table


def test_quality_rows_score_the_k_draws_and_leave_their_scores_empty_for_one_draw():
    truth = decode(sample_images(40, 16, 0))
    observed = torch.rand(truth.shape, generator=torch.Generator().manual_seed(0)) > 0.5
    g = torch.Generator().manual_seed(1)
    draws = torch.stack([torch.where(observed, truth, torch.rand(truth.shape, generator=g)) for _ in range(4)])
    rows = {r["method"]: r for r in compare(truth, observed, draws, (1.0, 2.0), ("mean",), mmd_items=20)}
    assert list(rows) == ["mean", "miri_sample", "miri_mean_4"]
    # uniform draws, independent of the truth: the fair CRPS of U[0, 1] is E|U - y| - 1/6
    y = truth[~observed]
    expected = ((y**2 + (1 - y) ** 2) / 2 - 1 / 6).mean().item()
    assert rows["miri_sample"]["crps"] == pytest.approx(expected, abs=0.01)
    assert rows["miri_mean_4"]["crps"] == pytest.approx(
        (draws.mean(0) - truth)[~observed].abs().mean().item(), rel=1e-5
    )
    assert rows["miri_sample"]["spread_skill"] > 0.5  # spread as wide as the error: not collapsed
    assert NEEDS_K not in markdown(list(rows.values()))

    one = {r["method"]: r for r in compare(truth, observed, draws[:1], (1.0, 1.0), ("mean",), mmd_items=20)}
    assert list(one) == ["mean", "miri_sample"]
    assert one["miri_sample"]["crps"] is None and one["miri_sample"]["spread_skill"] is None
    assert one["mean"]["crps"] is not None  # the baselines' CRPS (their MAE) needs no draws
    assert NEEDS_K in markdown(list(one.values()))
