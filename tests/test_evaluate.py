"""scripts/evaluate.py on a tiny finished run."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from miri_lightning.data.store import decode
from miri_lightning.evaluation import COLUMNS

ROOT = Path(__file__).resolve().parents[1]


def test_evaluate_writes_the_table_for_miri_and_the_baselines(tiny_run, tiny_run_copy, tmp_path):
    run, out = tiny_run, tiny_run_copy  # evaluate writes into the run directory: a copy
    result = subprocess.run(
        [sys.executable, "scripts/evaluate.py", f"output_dir={out}", "per_round=true", "mmd_items=40"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TORCH_HOME": str(tmp_path / "no-weights")},
    )
    assert result.returncode == 0, result.stderr
    assert "FID skipped" in result.stdout and "weights-inception-2015-12-05-6726825d.pth" in result.stdout
    assert "| method | round | FID | PSNR missing (dB) |" in result.stdout

    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0].keys()) == COLUMNS
    assert [(r["method"], r["round"]) for r in rows] == [
        ("miri", "1"),
        ("miri", "2"),
        ("mean", ""),
        ("nearest", ""),
        ("biharmonic", ""),
    ]
    assert all(r["fid"] == "" for r in rows)  # skipped, not invented
    # each baseline is timed on its own: scikit-image's biharmonic inpainting is slower than a mean
    seconds = {r["method"]: float(r["seconds"]) for r in rows[2:]}
    assert seconds["biharmonic"] > seconds["mean"] > 0, seconds
    table = (out / "metrics.md").read_text().splitlines()
    assert len(table) == 2 + len(rows)

    # the numbers are those of an independent computation (numpy, not the project's metrics) on
    # the same data and masks: PSNR pooled over every missing entry, data range 1
    truth = decode(run.datamodule.store.truth).numpy().astype(np.float64)
    snapshot = load_file(out / "imputed" / "round_002.safetensors")
    observed = snapshot["observed"].numpy()

    def psnr(x):
        return -10 * np.log10(np.mean((x - truth)[~observed] ** 2))

    assert float(rows[1]["psnr_missing"]) == pytest.approx(psnr(snapshot["imputed"].numpy()), rel=1e-5)
    # the mean fill: each channel's mean over the observed entries of the whole set
    means = [truth[:, c][observed[:, c]].mean() for c in range(truth.shape[1])]
    mean_filled = np.where(observed, truth, np.array(means)[None, :, None, None])
    assert float(rows[2]["psnr_missing"]) == pytest.approx(psnr(mean_filled), rel=1e-5)
    assert float(rows[4]["psnr_missing"]) > float(rows[2]["psnr_missing"])  # biharmonic beats the mean

    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    assert "evaluation/table/text_summary" in events.Tags()["tensors"]


def test_evaluate_refuses_a_folder_that_is_not_a_run(tmp_path):
    from miri_lightning.evaluation import evaluate

    with pytest.raises(ValueError, match="no imputed/round_XXX.safetensors"):
        evaluate(tmp_path)


def test_miri_export_refuses_a_folder_that_is_not_a_run_in_one_line(tmp_path):
    # a real process: Hydra's entry point reconfigures logging, which must not touch this one
    result = subprocess.run(
        [sys.executable, "scripts/export.py", f"output_dir={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr
