"""scripts/samplers.py on the session's tiny run: solver and noise rows, and --held-out, which
chooses a draw-time setting without reading any missing entry's truth."""

import runpy
import sys
from pathlib import Path

import torch

from miri_lightning import evaluation

SCRIPT = Path(__file__).parents[1] / "scripts" / "samplers.py"


def run_samplers(monkeypatch, capsys, *args) -> str:
    monkeypatch.setattr(sys, "argv", ["samplers.py", *map(str, args)])
    runpy.run_path(str(SCRIPT), run_name="__main__")
    return capsys.readouterr().out


def test_samplers_score_each_solver_and_noise(tiny_run, monkeypatch, capsys, tmp_path):
    out = tmp_path / "samplers.md"
    noises = tmp_path / "noises.md"
    run_samplers(
        monkeypatch,
        capsys,
        tiny_run.output_dir,
        "euler:2",
        "heun:1",
        "--samples",
        2,
        "--noise",
        0,
        0.5,
        "--out",
        noises,
    )
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in noises.read_text().splitlines()[2:]]
    assert [(r[0], r[2]) for r in rows] == [
        ("euler × 2", "0.0000"),
        ("heun × 1", "0.0000"),
        ("euler × 2", "0.5000"),
        ("heun × 1", "0.5000"),
    ]
    assert rows[0][5] != rows[2][5]  # the draw noise changes the draws' spread–skill
    printed = run_samplers(monkeypatch, capsys, tiny_run.output_dir, "euler:2", "--samples", 2, "--out", out)
    table = out.read_text().splitlines()
    assert table[0].startswith("| sampler | nfe | noise | crps") and "swd_one" in table[0]
    assert len(table) == 3 and "euler × 2 | 2 |" in table[2] and table[2] in printed


def test_held_out_scores_hidden_observed_pixels_without_the_missing_truth(tiny_run, monkeypatch, capsys, tmp_path):
    load_truth = evaluation.load_truth

    def missing_unknown(run_dir):  # the truth with NaN on every missing entry
        from safetensors.torch import load_file

        from miri_lightning.snapshots import snapshot_files

        observed = load_file(snapshot_files(run_dir)[-1][1])["observed"].bool()
        return torch.where(observed, load_truth(run_dir), float("nan"))

    monkeypatch.setattr(evaluation, "load_truth", missing_unknown)
    held_out, missing = tmp_path / "held_out.md", tmp_path / "missing.md"
    common = (tiny_run.output_dir, "heun:1", "--samples", 2)
    run_samplers(monkeypatch, capsys, *common, "--held-out", 0.3, "--out", held_out)
    run_samplers(monkeypatch, capsys, *common, "--out", missing)
    cells = lambda path: [c.strip() for c in path.read_text().splitlines()[2].split("|")[1:-1]]  # noqa: E731
    assert all(cells(held_out)) and "swd_one" not in held_out.read_text()  # scored on observed data only
    assert cells(missing)[3] == ""  # NaN (shown blank): the missing entries' CRPS read their truth
