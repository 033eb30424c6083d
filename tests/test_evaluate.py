"""scripts/evaluate.py on a tiny finished run."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from miri_lightning import metrics
from miri_lightning.baselines import mean_fill
from miri_lightning.data.store import decode
from miri_lightning.evaluation import COLUMNS
from miri_lightning.run import train

ROOT = Path(__file__).resolve().parents[1]


def test_evaluate_writes_the_table_for_miri_and_the_baselines(tiny_config, tmp_path):
    run = train(tiny_config("miri.rounds=2"))
    out = run.output_dir
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
    # each baseline is timed on its own: scikit-image's biharmonic inpainting is far slower than a mean
    seconds = {r["method"]: float(r["seconds"]) for r in rows[2:]}
    assert seconds["biharmonic"] > 5 * seconds["mean"] > 0, seconds
    table = (out / "metrics.md").read_text().splitlines()
    assert len(table) == 2 + len(rows)

    # the numbers are those of an independent computation on the same data and masks
    store = run.datamodule.store
    truth = decode(store.truth)
    snapshot = load_file(out / "imputed" / "round_002.safetensors")
    assert float(rows[1]["psnr_missing"]) == pytest.approx(
        metrics.psnr_missing(snapshot["imputed"], truth, store.observed).item(), rel=1e-5
    )
    expected_mean = metrics.psnr_missing(mean_fill(truth, store.observed), truth, store.observed)
    assert float(rows[2]["psnr_missing"]) == pytest.approx(expected_mean.item(), rel=1e-5)
    assert float(rows[4]["psnr_missing"]) > float(rows[2]["psnr_missing"])  # biharmonic beats the mean

    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    assert "evaluation/table/text_summary" in events.Tags()["tensors"]


def test_evaluate_refuses_a_folder_that_is_not_a_run(tmp_path):
    from miri_lightning.evaluation import evaluate

    with pytest.raises(ValueError, match="no imputed/round_XXX.safetensors"):
        evaluate(tmp_path)
